// SPDX-License-Identifier: Apache-2.0
// Hang reports (docs/reliability.md): where a rank's collective stands, from the progress
// record of the communicator, as one line that ringlet-run parses into a diagnosis. Logged at
// a deadline error and, with RINGLET_HANG_SIGNAL, whenever that signal arrives.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

namespace ringlet {

// One reading of a progress record. Fields a record does not keep yet stay at their
// defaults (step and peer: -1, printed "-").
struct HangSnapshot {
  int rank = -1;
  int size = 0;
  bool active = false;      // a collective is running (seq and since are its own)
  std::uint64_t seq = 0;    // the communicator's sequence number of the collective
  std::string call;         // "allreduce(count=1024, float32, sum)"; may be empty
  std::string_view phase;   // "fingerprint_exchange", ...; static text
  int step = -1;            // the algorithm's step, when known
  int peer = -1;            // the peer awaited, when known
  long long since_ms = -1;  // how long ago the collective started
};

// "hang report: rank 2/4 collective #57 allreduce(..) phase=algorithm step=- waits_for=3
// since_ms=5003" (idle: "hang report: rank 2/4 idle after collective #57").
// tools/run/hang_diagnosis.cpp parses exactly this form.
std::string format_hang_report(const HangSnapshot& s);

// RINGLET_HANG_SIGNAL: while `source` is registered, the signal makes a watcher thread log
// `source()` (a hang report) at WARN. The handler only writes a byte to a pipe and then
// calls the handler the application had installed (SA_SIGINFO or not; SIG_DFL and SIG_IGN
// are not chained: the opt-in means "this signal asks for reports"). Installed once per
// process, on the first registration with signo > 0. Returns a registration id, or 0 when
// signo <= 0; unregister_hang_source(id) blocks until a report in progress is done.
int register_hang_source(int signo, std::function<std::string()> source);

// RINGLET_REPORT_FD (set by ringlet-run for local and namespaced ranks): the write end of a
// pipe that ringlet-run reads, so that it can diagnose a hang whether or not it tags the
// ranks' output. Once per process (a later call is ignored); an fd that is not a pipe is
// ignored with a warning. The fd is made non-blocking and close-on-exec. Once the signal
// handler is installed, "hang reports: on" is written to it: ringlet-run signals only the
// ranks that said so.
void set_hang_report_fd(int fd) noexcept;

// Logs one hang report at WARN and writes it to the report fd, if any (one write of one
// line; a full pipe drops it, never blocks).
void emit_hang_report(const std::string& line) noexcept;
void unregister_hang_source(int id) noexcept;

}  // namespace ringlet
