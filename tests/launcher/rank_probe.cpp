// SPDX-License-Identifier: Apache-2.0
// rank_probe: a tiny program that ringlet-run starts in the launcher tests; one mode per test.
#include <arpa/inet.h>
#include <ifaddrs.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

namespace {

std::string env_or(const char* name, const char* fallback = "(unset)") {
  const char* v = std::getenv(name);
  return v != nullptr ? v : fallback;
}

int my_rank() { return std::atoi(env_or("RINGLET_RANK", "-1").c_str()); }

// One line with everything the launcher sets, in "key=value" form.
std::string describe() {
  char host[256] = {};
  ::gethostname(host, sizeof host - 1);
  std::string ips;
  ifaddrs* list = nullptr;
  if (::getifaddrs(&list) == 0) {
    for (ifaddrs* a = list; a != nullptr; a = a->ifa_next) {
      if (a->ifa_addr == nullptr || a->ifa_addr->sa_family != AF_INET) continue;
      char text[INET_ADDRSTRLEN] = {};
      ::inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in*>(a->ifa_addr)->sin_addr, text,
                  sizeof text);
      if (std::strncmp(text, "127.", 4) == 0) continue;
      ips += ips.empty() ? "" : ",";
      ips += text;
    }
    ::freeifaddrs(list);
  }
  return "rank=" + env_or("RINGLET_RANK") + " size=" + env_or("RINGLET_SIZE") +
         " local_rank=" + env_or("RINGLET_LOCAL_RANK") +
         " local_size=" + env_or("RINGLET_LOCAL_SIZE") + " addr=" + env_or("RINGLET_ADDR") +
         " job=" + env_or("RINGLET_JOB_ID") + " node=" + env_or("RINGLET_NODE_ID") +
         " probe_x=" + env_or("PROBE_X") + " secret=" + env_or("RINGLET_SECRET") +
         " secret_file=" + env_or("RINGLET_SECRET_FILE") + " host=" + host +
         " ips=" + (ips.empty() ? "-" : ips) + " pid=" + std::to_string(::getpid()) + "\n";
}

void write_str(int fd, const std::string& s) {
  std::size_t done = 0;
  while (done < s.size()) {
    ssize_t n = ::write(fd, s.data() + done, s.size() - done);
    if (n <= 0) return;
    done += static_cast<std::size_t>(n);
  }
}

void sleep_long() {
  for (int i = 0; i < 600; ++i) ::usleep(100000);  // 60 s, then give up
}

// rendezvous: rank 0 listens on RINGLET_ADDR's port, every other rank connects to
// RINGLET_ADDR and sends its rank; each step gives up after 10 s. Exit 0 when all arrived.
int rendezvous(int rank) {
  using Clock = std::chrono::steady_clock;
  auto deadline = Clock::now() + std::chrono::seconds(10);
  std::string addr = env_or("RINGLET_ADDR", "");
  std::size_t colon = addr.rfind(':');
  if (colon == std::string::npos) return 65;
  std::string host = addr.substr(0, colon);
  int port = std::atoi(addr.c_str() + colon + 1);
  int size = std::atoi(env_or("RINGLET_SIZE", "0").c_str());
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(static_cast<std::uint16_t>(port));
  if (rank == 0) {
    int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sa.sin_addr.s_addr = htonl(INADDR_ANY);
    if (::bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0 || ::listen(fd, 64) != 0) {
      std::perror("rank_probe: bind/listen");
      return 66;
    }
    for (int got = 1; got < size; ++got) {
      pollfd p{fd, POLLIN, 0};
      if (::poll(&p, 1, 10000) != 1) return 67;
      int c = ::accept(fd, nullptr, nullptr);
      int peer = -1;
      if (c < 0 || ::recv(c, &peer, sizeof peer, MSG_WAITALL) != sizeof peer) return 68;
      std::printf("rank 0 accepted rank %d\n", peer);
      std::fflush(stdout);
      ::close(c);
    }
    return 0;
  }
  if (::inet_pton(AF_INET, host.c_str(), &sa.sin_addr) != 1) return 69;
  while (Clock::now() < deadline) {
    int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    if (::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0) {
      bool sent = ::send(fd, &rank, sizeof rank, 0) == sizeof rank;
      ::close(fd);
      return sent ? 0 : 70;
    }
    ::close(fd);
    ::usleep(50000);  // rank 0 is not listening yet
  }
  std::fprintf(stderr, "rank_probe: rank %d could not connect to %s\n", rank, addr.c_str());
  return 71;
}

}  // namespace

int main(int argc, char** argv) {
  std::string mode = argc > 1 ? argv[1] : "env";
  int rank = my_rank();
  if (mode == "env") {
    write_str(1, describe());
    return 0;
  }
  if (mode == "exit" && argc > 3) {  // exit RANK CODE: that rank fails, the others wait
    if (rank == std::atoi(argv[2])) {
      ::usleep(200000);
      return std::atoi(argv[3]);
    }
    sleep_long();
    return 0;
  }
  if (mode == "signal" && argc > 3) {  // signal RANK SIG: that rank dies of SIG
    if (rank == std::atoi(argv[2])) {
      ::usleep(200000);
      ::signal(std::atoi(argv[3]), SIG_DFL);
      ::raise(std::atoi(argv[3]));
    }
    sleep_long();
    return 0;
  }
  if (mode == "sleep" && argc > 2) {
    ::usleep(static_cast<useconds_t>(std::atof(argv[2]) * 1e6));
    return 0;
  }
  if (mode == "lines" && argc > 2) {  // lines N: each line in three writes, both streams
    int n = std::atoi(argv[2]);
    std::string payload(100 + 13 * rank, static_cast<char>('a' + rank));
    for (int i = 0; i < n; ++i) {
      for (int fd : {1, 2}) {
        write_str(fd, "rank " + std::to_string(rank) + " line ");
        write_str(fd, std::to_string(i) + " " + payload.substr(0, payload.size() / 2));
        write_str(fd, payload.substr(payload.size() / 2) + "\n");
      }
    }
    return 0;
  }
  if (mode == "partial") {  // a last line without its newline on both streams
    write_str(1, "whole line\nno newline from " + std::to_string(rank));
    write_str(2, "err tail " + std::to_string(rank));
    return 0;
  }
  if (mode == "rendezvous") return rendezvous(rank);
  if (mode == "stubborn" && argc > 3) {  // stubborn RANK CODE: the others ignore SIGTERM
    if (rank == std::atoi(argv[2])) {
      ::usleep(300000);
      return std::atoi(argv[3]);
    }
    ::signal(SIGTERM, SIG_IGN);
    ::signal(SIGINT, SIG_IGN);
    sleep_long();
    return 0;
  }
  if (mode == "orphan" && argc > 2) {  // orphan DIR: leave a sleeping child behind, exit 0
    std::string path = std::string(argv[2]) + "/rank" + std::to_string(rank) + ".pid";
    if (::fork() == 0) {
      std::string tmp = path + ".tmp";
      if (FILE* f = std::fopen(tmp.c_str(), "w")) {
        std::fprintf(f, "%d\n", static_cast<int>(::getpid()));
        std::fclose(f);
        std::rename(tmp.c_str(), path.c_str());
      }
      sleep_long();  // keeps the inherited stdout and stderr open
      ::_exit(0);
    }
    for (int i = 0; i < 100 && ::access(path.c_str(), F_OK) != 0; ++i) ::usleep(20000);
    return 0;
  }
  if (mode == "longline" && argc > 2) {  // longline N: one line of N 'x', then "end\n"
    write_str(1, std::string(static_cast<std::size_t>(std::atol(argv[2])), 'x') + "\nend\n");
    return 0;
  }
  if (mode == "pidfile" && argc > 2) {  // pidfile DIR: announce the pid, then wait
    std::string path = std::string(argv[2]) + "/rank" + std::to_string(rank) + ".pid";
    std::string tmp = path + ".tmp";
    if (FILE* f = std::fopen(tmp.c_str(), "w")) {
      std::fprintf(f, "%d\n", static_cast<int>(::getpid()));
      std::fclose(f);
      std::rename(tmp.c_str(), path.c_str());
    }
    sleep_long();
    return 0;
  }
  std::fprintf(stderr, "rank_probe: unknown mode '%s'\n", mode.c_str());
  return 64;
}
