// SPDX-License-Identifier: Apache-2.0
// The CUDA runtime calls the CUDA device (src/exec/cuda.cpp) needs, as plain functions: defined
// by the nvcc-compiled src/reduce/cuda.cu, which alone includes CUDA headers, and by
// src/reduce/cuda_stub.cpp in a build without CUDA. Streams are cudaStream_t passed as void*.
// Every function that can fail throws ringlet::Error (transport, or invalid_argument for a bad
// argument) with the runtime's message.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "include/ringlet/ringlet.hpp"

namespace ringlet::cuda_api {

// Whether the build has CUDA.
bool built() noexcept;
// The number of devices, 0 on any error; `why` receives the runtime's message then.
int device_count(std::string* why) noexcept;
void set_device(int ordinal);
void* stream_create();
void stream_destroy(void* stream) noexcept;
void copy_async(void* dst, const void* src, std::size_t bytes, void* stream);
// out[i] = op(a[i], b[i]) (out may equal a): vector loads where the pointers allow.
void reduce3_async(void* out, const void* a, const void* b, std::size_t n, DataType type,
                   ReduceOp op, void* stream);
void scale_async(void* data, std::size_t n, DataType type, int divisor, void* stream);
void stream_synchronize(void* stream);
std::uint32_t* flags_alloc(std::size_t n);
void flags_free(std::uint32_t* flags) noexcept;
// cuStreamWriteValue32 / cuStreamWaitValue32 (>=) on mapped host memory, through the driver's
// entry points (cudaGetDriverEntryPoint); one-thread kernels where the driver lacks them.
void write_flag(void* stream, std::uint32_t* flag, std::uint32_t value);
void wait_flag(void* stream, std::uint32_t* flag, std::uint32_t value);
void* host_alloc(std::size_t bytes);
void host_free(void* p) noexcept;
// Device memory, for tests and tools.
void* device_alloc(std::size_t bytes);
void device_free(void* p) noexcept;

}  // namespace ringlet::cuda_api
