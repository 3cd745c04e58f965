// SPDX-License-Identifier: Apache-2.0
// GradientReducer: buckets of gradients reduced asynchronously while backward runs, on a
// dup() of the user's communicator. Above the communicator: it uses only the public
// collectives, plus the bucket size and the timeline lane of its communicator.
//
// Each bucket is one contiguous buffer in the wire type: the gradients' values (prescaled,
// narrowed to 16 bits when compressed), then one "missing" flag per gradient (0 when this
// rank marked it, 1 when it did not). The flags are summed with the values, so after the
// collective every rank sees the same nonzero flag for a gradient that some rank did not
// mark, and all of them then take the same path: one allgather of who marked what, and a
// mismatch naming the gradient and the ranks. Nothing waits for a mark that never comes.
#include <algorithm>
#include <cstring>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "include/ringlet/ringlet.hpp"
#include "src/common/str_cat.hpp"
#include "src/communicator.hpp"
#include "src/reduce/elements.hpp"
#include "src/timeline.hpp"

namespace ringlet {
namespace {

namespace el = reduce::elements;

std::string_view compression_name(Compression c) {
  switch (c) {
    case Compression::none:
      return "none";
    case Compression::float16:
      return "float16";
    case Compression::bfloat16:
      return "bfloat16";
  }
  return "?";
}

std::uint64_t fnv1a64(std::string_view text) {
  std::uint64_t h = 0xcbf29ce484222325ull;
  for (char c : text) {
    h ^= static_cast<unsigned char>(c);
    h *= 0x100000001b3ull;
  }
  return h;
}

// "0", "0 and 2", "0, 2 and 3"
std::string rank_list(const std::vector<int>& ranks) {
  std::string out;
  for (std::size_t i = 0; i < ranks.size(); ++i) {
    if (i > 0) out += i + 1 == ranks.size() ? " and " : ", ";
    out += std::to_string(ranks[i]);
  }
  return out;
}

std::string ranks_phrase(const std::vector<int>& ranks) {
  return str_cat(ranks.size() == 1 ? "rank " : "ranks ", rank_list(ranks));
}

// Reads element i of a buffer of `type` as float (double for float64).
double load(DataType type, const std::byte* p, std::size_t i) {
  switch (type) {
    case DataType::float32: {
      float v;
      std::memcpy(&v, p + i * 4, 4);
      return v;
    }
    case DataType::float64: {
      double v;
      std::memcpy(&v, p + i * 8, 8);
      return v;
    }
    case DataType::float16: {
      std::uint16_t h;
      std::memcpy(&h, p + i * 2, 2);
      return el::half_to_float(h);
    }
    case DataType::bfloat16: {
      std::uint16_t h;
      std::memcpy(&h, p + i * 2, 2);
      return el::bf16_to_float(h);
    }
    default:
      return 0.0;
  }
}

void store(DataType type, std::byte* p, std::size_t i, double v) {
  switch (type) {
    case DataType::float32: {
      const auto f = static_cast<float>(v);
      std::memcpy(p + i * 4, &f, 4);
      break;
    }
    case DataType::float64:
      std::memcpy(p + i * 8, &v, 8);
      break;
    case DataType::float16: {
      const std::uint16_t h = el::float_to_half(static_cast<float>(v));
      std::memcpy(p + i * 2, &h, 2);
      break;
    }
    case DataType::bfloat16: {
      const std::uint16_t h = el::float_to_bf16(static_cast<float>(v));
      std::memcpy(p + i * 2, &h, 2);
      break;
    }
    default:
      break;
  }
}

}  // namespace

class GradientReducer::Impl {
 public:
  Impl(Communicator& parent, const ReducerOptions& options)
      : comm_(parent.dup()), options_(options) {
    bucket_bytes_ =
        options.bucket_bytes != 0 ? options.bucket_bytes : detail::bucket_bytes_of(comm_);
    bucket_bytes_ = std::max<std::size_t>(bucket_bytes_, 64);
    postscale_ = options.postscale != 0.0f ? static_cast<double>(options.postscale)
                                           : 1.0 / static_cast<double>(comm_.size());
    lane_ = detail::timeline_of(comm_);
    if (!(options.prescale == options.prescale) || !(options.postscale == options.postscale)) {
      throw Error(ErrorCode::invalid_argument, "GradientReducer: prescale or postscale is NaN",
                  {comm_.rank()});
    }
  }

  // Buckets still in flight (a step abandoned by an exception) finish, or fail by their
  // deadline, before their buffers go; after an error the communicator is aborted first.
  ~Impl() {
    bool pending = false;
    for (Bucket& b : buckets_) {
      try {
        pending = pending || !b.work.test();
      } catch (...) {
      }
    }
    if (!pending) return;
    if (!failed_.empty()) comm_.abort();
    for (Bucket& b : buckets_) {
      try {
        b.work.wait();
      } catch (...) {
      }
    }
  }
  Impl(const Impl&) = delete;
  Impl& operator=(const Impl&) = delete;

  std::size_t add(std::string name, Tensor t) {
    usable();
    const auto fail = [&](const std::string& why) {
      throw Error(ErrorCode::invalid_argument,
                  str_cat("GradientReducer::add: rank ", rank(), ", gradient '", name, "': ", why),
                  {rank()});
    };
    if (agreed_ || !order_.empty()) fail("gradients are registered before the first step");
    if (name.empty()) fail("the name is empty");
    if (by_name_.count(name) != 0) fail("registered twice");
    if (t.memory != MemoryKind::host) fail("only host memory is supported");
    if (!is_floating(t.type)) fail(str_cat(to_string(t.type), " is not a floating-point type"));
    if (t.count > 0 && t.data == nullptr) fail("null data");
    Grad g;
    g.name = name;
    g.t = t;
    grads_.push_back(std::move(g));
    by_name_.emplace(std::move(name), grads_.size() - 1);
    return grads_.size() - 1;
  }

  void mark_ready(std::string_view name) {
    auto it = by_name_.find(name);
    if (it == by_name_.end()) {
      usable();
      throw Error(ErrorCode::invalid_argument,
                  str_cat("GradientReducer::mark_ready: rank ", rank(), ": no gradient named '",
                          name, "' was registered"),
                  {rank()});
    }
    mark_ready(it->second);
  }

  void mark_ready(std::size_t id) {
    usable();
    if (id >= grads_.size()) {
      throw Error(ErrorCode::invalid_argument,
                  str_cat("GradientReducer::mark_ready: rank ", rank(), ": index ", id,
                          " is not a registered gradient (", grads_.size(), " registered)"),
                  {rank()});
    }
    Grad& g = grads_[id];
    if (g.marked) {
      throw Error(ErrorCode::invalid_argument,
                  str_cat("GradientReducer::mark_ready: rank ", rank(), ": gradient '", g.name,
                          "' marked twice in step ", step_ + 1),
                  {rank()});
    }
    g.marked = true;
    if (!agreed_) {
      order_.push_back(id);  // the first step: only the order is recorded
      return;
    }
    guarded([&] {
      pack(id);
      Bucket& b = buckets_[g.bucket];
      --b.pending;
      issue_ready();
    });
  }

  void wait() {
    usable();
    const long long t0 = lane_ != nullptr ? timeline::now_ns() : 0;
    guarded([&] {
      if (!agreed_) agree();
      // Buckets not yet issued carry their unmarked gradients as zeros flagged missing.
      for (; next_issue_ < buckets_.size(); ++next_issue_) {
        Bucket& b = buckets_[next_issue_];
        for (std::size_t id : b.members) {
          if (!grads_[id].marked) pack(id);
        }
        issue(next_issue_);
      }
      bool missing = false;
      for (std::size_t k = 0; k < buckets_.size(); ++k) {
        Bucket& b = buckets_[k];
        b.work.wait();
        const long long u0 = lane_ != nullptr ? timeline::now_ns() : 0;
        for (std::size_t slot = 0; slot < b.members.size(); ++slot) {
          if (load(b.wire, b.buf.data(), b.elems + slot) != 0.0) missing = true;
        }
        if (!missing) {
          for (std::size_t id : b.members) unpack(id);
        }
        if (lane_ != nullptr) {
          lane_->span(str_cat("bucket ", k, " unpack"), "reducer", u0, timeline::now_ns(),
                      str_cat("\"step\": ", step_ + 1));
        }
      }
      if (missing) name_missing();
    });
    for (Grad& g : grads_) g.marked = false;
    for (Bucket& b : buckets_) b.pending = b.members.size();
    next_issue_ = 0;
    ++step_;
    if (lane_ != nullptr) {
      lane_->span("reducer wait", "reducer", t0, timeline::now_ns(),
                  str_cat("\"step\": ", step_, ", \"buckets\": ", buckets_.size()));
    }
  }

  void broadcast_parameters(std::span<const Tensor> parameters, int root) {
    usable();
    std::vector<Work> works;
    guarded([&] {
      for (const Tensor& p : parameters) works.push_back(comm_.broadcast_async(p, root));
      for (Work& w : works) w.wait();
    });
  }

  int rank() const noexcept { return comm_.rank(); }
  int size() const noexcept { return comm_.size(); }
  std::uint64_t steps() const noexcept { return step_; }
  std::size_t bucket_count() const noexcept { return buckets_.size(); }
  std::size_t bucket_bytes() const noexcept { return bucket_bytes_; }

 private:
  struct Grad {
    std::string name;
    Tensor t;
    bool marked = false;
    std::size_t canon = 0;   // position in the name-sorted list, the same on every rank
    std::size_t bucket = 0;  // its bucket, its position there, its first element
    std::size_t slot = 0;
    std::size_t offset = 0;
  };
  struct Bucket {
    DataType wire = DataType::float32;
    std::vector<std::size_t> members;
    std::size_t elems = 0;  // values; the flags follow
    std::vector<std::byte> buf;
    std::size_t pending = 0;  // members not yet packed this step
    Work work;
  };

  DataType wire_type(DataType t) const {
    if (t != DataType::float32) return t;
    switch (options_.compression) {
      case Compression::float16:
        return DataType::float16;
      case Compression::bfloat16:
        return DataType::bfloat16;
      case Compression::none:
        break;
    }
    return t;
  }

  // Runs `f`; any ringlet::Error leaves the reducer unusable and is rethrown.
  template <class F>
  void guarded(F&& f) {
    try {
      f();
    } catch (const Error& e) {
      failed_ = e.what();
      throw;
    }
  }

  void usable() const {
    if (!failed_.empty()) {
      throw Error(
          ErrorCode::aborted,
          str_cat("GradientReducer: rank ", rank(), ": unusable after an earlier error: ", failed_),
          {rank()});
    }
  }

  // The first step: the ranks compare what they registered, then take rank 0's order of
  // readiness as the bucket order.
  void agree() {
    const std::size_t n = grads_.size();
    std::vector<std::size_t> sorted(n);
    for (std::size_t i = 0; i < n; ++i) sorted[i] = i;
    std::sort(sorted.begin(), sorted.end(),
              [&](std::size_t a, std::size_t b) { return grads_[a].name < grads_[b].name; });
    std::string text = str_cat("options bucket_bytes=", bucket_bytes_,
                               " compression=", compression_name(options_.compression),
                               " prescale=", options_.prescale, " postscale=", postscale_, "\n");
    for (std::size_t c = 0; c < n; ++c) {
      const Grad& g = grads_[sorted[c]];
      grads_[sorted[c]].canon = c;
      text += str_cat(g.name, "\t", g.t.count, "\t", to_string(g.t.type), "\n");
    }
    const int nr = size();
    std::int64_t mine = static_cast<std::int64_t>(fnv1a64(text));
    std::vector<std::int64_t> digests(static_cast<std::size_t>(nr));
    comm_.allgather(Tensor::of(std::span(&mine, 1)), Tensor::of(std::span(digests)));
    if (std::any_of(digests.begin(), digests.end(),
                    [&](std::int64_t d) { return d != digests[0]; })) {
      explain_registration(text);
    }
    // Rank 0's order: what became ready first goes into the first bucket; gradients it did
    // not mark follow in name order.
    std::vector<std::int32_t> order(n);
    if (rank() == 0) {
      std::vector<bool> seen(n, false);
      std::size_t k = 0;
      for (std::size_t id : order_) {
        order[k++] = static_cast<std::int32_t>(grads_[id].canon);
        seen[grads_[id].canon] = true;
      }
      for (std::size_t c = 0; c < n; ++c) {
        if (!seen[c]) order[k++] = static_cast<std::int32_t>(c);
      }
    }
    if (n > 0) comm_.broadcast(Tensor::of(std::span(order)), 0);
    std::vector<std::size_t> by_canon(n);
    for (std::size_t i = 0; i < n; ++i) by_canon[grads_[i].canon] = i;
    // Buckets in that order: each of one wire type, at most bucket_bytes_ of gradient
    // (a larger gradient alone).
    std::size_t used = 0;
    for (std::size_t k = 0; k < n; ++k) {
      const auto c = static_cast<std::size_t>(order[k]);
      if (c >= n) {
        throw Error(
            ErrorCode::mismatch,
            str_cat("GradientReducer: rank 0 sent a bucket order naming gradient #", c, " of ", n),
            {0, rank()});
      }
      const std::size_t id = by_canon[c];
      Grad& g = grads_[id];
      const DataType w = wire_type(g.t.type);
      const std::size_t b = g.t.bytes();
      if (buckets_.empty() || buckets_.back().wire != w || used + b > bucket_bytes_) {
        if (buckets_.empty() || !buckets_.back().members.empty()) buckets_.emplace_back();
        buckets_.back().wire = w;
        used = 0;
      }
      Bucket& bk = buckets_.back();
      g.bucket = buckets_.size() - 1;
      g.slot = bk.members.size();
      g.offset = bk.elems;
      bk.members.push_back(id);
      bk.elems += g.t.count;
      used += b;
    }
    for (Bucket& bk : buckets_) {
      bk.buf.assign((bk.elems + bk.members.size()) * size_of(bk.wire), std::byte{0});
      bk.pending = bk.members.size();
    }
    agreed_ = true;
    // This step's marked gradients, packed now.
    for (std::size_t id = 0; id < n; ++id) {
      if (grads_[id].marked) pack(id);
    }
  }

  // The registrations differ somewhere: every rank gathers every rank's text and names the
  // first gradient (in name order) on which they differ, the same message on every rank.
  [[noreturn]] void explain_registration(const std::string& text) {
    const int nr = size();
    std::int64_t len = static_cast<std::int64_t>(text.size());
    std::vector<std::int64_t> lens(static_cast<std::size_t>(nr));
    comm_.allgather(Tensor::of(std::span(&len, 1)), Tensor::of(std::span(lens)));
    const auto longest = static_cast<std::size_t>(*std::max_element(lens.begin(), lens.end()));
    std::vector<std::uint8_t> padded(longest, 0);
    std::memcpy(padded.data(), text.data(), text.size());
    std::vector<std::uint8_t> all(longest * static_cast<std::size_t>(nr));
    comm_.allgather(Tensor::of(std::span(padded)), Tensor::of(std::span(all)));
    // Per rank: the options line and name -> "count type".
    std::vector<std::string> opts(static_cast<std::size_t>(nr));
    std::vector<std::map<std::string, std::string>> regs(static_cast<std::size_t>(nr));
    std::map<std::string, int> names;
    for (int r = 0; r < nr; ++r) {
      const auto ru = static_cast<std::size_t>(r);
      std::string t(reinterpret_cast<const char*>(all.data() + ru * longest),
                    static_cast<std::size_t>(lens[ru]));
      std::size_t pos = 0;
      bool first = true;
      while (pos < t.size()) {
        std::size_t nl = t.find('\n', pos);
        if (nl == std::string::npos) nl = t.size();
        std::string line = t.substr(pos, nl - pos);
        pos = nl + 1;
        if (first) {
          opts[ru] = line;
          first = false;
          continue;
        }
        const std::size_t tab = line.find('\t');
        std::string name = line.substr(0, tab);
        std::string rest = tab == std::string::npos ? std::string() : line.substr(tab + 1);
        std::replace(rest.begin(), rest.end(), '\t', ' ');
        regs[ru][name] = rest;
        names[name] = 0;
      }
    }
    // Groups of ranks by what they hold for one key.
    auto describe_groups = [&](auto value_of, const char* absent) {
      std::map<std::string, std::vector<int>> groups;
      for (int r = 0; r < nr; ++r) groups[value_of(r)].push_back(r);
      // The ranks named: all but those of the largest group.
      auto largest = groups.begin();
      for (auto it = groups.begin(); it != groups.end(); ++it) {
        if (it->second.size() > largest->second.size()) largest = it;
      }
      std::string out;
      std::vector<int> others;
      for (auto& [v, rs] : groups) {
        if (!out.empty()) out += "; ";
        out += v.empty() ? str_cat(absent, " on ", ranks_phrase(rs))
                         : str_cat(v, " on ", ranks_phrase(rs));
        if (&rs != &largest->second) others.insert(others.end(), rs.begin(), rs.end());
      }
      std::sort(others.begin(), others.end());
      return std::make_pair(out, others);
    };
    for (const auto& entry : names) {
      const auto& name = entry.first;  // not a binding: clang before 16 cannot capture one
      bool same = true;
      for (int r = 1; r < nr && same; ++r) {
        auto a = regs[0].find(name);
        auto b = regs[static_cast<std::size_t>(r)].find(name);
        same = (a == regs[0].end()) == (b == regs[static_cast<std::size_t>(r)].end()) &&
               (a == regs[0].end() || a->second == b->second);
      }
      if (same) continue;
      auto [what, ranks] = describe_groups(
          [&](int r) {
            auto it = regs[static_cast<std::size_t>(r)].find(name);
            return it == regs[static_cast<std::size_t>(r)].end() ? std::string()
                                                                 : "registered with " + it->second;
          },
          "not registered");
      throw Error(ErrorCode::mismatch,
                  str_cat("GradientReducer: the ranks registered different gradients: gradient '",
                          name, "' is ", what),
                  ranks);
    }
    auto [what, ranks] =
        describe_groups([&](int r) { return opts[static_cast<std::size_t>(r)].substr(8); }, "none");
    throw Error(ErrorCode::mismatch,
                str_cat("GradientReducer: the ranks use different options: ", what), ranks);
  }

  // A gradient some rank did not mark this step: who marked what, then a mismatch.
  [[noreturn]] void name_missing() {
    const std::size_t n = grads_.size();
    const int nr = size();
    std::vector<std::uint8_t> marks(n, 0);
    for (const Grad& g : grads_) marks[g.canon] = g.marked ? 1 : 0;
    std::vector<std::uint8_t> all(n * static_cast<std::size_t>(nr));
    comm_.allgather(Tensor::of(std::span(marks)), Tensor::of(std::span(all)));
    std::vector<std::size_t> by_canon(n);
    for (std::size_t i = 0; i < n; ++i) by_canon[grads_[i].canon] = i;
    std::string first;
    std::vector<int> first_missing;
    std::size_t count = 0;
    for (std::size_t c = 0; c < n; ++c) {
      std::vector<int> yes;
      std::vector<int> no;
      for (int r = 0; r < nr; ++r) {
        (all[static_cast<std::size_t>(r) * n + c] != 0 ? yes : no).push_back(r);
      }
      if (no.empty()) continue;
      if (count++ == 0) {
        first = yes.empty()
                    ? str_cat("gradient '", grads_[by_canon[c]].name,
                              "' was not marked ready on any rank")
                    : str_cat("gradient '", grads_[by_canon[c]].name, "' was marked ready on ",
                              ranks_phrase(yes), " but not on ", ranks_phrase(no));
        first_missing = no;
      }
    }
    throw Error(ErrorCode::mismatch,
                str_cat("GradientReducer step ", step_ + 1, ": ", first,
                        count > 1 ? str_cat(" (and ", count - 1, " more gradients)") : "",
                        "; every rank must mark every registered gradient each step"),
                first_missing);
  }

  void issue_ready() {
    while (next_issue_ < buckets_.size() && buckets_[next_issue_].pending == 0) {
      issue(next_issue_++);
    }
  }

  void issue(std::size_t k) {
    Bucket& b = buckets_[k];
    const long long t0 = lane_ != nullptr ? timeline::now_ns() : 0;
    b.work = comm_.allreduce_async(Tensor{b.buf.data(), b.elems + b.members.size(), b.wire},
                                   ReduceOp::sum);
    if (lane_ != nullptr) {
      lane_->span(str_cat("bucket ", k, " issue"), "reducer", t0, timeline::now_ns(),
                  str_cat("\"step\": ", step_ + 1, ", \"bytes\": ", b.buf.size(),
                          ", \"gradients\": ", b.members.size()));
    }
  }

  // Copies (prescaled, narrowed) a gradient into its bucket and sets its flag; an unmarked
  // gradient travels as zeros flagged missing.
  void pack(std::size_t id) {
    const Grad& g = grads_[id];
    Bucket& b = buckets_[g.bucket];
    const long long t0 = lane_ != nullptr ? timeline::now_ns() : 0;
    const std::size_t wsize = size_of(b.wire);
    std::byte* dst = b.buf.data() + g.offset * wsize;
    const auto* src = static_cast<const std::byte*>(g.t.data);
    const double pre = options_.prescale;
    if (!g.marked) {
      std::memset(dst, 0, g.t.count * wsize);
    } else if (b.wire == g.t.type && pre == 1.0) {
      if (g.t.count > 0) std::memcpy(dst, src, g.t.bytes());
    } else if (g.t.type == DataType::float32) {
      const auto* s = static_cast<const float*>(g.t.data);
      const auto p = static_cast<float>(pre);
      if (b.wire == DataType::float32) {
        auto* d = reinterpret_cast<float*>(dst);
        for (std::size_t i = 0; i < g.t.count; ++i) d[i] = s[i] * p;
      } else if (b.wire == DataType::float16) {
        auto* d = reinterpret_cast<std::uint16_t*>(dst);
        for (std::size_t i = 0; i < g.t.count; ++i) d[i] = el::float_to_half(s[i] * p);
      } else {
        auto* d = reinterpret_cast<std::uint16_t*>(dst);
        for (std::size_t i = 0; i < g.t.count; ++i) d[i] = el::float_to_bf16(s[i] * p);
      }
    } else {
      for (std::size_t i = 0; i < g.t.count; ++i) {
        store(b.wire, dst, i, load(g.t.type, src, i) * pre);
      }
    }
    store(b.wire, b.buf.data(), b.elems + g.slot, g.marked ? 0.0 : 1.0);
    if (lane_ != nullptr) {
      lane_->span(str_cat("pack ", g.name), "reducer", t0, timeline::now_ns(),
                  str_cat("\"step\": ", step_ + 1, ", \"bucket\": ", g.bucket));
    }
  }

  // Writes postscale * (the bucket's sum) back into the gradient.
  void unpack(std::size_t id) {
    const Grad& g = grads_[id];
    const Bucket& b = buckets_[g.bucket];
    const std::byte* src = b.buf.data() + g.offset * size_of(b.wire);
    auto* dst = static_cast<std::byte*>(g.t.data);
    if (g.t.type == DataType::float32) {
      auto* d = static_cast<float*>(g.t.data);
      const auto post = static_cast<float>(postscale_);
      if (b.wire == DataType::float32) {
        const auto* s = reinterpret_cast<const float*>(src);
        for (std::size_t i = 0; i < g.t.count; ++i) d[i] = s[i] * post;
      } else {
        const auto* s = reinterpret_cast<const std::uint16_t*>(src);
        if (b.wire == DataType::float16) {
          for (std::size_t i = 0; i < g.t.count; ++i) d[i] = el::half_to_float(s[i]) * post;
        } else {
          for (std::size_t i = 0; i < g.t.count; ++i) d[i] = el::bf16_to_float(s[i]) * post;
        }
      }
      return;
    }
    for (std::size_t i = 0; i < g.t.count; ++i) {
      store(g.t.type, dst, i, load(b.wire, src, i) * postscale_);
    }
  }

  Communicator comm_;
  ReducerOptions options_;
  std::size_t bucket_bytes_ = 0;
  double postscale_ = 1.0;
  timeline::Lane* lane_ = nullptr;
  std::vector<Grad> grads_;
  std::map<std::string, std::size_t, std::less<>> by_name_;
  std::vector<std::size_t> order_;  // the first step's order of readiness on this rank
  bool agreed_ = false;
  std::vector<Bucket> buckets_;
  std::size_t next_issue_ = 0;
  std::uint64_t step_ = 0;
  std::string failed_;
};

GradientReducer::GradientReducer(Communicator& comm, const ReducerOptions& options)
    : impl_(std::make_unique<Impl>(comm, options)) {}
GradientReducer::GradientReducer(GradientReducer&&) noexcept = default;
GradientReducer& GradientReducer::operator=(GradientReducer&&) noexcept = default;
GradientReducer::~GradientReducer() = default;

std::size_t GradientReducer::add(std::string name, Tensor gradient) {
  return impl_->add(std::move(name), gradient);
}
void GradientReducer::mark_ready(std::string_view name) { impl_->mark_ready(name); }
void GradientReducer::mark_ready(std::size_t index) { impl_->mark_ready(index); }
void GradientReducer::wait() { impl_->wait(); }
void GradientReducer::broadcast_parameters(std::span<const Tensor> parameters, int root) {
  impl_->broadcast_parameters(parameters, root);
}
int GradientReducer::rank() const noexcept { return impl_->rank(); }
int GradientReducer::size() const noexcept { return impl_->size(); }
std::uint64_t GradientReducer::steps() const noexcept { return impl_->steps(); }
std::size_t GradientReducer::bucket_count() const noexcept { return impl_->bucket_count(); }
std::size_t GradientReducer::bucket_bytes() const noexcept { return impl_->bucket_bytes(); }

}  // namespace ringlet
