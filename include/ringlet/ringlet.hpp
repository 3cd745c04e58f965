// SPDX-License-Identifier: Apache-2.0
// ringlet: ring allreduce for data-parallel training. This header is the whole public API.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <span>
#include <stop_token>
#include <string>
#include <string_view>
#include <system_error>
#include <type_traits>
#include <vector>

namespace ringlet {

// The library's version, "MAJOR.MINOR.PATCH".
[[gnu::visibility("default")]] std::string_view version() noexcept;

// ringlet::DataType: the element types a collective can carry.
enum class DataType : std::uint8_t {
  float32,
  float64,
  float16,
  bfloat16,
  int8,
  uint8,
  int32,
  int64
};

// 16-bit storage types for the std::span overloads (g++ 12 has no std::float16_t). They hold
// IEEE binary16 and bfloat16 bit patterns; ringlet reduces them with float32 arithmetic and
// rounds to nearest even when it stores the result.
struct Half {
  std::uint16_t bits = 0;
};
struct BFloat16 {
  std::uint16_t bits = 0;
};

// ringlet::ReduceOp: how elements combine. avg is sum divided by size(); it is defined for
// floating-point types only (an integer avg throws ErrorCode::invalid_argument).
enum class ReduceOp : std::uint8_t { sum, prod, min, max, avg };

// Where a Tensor's memory lives: host memory, or CUDA device memory (Tensor::device is the
// ordinal). CUDA memory needs a build with CUDA and a machine with a device; otherwise a
// collective on it throws ErrorCode::invalid_argument saying which is missing.
enum class MemoryKind : std::uint8_t { host, cuda };

// ringlet::CudaStream: a cudaStream_t passed opaquely, so that this header stays free of CUDA
// (ringlet/cuda.hpp, included by the user, converts a cudaStream_t). A null handle is the
// legacy default stream.
struct CudaStream {
  void* handle = nullptr;
};

// Size in bytes of one element, and the names used in messages ("float32", "sum").
[[gnu::visibility("default")]] std::size_t size_of(DataType type) noexcept;
// Whether `type` is a floating-point type (float32, float64, float16, bfloat16): the types
// ReduceOp::avg accepts.
[[gnu::visibility("default")]] bool is_floating(DataType type) noexcept;
[[gnu::visibility("default")]] std::string_view to_string(DataType type) noexcept;
[[gnu::visibility("default")]] std::string_view to_string(ReduceOp op) noexcept;

namespace detail {
template <class T>
struct DataTypeOf;
template <>
struct DataTypeOf<float> {
  static constexpr DataType value = DataType::float32;
};
template <>
struct DataTypeOf<double> {
  static constexpr DataType value = DataType::float64;
};
template <>
struct DataTypeOf<Half> {
  static constexpr DataType value = DataType::float16;
};
template <>
struct DataTypeOf<BFloat16> {
  static constexpr DataType value = DataType::bfloat16;
};
template <>
struct DataTypeOf<std::int8_t> {
  static constexpr DataType value = DataType::int8;
};
template <>
struct DataTypeOf<std::uint8_t> {
  static constexpr DataType value = DataType::uint8;
};
template <>
struct DataTypeOf<std::int32_t> {
  static constexpr DataType value = DataType::int32;
};
template <>
struct DataTypeOf<std::int64_t> {
  static constexpr DataType value = DataType::int64;
};
}  // namespace detail

// The DataType of a C++ element type: data_type_of<float>() == DataType::float32.
template <class T>
constexpr DataType data_type_of() {
  return detail::DataTypeOf<std::remove_cv_t<T>>::value;
}

// ringlet::Tensor
//
// A non-owning view of `count` contiguous elements. The caller keeps the memory alive, and
// does not touch it, until the collective that uses it returns (or its Work is done).
struct [[gnu::visibility("default")]] Tensor {
  void* data = nullptr;
  std::size_t count = 0;
  DataType type = DataType::float32;
  MemoryKind memory = MemoryKind::host;
  int device = -1;  // CUDA ordinal when memory == MemoryKind::cuda

  // A view of a span; a span of const elements may only be used as an input.
  template <class T, std::size_t N>
  static Tensor of(std::span<T, N> s) {
    return {const_cast<std::remove_cv_t<T>*>(s.data()), s.size(), data_type_of<T>()};
  }
  std::size_t bytes() const noexcept;
};

// ringlet::ErrorCode: what went wrong, and from that what the caller may do next
// (docs/guide/errors.md).
//   invalid_argument  a bug in the caller; nothing is damaged, the communicator still works.
//   mismatch          ranks disagree on a collective; the communicator is aborted.
//   timeout           a deadline passed; the communicator is aborted.
//   peer_lost         a peer closed its connection or died; the communicator is aborted.
//   transport         a network or system call failed; the communicator is aborted.
//   aborted           abort() was called, or an earlier error aborted the communicator.
enum class ErrorCode { invalid_argument = 1, mismatch, timeout, peer_lost, transport, aborted };

[[gnu::visibility("default")]] const std::error_category& error_category() noexcept;
[[gnu::visibility("default")]] std::error_code make_error_code(ErrorCode code) noexcept;

// ringlet::Error: the only exception ringlet throws. `e.code() == ErrorCode::timeout` works.
// Structured: the cause, the rank where it began, and the collective it ended; what() is
// composed from them: "allreduce #3: rank 2: <cause>: <the code's text>".
class [[gnu::visibility("default")]] Error : public std::system_error {
 public:
  Error(ErrorCode code, const std::string& cause, std::vector<int> ranks = {});
  ErrorCode error_code() const noexcept;
  const std::vector<int>& ranks() const noexcept;  // the ranks involved, may be empty
  // What went wrong, without the context below.
  const std::string& cause() const noexcept;
  // The rank that reported the failure to this one; -1 when this rank detected it.
  int origin_rank() const noexcept;
  // The collective that failed ("allreduce") and its sequence number on the communicator
  // (1 for the first); empty and 0 outside a collective.
  const std::string& collective() const noexcept;
  std::uint64_t sequence() const noexcept;
  const char* what() const noexcept override;

  // Context added on the way up, each set once (later calls keep the first value).
  Error& reported_by(int origin_rank);
  Error& in_collective(std::string_view name, std::uint64_t sequence);

 private:
  void compose();
  std::vector<int> ranks_;
  std::string cause_;
  int origin_rank_ = -1;
  std::string collective_;
  std::uint64_t sequence_ = 0;
  std::string what_;
};

// ringlet::Options
//
// What a rank knows about its job. Every field left at its default comes from the
// environment (docs/guide/env.md, docs/launch.md): RINGLET_* first, then PMIx (under mpirun or
// srun --mpi=pmix, when no store address is given: rank 0 publishes an ephemeral store port
// through it), then torchrun, Open MPI, MPICH/PMI (Hydra's PMI_FD carries the store address)
// and SLURM variables. Fields set here win over the environment.
struct Options {
  int rank = -1;        // -1: from the environment
  int size = -1;        // -1: from the environment
  int local_rank = -1;  // -1: from the environment, else from the node identity
  int local_size = -1;  // -1: from the environment, else from the node identity
  std::string store;    // "host:port" of rank 0's rendezvous store; empty: environment
  std::string node_id;  // overrides the node identity (RINGLET_NODE_ID); empty: detected
  // Deadline of every blocking call. Zero: RINGLET_TIMEOUT (seconds), else 300 s.
  std::chrono::milliseconds timeout{0};
  // Allreduce algorithm, RINGLET_ALGO's syntax: "auto", "ring", "recursive_doubling", "hier",
  // "local", or size ranges such as "rd:0-64K;ring:64K-max". Empty: RINGLET_ALGO, else auto.
  std::string algorithm;
  // Network transport: "auto", "tcp" or "rdma" (builds with ibverbs). Empty: RINGLET_TRANSPORT,
  // else auto (rdma where an active RDMA port exists, tcp otherwise).
  std::string transport;
  // The job's shared secret (docs/security.md). Empty: RINGLET_SECRET, else the contents of
  // the file RINGLET_SECRET_FILE, else none (unauthenticated; rank 0 warns once).
  std::string secret;
  // Encrypt every TCP frame (AES-256-GCM): 1 on, 0 off, -1: RINGLET_ENCRYPT, else off.
  int encrypt = -1;
  // Interrupts create() (and only create()): a request_stop() on its source, from any
  // thread, makes a create() that waits for missing ranks or for rank 0's store throw
  // ErrorCode::aborted within about 200 ms. Empty: create() ends by its deadline only.
  std::stop_token stop{};
};

namespace detail {
struct WorkState;
struct RegistrationState;
}  // namespace detail

// ringlet::Work
//
// The handle of an asynchronous collective (Communicator::allreduce_async and the others).
// Move-only. Dropping a Work that has not finished does not cancel the collective: it still
// runs, and its error, if any, aborts the communicator so that the next call on it throws.
// test(), wait() and on_complete() may be used from any thread; the collective's buffers
// belong to ringlet until it is done.
class [[nodiscard]] [[gnu::visibility("default")]] Work {
 public:
  // A Work that is already done, without error.
  Work() noexcept;
  Work(Work &&) noexcept;
  Work& operator=(Work&&) noexcept;
  Work(const Work&) = delete;
  Work& operator=(const Work&) = delete;
  ~Work();

  // True when the collective has finished; never blocks. Rethrows its ringlet::Error.
  bool test();
  // Blocks until the collective has finished (each collective ends by its deadline,
  // Options::timeout, counted from when it starts). Rethrows its ringlet::Error.
  void wait();
  // Calls `done` once when the collective finishes, with its error (null on success): on the
  // communicator's progress engine thread, or at once on this thread when it has already
  // finished. `done` must not block on later collectives of the same communicator.
  void on_complete(std::function<void(std::exception_ptr)> done);

  explicit Work(std::shared_ptr<detail::WorkState> state) noexcept;

 private:
  std::shared_ptr<detail::WorkState> state_;
};

// ringlet::Registration
//
// The handle of a buffer registered with a communicator's transport
// (Communicator::register_buffer). Move-only. While it lives, collectives of that communicator
// send from memory inside the buffer in place, without staging copies; destroying it (or
// reset()) deregisters the buffer, after which the transport never touches it again. Destroy
// it only while no collective that uses the buffer is pending. Valid for the communicator that
// made it; it may outlive that communicator. A no-op where the transport needs no
// registration (tcp, shared memory): registered() is then false.
class [[nodiscard]] [[gnu::visibility("default")]] Registration {
 public:
  Registration() noexcept;
  Registration(Registration &&) noexcept;
  Registration& operator=(Registration&&) noexcept;
  Registration(const Registration&) = delete;
  Registration& operator=(const Registration&) = delete;
  ~Registration();

  // True when the transport registered the memory (rdma).
  bool registered() const noexcept;
  // Deregisters now.
  void reset() noexcept;

  explicit Registration(std::shared_ptr<detail::RegistrationState> state) noexcept;

 private:
  std::shared_ptr<detail::RegistrationState> state_;
};

// ringlet::Communicator
//
// One member of a group of `size()` ranks. Collectives are issued from one thread at a
// time; test(), wait(), on_complete() of their Work and abort() may be used from any
// thread. Collectives on one communicator run in the order they were issued (blocking and
// asynchronous alike), and every rank must issue the same sequence, with the same count,
// type, op and root; otherwise every rank gets ErrorCode::mismatch. Every collective ends by
// its deadline (Options::timeout). After any error other than invalid_argument the
// communicator is aborted: later calls throw ErrorCode::aborted, and a new communicator must
// be created. Destroying (or assigning over) a communicator with collectives still pending
// waits for them, bounded by the deadline, then aborts it. docs/guide/api.md has the rules.
class [[gnu::visibility("default")]] Communicator {
 public:
  // Rendezvous with all ranks and connect to the peers. Blocks until connected.
  // Throws invalid_argument (bad options or environment), timeout, transport, mismatch
  // (another rank speaks a different protocol version, disagrees on the job size, or the
  // store reached belongs to another job).
  [[nodiscard]] static Communicator create(const Options& options = {});

  Communicator(Communicator &&) noexcept;
  Communicator& operator=(Communicator&&) noexcept;
  ~Communicator();

  int rank() const noexcept;
  int size() const noexcept;
  int local_rank() const noexcept;  // rank among the ranks of this node
  int local_size() const noexcept;  // ranks on this node
  int node_count() const noexcept;  // nodes in the job

  // Registers `buffer` with this communicator's transport (RDMA: a memory region), so that
  // collectives on memory inside it send in place; see Registration. Not collective; may be
  // called from any thread. Throws invalid_argument for a null buffer or device memory the
  // transport cannot register, transport when the registration fails.
  [[nodiscard]] Registration register_buffer(Tensor buffer);

  // A new, independent communicator over the same ranks, with its own connections.
  // Collective: every rank must call it, in the same order as its other collectives.
  [[nodiscard]] Communicator dup();

  // Reduce `inout` element-wise across all ranks; every rank ends with the same bits.
  void allreduce(Tensor inout, ReduceOp op = ReduceOp::sum);
  // Out of place: `out` receives the reduction of every rank's `in`; `in` is not modified.
  // `in` and `out` have the same count and type; they may be the same buffer.
  void allreduce(Tensor in, Tensor out, ReduceOp op = ReduceOp::sum);

  // Copy root's `inout` to every rank.
  void broadcast(Tensor inout, int root);
  // Out of place: root sends `in`, every rank (root included) receives into `out`.
  void broadcast(Tensor in, Tensor out, int root);

  // Each rank contributes `in.count` elements; `out` (size() * in.count) receives them in
  // rank order. In place when `in` is the rank's own block of `out`.
  void allgather(Tensor in, Tensor out);

  // `in` holds size() * out.count elements; rank r receives the reduction of block r.
  // In place when `out` is the rank's own block of `in`.
  void reduce_scatter(Tensor in, Tensor out, ReduceOp op = ReduceOp::sum);

  // Returns once every rank has entered barrier().
  void barrier();

  // Many tensors in one call: each tensor of the list is reduced in place as by
  // allreduce(tensor, op), packed by type into fusion buffers of at most
  // RINGLET_FUSION_BYTES so that the list runs as a few collectives. The list is copied at the
  // call; every rank passes the same counts and types in the same order (a differing list is
  // a mismatch naming the first differing tensor).
  void allreduce(std::span<const Tensor> tensors, ReduceOp op = ReduceOp::sum);

  // The asynchronous forms: they validate the arguments (invalid_argument is thrown here),
  // queue the collective and return its Work. A collective that is small (at most the
  // recursive-doubling crossover) and finds nothing pending runs at once on the calling
  // thread, as its blocking form does, and returns a finished Work.
  Work allreduce_async(Tensor inout, ReduceOp op = ReduceOp::sum);
  Work allreduce_async(Tensor in, Tensor out, ReduceOp op = ReduceOp::sum);
  Work allreduce_async(std::span<const Tensor> tensors, ReduceOp op = ReduceOp::sum);
  Work broadcast_async(Tensor inout, int root);
  Work broadcast_async(Tensor in, Tensor out, int root);
  Work allgather_async(Tensor in, Tensor out);
  Work reduce_scatter_async(Tensor in, Tensor out, ReduceOp op = ReduceOp::sum);
  Work barrier_async();

  // On a CUDA stream, with NCCL's semantics, for tensors of MemoryKind::cuda (every form
  // above without a stream uses the legacy default stream for them). The call, blocking form
  // included, returns once the collective is enqueued; it runs after the work enqueued on
  // `stream` before the call, and work enqueued on `stream` after the call waits, on the
  // device, until it has completed. Work::wait() blocks the host until then. Errors, deadlines
  // included, surface from Work::test/wait, or from the next call on the communicator (a
  // failed collective aborts it); the stream is released either way, and its later work then
  // sees undefined contents. Host tensors ignore the stream. docs/guide/cuda.md has more.
  void allreduce(Tensor inout, ReduceOp op, CudaStream stream);
  void allreduce(Tensor in, Tensor out, ReduceOp op, CudaStream stream);
  void allreduce(std::span<const Tensor> tensors, ReduceOp op, CudaStream stream);
  void broadcast(Tensor inout, int root, CudaStream stream);
  void broadcast(Tensor in, Tensor out, int root, CudaStream stream);
  void allgather(Tensor in, Tensor out, CudaStream stream);
  void reduce_scatter(Tensor in, Tensor out, ReduceOp op, CudaStream stream);
  // Later work of `stream` waits until every rank has entered the barrier.
  void barrier(CudaStream stream);
  Work allreduce_async(Tensor inout, ReduceOp op, CudaStream stream);
  Work allreduce_async(Tensor in, Tensor out, ReduceOp op, CudaStream stream);
  Work allreduce_async(std::span<const Tensor> tensors, ReduceOp op, CudaStream stream);
  Work broadcast_async(Tensor inout, int root, CudaStream stream);
  Work broadcast_async(Tensor in, Tensor out, int root, CudaStream stream);
  Work allgather_async(Tensor in, Tensor out, CudaStream stream);
  Work reduce_scatter_async(Tensor in, Tensor out, ReduceOp op, CudaStream stream);
  Work barrier_async(CudaStream stream);

  // Typed conveniences: comm.allreduce(std::span(grads)).
  template <class T, std::size_t N>
  requires(!std::is_same_v<std::remove_cv_t<T>, Tensor>) void allreduce(
      std::span<T, N> inout, ReduceOp op = ReduceOp::sum) {
    allreduce(Tensor::of(inout), op);
  }
  template <class T, std::size_t N>
  requires(!std::is_same_v<std::remove_cv_t<T>, Tensor>) Work allreduce_async(
      std::span<T, N> inout, ReduceOp op = ReduceOp::sum) {
    return allreduce_async(Tensor::of(inout), op);
  }
  template <class T, std::size_t N, class U, std::size_t M>
  void allreduce(std::span<T, N> in, std::span<U, M> out, ReduceOp op = ReduceOp::sum) {
    allreduce(Tensor::of(in), Tensor::of(out), op);
  }
  template <class T, std::size_t N>
  void broadcast(std::span<T, N> inout, int root) {
    broadcast(Tensor::of(inout), root);
  }

  // Fail pending and future calls on this communicator with ErrorCode::aborted; peers then
  // see peer_lost. Thread-safe: may be called from any thread, also during a collective.
  void abort() noexcept;

  class Impl;

 private:
  friend struct CommunicatorAccess;
  explicit Communicator(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// ringlet::GradientReducer
//
// Data-parallel gradient averaging that overlaps the backward pass (docs/guide/training.md).
// It runs on its own dup() of the communicator given. Register each gradient once with add();
// then, each step, call mark_ready() for every gradient as the backward pass produces it (in
// any order), and wait() before the optimizer step: afterwards every gradient holds
//   postscale * sum over ranks of (prescale * gradient)
// which with the defaults is the average over ranks, bitwise identical on every rank.
//
// Gradients are grouped into buckets of at most `bucket_bytes`; a bucket is reduced as one
// asynchronous collective as soon as all of its gradients are ready and every earlier
// bucket has been issued, while backward continues. The bucket order is agreed across the
// ranks at the first step (rank 0's order of readiness), so every rank issues the same
// collectives whatever its own order. The first step also checks that every rank registered
// the same gradients (names, sizes, types) and the same options; each step checks that every
// gradient was marked on every rank. A difference is ErrorCode::mismatch on every rank,
// naming the gradient and the ranks, never a hang; the reducer is then unusable.
//
// Compression (float32 gradients only): the buckets travel and are summed as float16 or
// bfloat16; each hop accumulates in float32 and rounds once. With u = 2^-11 (float16) or
// 2^-8 (bfloat16) and N ranks, each element of the result r of the sum s = sum_i x_i of the
// prescaled values x_i satisfies |r - s| <= g * sum_i |x_i| + N e, g = N u / (1 - N u),
// e = 2^-25 for float16 (half its subnormal spacing; 2^-134 for bfloat16), before the
// postscale (one more float32 rounding), as long as no partial sum overflows the 16-bit type
// (float16: 65504; use prescale to stay below it).
enum class Compression : std::uint8_t { none, float16, bfloat16 };

struct ReducerOptions {
  // Bytes of gradient per bucket (in the gradients' own type). 0: RINGLET_BUCKET_BYTES, else
  // the fusion size (RINGLET_FUSION_BYTES). Every rank must use the same value.
  std::size_t bucket_bytes = 0;
  // Each rank's gradient is multiplied by `prescale` before the sum, the sum by `postscale`
  // after it; postscale 0 means 1 / size() (the average).
  float prescale = 1.0f;
  float postscale = 0.0f;
  Compression compression = Compression::none;
};

class [[gnu::visibility("default")]] GradientReducer {
 public:
  // Collective over `comm`'s ranks: calls comm.dup(). `comm` is not used afterwards.
  explicit GradientReducer(Communicator & comm, const ReducerOptions& options = {});
  GradientReducer(GradientReducer &&) noexcept;
  GradientReducer& operator=(GradientReducer&&) noexcept;
  ~GradientReducer();

  // Registers a gradient (host memory, a floating-point type) under a unique name, before
  // the first step; returns its index for mark_ready(std::size_t).
  std::size_t add(std::string name, Tensor gradient);
  // The gradient is final for this step; do not touch it until wait() returns. From the
  // thread that runs backward (the same thread as wait()).
  void mark_ready(std::string_view name);
  void mark_ready(std::size_t index);
  // Waits for every bucket of this step (reducing those not yet issued) and writes the
  // results into the gradients. Throws mismatch if some gradient was not marked on some rank.
  void wait();
  // Copies root's parameters to every rank (the one-time pull that replaces a parameter
  // server); every rank passes the same list.
  void broadcast_parameters(std::span<const Tensor> parameters, int root = 0);

  int rank() const noexcept;
  int size() const noexcept;
  std::uint64_t steps() const noexcept;       // wait()s completed
  std::size_t bucket_count() const noexcept;  // 0 before the first wait()
  std::size_t bucket_bytes() const noexcept;  // the resolved bucket size

  class Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace ringlet

template <>
struct std::is_error_code_enum<ringlet::ErrorCode> : std::true_type {};
