// SPDX-License-Identifier: Apache-2.0
// Which sanitizer this translation unit is built with, for GCC (__SANITIZE_*__) and clang
// (__has_feature): RINGLET_ASAN and RINGLET_TSAN are 1 or 0.
#pragma once

#if defined(__SANITIZE_ADDRESS__)
#define RINGLET_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define RINGLET_ASAN 1
#endif
#endif
#ifndef RINGLET_ASAN
#define RINGLET_ASAN 0
#endif

#if defined(__SANITIZE_THREAD__)
#define RINGLET_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define RINGLET_TSAN 1
#endif
#endif
#ifndef RINGLET_TSAN
#define RINGLET_TSAN 0
#endif
