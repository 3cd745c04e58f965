// SPDX-License-Identifier: Apache-2.0
// RankGroup: runs one test body on every rank, as threads of this process or as forked processes.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <functional>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "include/ringlet/ringlet.hpp"
#include "src/bootstrap/store.hpp"

namespace ringlet::testing {

// How the ranks of a group run, and which store they rendezvous through.
enum class RankMode { threads, processes };
enum class StoreKind { hash, file, tcp };  // hash: threads only

std::string to_string(RankMode mode);

// What the body of one rank sees. Owned by the group; valid during the body.
struct RankContext {
  int rank = 0;
  int size = 1;
  RankMode mode = RankMode::threads;
  std::shared_ptr<bootstrap::Store> store;  // shared by all ranks of the group

  // A communicator over the group's store; options.rank and options.size are filled in.
  // Communicators created one after another need different `key_prefix`es (the keys of a
  // communicator's rendezvous are not removed when it ends).
  Communicator create(Options options = {}, const std::string& key_prefix = "") const;
  // Waits until every rank has called sync(name) (through the store), or fails the test at
  // `limit`. Each name may be used once per group.
  void sync(const std::string& name,
            std::chrono::milliseconds limit = std::chrono::seconds(60)) const;
};

using RankBody = std::function<void(RankContext&)>;

// What a group run tells its caller about each rank.
struct RankOutcome {
  bool finished = false;  // the body returned (threads) or the process exited (processes)
  int exit_code = -1;     // processes: the exit status, -1 when killed by a signal
  int signal = 0;         // processes: the signal that ended it, 0 if none
};

struct GroupOptions {
  StoreKind store = StoreKind::hash;  // processes turn hash into file
  // Wall-clock limit of the whole run; processes still running then are killed with SIGKILL
  // and the test fails. Threads cannot be killed: their bodies must end by their own
  // deadlines (every ringlet call has one).
  std::chrono::milliseconds limit = std::chrono::seconds(180);
  // Processes only: ranks that are expected to die by a signal (fault tests). They may end
  // by any signal without failing the test, and once every other rank has exited, those
  // still alive (stopped, for example) are killed with SIGKILL.
  std::set<int> victims;
};

// Runs `body` once per rank, on `size` ranks, and returns when all have ended. Failures of
// gtest assertions on any rank, and exceptions that escape a body, fail the current test,
// naming the rank. A process that exits with a non-zero status or dies by a signal fails
// the test unless it is a victim.
class RankGroup {
 public:
  virtual ~RankGroup() = default;
  virtual RankMode mode() const noexcept = 0;
  virtual std::vector<RankOutcome> run(int size, const RankBody& body,
                                       const GroupOptions& options = {}) = 0;
};

std::unique_ptr<RankGroup> make_rank_group(RankMode mode);

// The TCP ports this process listens on (from /proc/net/tcp{,6} and /proc/self/fd).
std::vector<int> listening_ports_of_this_process();

// A free TCP port on 127.0.0.1 at the time of the call.
int free_tcp_port();

// Sets an environment variable for the life of the object, then restores it. Not
// thread-safe: use it on the test's main thread before the ranks start.
class ScopedEnv {
 public:
  ScopedEnv(std::string name, const std::string& value);
  ~ScopedEnv();
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;

 private:
  std::string name_;
  bool had_ = false;
  std::string old_;
};

}  // namespace ringlet::testing
