// SPDX-License-Identifier: Apache-2.0
// Test-only C API of the emulated libibverbs device: access logs of registered memory and fault
// injection. Nothing here exists in the real libibverbs; only tests may include this header.
#ifndef RINGLET_VERBS_EMU_H
#define RINGLET_VERBS_EMU_H

#include <infiniband/verbs.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

// The kinds of access the emulated NIC makes to registered memory.
enum ringlet_emu_access_kind {
  RINGLET_EMU_LOCAL_READ = 1,    // gathering the SGEs of a non-inline SEND or RDMA WRITE
  RINGLET_EMU_LOCAL_WRITE = 2,   // scattering a received SEND into a posted receive
  RINGLET_EMU_REMOTE_WRITE = 3,  // placing an incoming RDMA WRITE (WITH_IMM) into an MR
};

// One access, as passed to the access hook.
struct ringlet_emu_access {
  int kind;          // enum ringlet_emu_access_kind
  uint32_t lkey;     // the MR's lkey (also for remote writes, which arrive by rkey)
  uint32_t rkey;     // the MR's rkey
  const void* addr;  // first byte touched, a process address
  uint64_t length;   // bytes touched
  int after_dereg;   // 1 if the MR was already deregistered: never happens unless a bug
};

// Counters of one MR since its registration; they stay readable after ibv_dereg_mr.
struct ringlet_emu_access_counts {
  uint64_t local_reads;
  uint64_t local_writes;
  uint64_t remote_writes;
  uint64_t bytes;        // bytes touched by all of the above
  uint64_t after_dereg;  // accesses recorded after deregistration (must stay 0)
  int registered;        // 1 while the MR is registered
};

typedef void (*ringlet_emu_access_hook)(void* user, const struct ringlet_emu_access* access);

// Installs (or with NULL removes) a hook called on every access, from the emulator's threads.
void ringlet_emu_set_access_hook(ringlet_emu_access_hook hook, void* user);

// Fills *counts for the MR whose lkey is given; returns 0, or -1 when no MR ever had that lkey.
int ringlet_emu_mr_access_count(uint32_t lkey, struct ringlet_emu_access_counts* counts);

// Number of recorded accesses (any MR, deregistered ones included) that overlapped
// [addr, addr + length). Each MR keeps the address ranges of its first 65536 accesses.
uint64_t ringlet_emu_range_access_count(const void* addr, size_t length);

// Moves the QP to the error state as a catastrophic error would: its queues are flushed and the
// context gets IBV_EVENT_QP_FATAL. Returns 0 or an errno value.
int ringlet_emu_inject_qp_fatal(struct ibv_qp* qp);

// Sets the state of port 1 of the context's emulated NIC (IBV_PORT_ACTIVE or IBV_PORT_DOWN);
// every context on that NIC gets IBV_EVENT_PORT_ACTIVE or IBV_EVENT_PORT_ERR. While the port is
// down, sends from it fail as if the peer were gone. Returns 0 or an errno value.
int ringlet_emu_set_port_state(struct ibv_context* context, enum ibv_port_state state);

// The folder holding the NICs' sockets (RINGLET_VERBS_EMU_DIR or its default).
const char* ringlet_emu_socket_dir(void);

#ifdef __cplusplus
}
#endif

#endif  // RINGLET_VERBS_EMU_H
