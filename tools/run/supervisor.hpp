// SPDX-License-Identifier: Apache-2.0
// ringlet-run's supervisor: starts the ranks, forwards signals and output, ends the job.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "tools/run/options.hpp"

namespace ringlet::run {

// Exit statuses of ringlet-run itself (otherwise it exits with the job's status).
inline constexpr int kExitSetupFailure = 1;  // the job could not be set up (not a rank's status)
inline constexpr int kExitUsage = 2;
inline constexpr int kExitTimeout = 124;
inline constexpr int kExitCannotExecute = 126;
inline constexpr int kExitNotFound = 127;

// Writes all of `data` to fd, waiting (bounded) when the fd is non-blocking and full.
// Output that cannot be written (closed pipe, stuck reader) is dropped.
void write_all(int fd, std::string_view data);

// "ringlet-run: <message>" on stderr.
void say(std::string_view message);

// Starts rank r as argvs[r] with environment envs[r] and supervises the job until every rank
// has exited (or the timeout, a signal or a failed rank ended it). Returns the exit status of
// ringlet-run.
// stdin_data[r], when given and not empty, is written to rank r's standard input (a pipe
// closed after it) instead of forwarding ours: how ssh-mode ranks receive the job's secret.
int supervise(const RunOptions& opts, std::vector<std::vector<std::string>> argvs,
              std::vector<std::vector<std::string>> envs, std::vector<std::string> stdin_data = {});

}  // namespace ringlet::run
