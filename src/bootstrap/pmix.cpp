// SPDX-License-Identifier: Apache-2.0
// PMIx client for the wire-up (the only file that includes pmix.h). Under Open MPI's mpirun
// and SLURM's srun --mpi=pmix: rank, sizes and local rank from the server, and the store's
// address through Put/Commit, a collecting Fence and Get.
#include "ringlet_config.hpp"
#include "src/bootstrap/launcher_kvs.hpp"
#include "src/common/check.hpp"

#if RINGLET_HAVE_PMIX
#include <pmix.h>

#include <cstring>
#endif

namespace ringlet::bootstrap {

#if RINGLET_HAVE_PMIX
namespace {

// PMIX_TIMEOUT takes whole seconds; at least 1.
int timeout_seconds(Deadline deadline) {
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
  return static_cast<int>(std::max<long long>(1, (ms + 999) / 1000));
}

std::string status_text(pmix_status_t rc) { return str_cat(PMIx_Error_string(rc), " (", rc, ")"); }

// An integer attribute of any PMIx integer type; -1 when absent.
long long as_integer(const pmix_value_t* v) {
  switch (v->type) {
    case PMIX_UINT8:
      return v->data.uint8;
    case PMIX_UINT16:
      return v->data.uint16;
    case PMIX_UINT32:
      return v->data.uint32;
    case PMIX_UINT64:
      return static_cast<long long>(v->data.uint64);
    case PMIX_INT:
      return v->data.integer;
    case PMIX_INT32:
      return v->data.int32;
    case PMIX_INT64:
      return v->data.int64;
    case PMIX_SIZE:
      return static_cast<long long>(v->data.size);
    case PMIX_PROC_RANK:
      return v->data.rank;
    default:
      return -1;
  }
}

class PmixClient final : public LauncherKvs {
 public:
  PmixClient() {
    PMIX_PROC_CONSTRUCT(&me_);
    pmix_status_t rc = PMIx_Init(&me_, nullptr, 0);
    if (rc != PMIX_SUCCESS) {
      throw Error(ErrorCode::transport,
                  str_cat("PMIx_Init failed: ", status_text(rc),
                          "; the PMIx server that PMIX_SERVER_URI* announces cannot be reached "
                          "(set RINGLET_ADDR=host:port to rendezvous without PMIx)"));
    }
  }
  ~PmixClient() override { PMIx_Finalize(nullptr, 0); }
  PmixClient(const PmixClient&) = delete;
  PmixClient& operator=(const PmixClient&) = delete;

  const char* name() const override { return "PMIx"; }

  PmixView view() {
    PmixView v;
    v.nspace = me_.nspace;
    v.rank = static_cast<int>(me_.rank);
    pmix_proc_t wild;
    PMIX_PROC_CONSTRUCT(&wild);
    PMIX_LOAD_PROCID(&wild, me_.nspace, PMIX_RANK_WILDCARD);
    v.size = static_cast<int>(get_integer(wild, PMIX_JOB_SIZE));
    v.local_size = static_cast<int>(get_integer(wild, PMIX_LOCAL_SIZE));
    v.local_rank = static_cast<int>(get_integer(me_, PMIX_LOCAL_RANK));
    if (v.size < 1) {
      throw Error(ErrorCode::transport,
                  str_cat("PMIx (namespace ", me_.nspace, ") gave no job size (PMIX_JOB_SIZE)"));
    }
    return v;
  }

  void put(const std::string& key, const std::string& value) override {
    pmix_value_t v;
    PMIX_VALUE_CONSTRUCT(&v);
    v.type = PMIX_STRING;
    v.data.string = const_cast<char*>(value.c_str());
    pmix_status_t rc = PMIx_Put(PMIX_GLOBAL, key.c_str(), &v);
    if (rc == PMIX_SUCCESS) rc = PMIx_Commit();
    if (rc != PMIX_SUCCESS) {
      throw Error(ErrorCode::transport, str_cat("PMIx_Put/Commit of '", key, "' by rank ", me_.rank,
                                                " failed: ", status_text(rc)));
    }
  }

  void fence(Deadline deadline) override {
    pmix_proc_t wild;
    PMIX_PROC_CONSTRUCT(&wild);
    PMIX_LOAD_PROCID(&wild, me_.nspace, PMIX_RANK_WILDCARD);
    pmix_info_t info[2];
    bool collect = true;
    int seconds = timeout_seconds(deadline);
    PMIX_INFO_LOAD(&info[0], PMIX_COLLECT_DATA, &collect, PMIX_BOOL);
    PMIX_INFO_LOAD(&info[1], PMIX_TIMEOUT, &seconds, PMIX_INT);
    pmix_status_t rc = PMIx_Fence(&wild, 1, info, 2);
    PMIX_INFO_DESTRUCT(&info[0]);
    PMIX_INFO_DESTRUCT(&info[1]);
    if (rc != PMIX_SUCCESS) {
      throw Error(rc == PMIX_ERR_TIMEOUT ? ErrorCode::timeout : ErrorCode::peer_lost,
                  str_cat("PMIx_Fence over namespace ", me_.nspace, " failed at rank ", me_.rank,
                          ": ", status_text(rc), " (a rank did not reach create() within ", seconds,
                          " s, or exited)"));
    }
  }

  std::string get(int rank, const std::string& key, Deadline deadline) override {
    pmix_proc_t p;
    PMIX_PROC_CONSTRUCT(&p);
    PMIX_LOAD_PROCID(&p, me_.nspace, static_cast<pmix_rank_t>(rank));
    pmix_info_t info;
    int seconds = timeout_seconds(deadline);
    PMIX_INFO_LOAD(&info, PMIX_TIMEOUT, &seconds, PMIX_INT);
    pmix_value_t* v = nullptr;
    pmix_status_t rc = PMIx_Get(&p, key.c_str(), &info, 1, &v);
    PMIX_INFO_DESTRUCT(&info);
    if (rc != PMIX_SUCCESS || v == nullptr || v->type != PMIX_STRING || v->data.string == nullptr) {
      if (v != nullptr) PMIX_VALUE_RELEASE(v);
      throw Error(rc == PMIX_ERR_TIMEOUT ? ErrorCode::timeout : ErrorCode::transport,
                  str_cat("PMIx_Get of rank ", rank, "'s '", key, "' at rank ", me_.rank,
                          " failed: ", rc == PMIX_SUCCESS ? "not a string" : status_text(rc)));
    }
    std::string out = v->data.string;
    PMIX_VALUE_RELEASE(v);
    return out;
  }

 private:
  long long get_integer(const pmix_proc_t& proc, const char* key) {
    pmix_value_t* v = nullptr;
    if (PMIx_Get(&proc, key, nullptr, 0, &v) != PMIX_SUCCESS || v == nullptr) return -1;
    long long x = as_integer(v);
    PMIX_VALUE_RELEASE(v);
    return x;
  }

  pmix_proc_t me_;
};

}  // namespace

bool pmix_built() { return true; }

std::unique_ptr<LauncherKvs> pmix_connect(PmixView& view) {
  auto client = std::make_unique<PmixClient>();
  view = client->view();
  return client;
}

#else

bool pmix_built() { return false; }

std::unique_ptr<LauncherKvs> pmix_connect(PmixView&) {
  throw Error(ErrorCode::invalid_argument,
              "this build of ringlet has no PMIx (rebuild with -Dpmix=enabled and libpmix-dev)");
}

#endif

}  // namespace ringlet::bootstrap
