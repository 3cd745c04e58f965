// SPDX-License-Identifier: Apache-2.0
// The timeline's recorder: one per process and rank file, shared by the lanes of that rank's
// communicators, written when the last of them ends.
#include "src/timeline.hpp"

#include <chrono>
#include <cstdio>
#include <map>
#include <mutex>
#include <utility>
#include <vector>

#include "src/common/log.hpp"
#include "src/common/str_cat.hpp"

namespace ringlet::timeline {

long long now_ns() noexcept {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

std::string json_escape(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof(buf), "\\u%04x", static_cast<unsigned>(c));
          out += buf;
        } else {
          out += c;
        }
    }
  }
  return out;
}

// Holds the rendered events of one rank; writes them at destruction. Bounded: past
// kMaxEvents further events are counted, not kept.
class Recorder {
 public:
  static constexpr std::size_t kMaxEvents = std::size_t{1} << 21;

  Recorder(std::string file, int rank) : file_(std::move(file)), rank_(rank) {
    // The offset of the steady clock from the Unix epoch, so that the merge can align the
    // files of ranks on different machines (to the accuracy of their system clocks).
    const long long sys = std::chrono::duration_cast<std::chrono::nanoseconds>(
                              std::chrono::system_clock::now().time_since_epoch())
                              .count();
    offset_ns_ = sys - now_ns();
  }
  ~Recorder() { write(); }

  void add(std::string event) {
    std::lock_guard lock(mutex_);
    if (events_.size() >= kMaxEvents) {
      ++dropped_;
      return;
    }
    events_.push_back(std::move(event));
  }

 private:
  void write() noexcept {
    try {
      std::FILE* f = std::fopen(file_.c_str(), "w");
      if (f == nullptr) {
        RINGLET_LOG(warn, "RINGLET_TIMELINE: cannot write ", file_);
        return;
      }
      std::fprintf(f,
                   "{\"ringlet_timeline\": 1, \"rank\": %d, \"steady_to_unix_ns\": %lld, "
                   "\"dropped\": %zu, \"events\": [\n",
                   rank_, offset_ns_, dropped_);
      for (std::size_t i = 0; i < events_.size(); ++i) {
        std::fputs(events_[i].c_str(), f);
        std::fputs(i + 1 < events_.size() ? ",\n" : "\n", f);
      }
      std::fputs("]}\n", f);
      std::fclose(f);
    } catch (...) {
    }
  }

  std::string file_;
  int rank_;
  long long offset_ns_ = 0;
  std::mutex mutex_;
  std::vector<std::string> events_;
  std::size_t dropped_ = 0;
};

namespace {

std::mutex registry_mutex;
std::map<std::string, std::weak_ptr<Recorder>>& registry() {
  static auto* r = new std::map<std::string, std::weak_ptr<Recorder>>;
  return *r;
}

std::string render(std::string_view lane, std::string_view name, std::string_view category,
                   long long begin_ns, long long end_ns, const std::string& args) {
  char times[96];
  std::snprintf(times, sizeof(times), "\"ts_ns\": %lld, \"dur_ns\": %lld", begin_ns,
                end_ns > begin_ns ? end_ns - begin_ns : 0);
  return str_cat("{\"lane\": \"", json_escape(lane), "\", \"name\": \"", json_escape(name),
                 "\", \"cat\": \"", json_escape(category), "\", ", times, ", \"args\": {", args,
                 "}}");
}

}  // namespace

Lane::Lane(const std::string& path, int rank, std::string label) : label_(std::move(label)) {
  try {
    const std::string file = str_cat(path, ".", rank, ".json");
    std::lock_guard lock(registry_mutex);
    auto& slot = registry()[file];
    recorder_ = slot.lock();
    if (!recorder_) {
      recorder_ = std::make_shared<Recorder>(file, rank);
      slot = recorder_;
    }
  } catch (...) {
    recorder_.reset();
  }
}

Lane::~Lane() {
  if (open_) end("not finished");
  std::lock_guard lock(registry_mutex);
  recorder_.reset();
}

void Lane::begin(std::string_view name, std::string args, long long start_ns) noexcept {
  if (open_) end("superseded");
  try {
    name_ = name;
    args_ = std::move(args);
    start_ns_ = start_ns;
    phase_.clear();
    open_ = true;
  } catch (...) {
  }
}

void Lane::phase(std::string_view phase) noexcept {
  if (!open_ || !recorder_) return;
  try {
    const long long now = now_ns();
    if (!phase_.empty()) {
      recorder_->add(render(label_, phase_, "phase", phase_start_ns_, now, {}));
    }
    phase_ = phase;
    phase_start_ns_ = now;
  } catch (...) {
  }
}

void Lane::end(std::string_view outcome) noexcept {
  if (!open_) return;
  open_ = false;
  if (!recorder_) return;
  try {
    const long long now = now_ns();
    if (!phase_.empty()) {
      recorder_->add(render(label_, phase_, "phase", phase_start_ns_, now, {}));
    }
    phase_.clear();
    std::string args = args_;
    if (!args.empty()) args += ", ";
    args += str_cat("\"outcome\": \"", json_escape(outcome), "\"");
    recorder_->add(render(label_, name_, "collective", start_ns_, now, args));
  } catch (...) {
  }
}

void Lane::span(std::string_view name, std::string_view category, long long begin_ns,
                long long end_ns, std::string args) noexcept {
  if (!recorder_) return;
  try {
    recorder_->add(render(label_, name, category, begin_ns, end_ns, args));
  } catch (...) {
  }
}

}  // namespace ringlet::timeline
