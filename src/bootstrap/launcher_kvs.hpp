// SPDX-License-Identifier: Apache-2.0
// LauncherKvs: the key-value service of a process manager (PMIx, MPICH Hydra's PMI-1), used
// only to publish the rendezvous store's address; and the wire-up over it.
#pragma once

#include <memory>
#include <stop_token>
#include <string>

#include "src/bootstrap/launch_env.hpp"
#include "src/bootstrap/store.hpp"
#include "src/common/deadline.hpp"

namespace ringlet::bootstrap {

class LauncherKvs {
 public:
  virtual ~LauncherKvs() = default;
  virtual const char* name() const = 0;  // "PMIx", "PMI-1"
  // Publishes this rank's value for `key`; visible to every rank after the next fence().
  virtual void put(const std::string& key, const std::string& value) = 0;
  // Collective over the job: every rank's puts before it are visible after it.
  virtual void fence(Deadline deadline) = 0;
  // `rank`'s value for `key` (published before the last fence); Error(timeout) or
  // Error(transport) when the process manager has none.
  virtual std::string get(int rank, const std::string& key, Deadline deadline) = 0;
  // A name of this job that the process manager gives every rank ("" if none): PMI-1's KVS.
  virtual std::string job_name() const { return ""; }
};

// PMIx (src/bootstrap/pmix.cpp): Init, the job's sizes and this rank's position. Throws
// Error(transport) naming the server when PMIx_Init fails; Finalize when destroyed.
bool pmix_built();
std::unique_ptr<LauncherKvs> pmix_connect(PmixView& view);

// MPICH Hydra's PMI-1 wire protocol on an inherited socket (src/bootstrap/pmi1.cpp).
std::unique_ptr<LauncherKvs> pmi1_connect(int fd, int rank, Deadline deadline);

// A launch in progress: the resolved LaunchInfo and, for PMIx and PMI-1, the connection to
// the process manager, kept until the store is up.
struct Launch {
  LaunchInfo info;
  std::unique_ptr<LauncherKvs> kvs;
  std::string rendezvous;  // "host:port via PMIx", for the INFO line
};

// Resolves the launch (connecting to PMIx when announced and wanted, see choose_wireup()).
Launch start_launch(const Options& options, const EnvLookup& env);

// Makes the rendezvous store: for PMIx and PMI-1, the serving rank binds an ephemeral port
// on an address every node can reach (the one sharing a subnet with the other nodes'
// addresses, exchanged in a first fence) and publishes it; the others read it after a second
// fence. Then closes the process manager's connection. Size-1 jobs get an in-process store.
// When the identity is only the rendezvous hash and the process manager names the job
// (PMI-1's KVS), that name becomes the identity.
std::shared_ptr<Store> connect_store(Launch& launch, Deadline deadline, const std::string& secret,
                                     std::stop_token stop = {});

}  // namespace ringlet::bootstrap
