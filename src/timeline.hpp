// SPDX-License-Identifier: Apache-2.0
// The timeline (RINGLET_TIMELINE=PATH): each rank records the collectives of its
// communicators and their phases, as the progress record moves through them, and writes
// PATH.<rank>.json when its last communicator ends. tools/ringlet-timeline merges the files
// into one Chrome trace-event file. Off by default: the communicator then holds no Lane and
// each hook is one untaken branch.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

namespace ringlet::timeline {

// Nanoseconds of the steady clock (the clock of the progress record).
long long now_ns() noexcept;

class Recorder;

// One communicator's lane in its rank's file. The phase machine (begin, phase, end) is driven
// by the thread that runs the communicator's collectives (one at a time); span() may be
// called from any thread.
class Lane {
 public:
  // Opens (or joins) the file PATH.<rank>.json of this process; `label` names the lane
  // ("comm", "comm.1" for the first dup()). Never throws: a lane that cannot record drops.
  Lane(const std::string& path, int rank, std::string label);
  ~Lane();
  Lane(const Lane&) = delete;
  Lane& operator=(const Lane&) = delete;

  // A collective starts at `start_ns`: `name` ("allreduce"), `args` a JSON object's members
  // ("\"seq\":3,\"bytes\":4096"), rendered by the caller.
  void begin(std::string_view name, std::string args, long long start_ns) noexcept;
  // The open collective enters `phase` ("fingerprint exchange"): the previous phase ends.
  void phase(std::string_view phase) noexcept;
  // The collective ends (also on failure); `outcome` is "ok" or the error's text.
  void end(std::string_view outcome = "ok") noexcept;
  // A finished span of this lane, outside the phase machine (fusion pack, a bucket's pack).
  void span(std::string_view name, std::string_view category, long long begin_ns, long long end_ns,
            std::string args = {}) noexcept;

 private:
  std::shared_ptr<Recorder> recorder_;
  std::string label_;
  bool open_ = false;
  std::string name_;
  std::string args_;
  long long start_ns_ = 0;
  std::string phase_;
  long long phase_start_ns_ = 0;
};

// `text` as the contents of a JSON string (quotes, backslashes and control characters escaped).
std::string json_escape(std::string_view text);

}  // namespace ringlet::timeline
