#include "common/process_metrics.h"

#include <sys/resource.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "common/metrics_server.h"

#ifndef ENGRAM_VERSION
#define ENGRAM_VERSION "unknown"
#endif
#ifndef ENGRAM_GIT_REVISION
#define ENGRAM_GIT_REVISION "unknown"
#endif

namespace engram {
namespace {

// Boot time in seconds since the epoch (/proc/stat "btime").
double BootTime() {
  std::ifstream in("/proc/stat");
  std::string key;
  while (in >> key) {
    if (key == "btime") {
      double t = 0;
      in >> t;
      return t;
    }
    std::string rest;
    std::getline(in, rest);
  }
  return 0;
}

}  // namespace

ProcessMetrics::ProcessMetrics(prometheus::Registry& r)
    : cpu_(AddCounter(r, "process_cpu_seconds_total", "Total user and system CPU time spent in seconds.")),
      rss_(AddGauge(r, "process_resident_memory_bytes", "Resident memory size in bytes.")),
      vsize_(AddGauge(r, "process_virtual_memory_bytes", "Virtual memory size in bytes.")),
      open_fds_(AddGauge(r, "process_open_fds", "Number of open file descriptors.")),
      max_fds_(AddGauge(r, "process_max_fds", "Maximum number of open file descriptors.")),
      start_time_(AddGauge(r, "process_start_time_seconds",
                           "Start time of the process since unix epoch in seconds.")) {
  Update();
}

void ProcessMetrics::Update() {
  std::lock_guard<std::mutex> lock(mu_);
  static const double ticks = static_cast<double>(sysconf(_SC_CLK_TCK));
  static const double page = static_cast<double>(sysconf(_SC_PAGESIZE));
  std::ifstream in("/proc/self/stat");
  std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  // Fields after the command name (which may hold spaces and parentheses): state is field 3.
  const size_t close = stat.rfind(')');
  if (close != std::string::npos) {
    std::istringstream fields(stat.substr(close + 2));
    std::vector<std::string> f;
    std::string x;
    while (fields >> x) f.push_back(x);
    // f[0] is field 3 (state): field k is f[k - 3].
    if (f.size() > 21) {
      const double cpu = (std::stod(f[14 - 3]) + std::stod(f[15 - 3])) / ticks;
      if (cpu > cpu_seconds_) {
        cpu_.Increment(cpu - cpu_seconds_);
        cpu_seconds_ = cpu;
      }
      static const double start = BootTime() + std::stod(f[22 - 3]) / ticks;
      start_time_.Set(start);
      vsize_.Set(std::stod(f[23 - 3]));
      rss_.Set(std::stod(f[24 - 3]) * page);
    }
  }
  std::error_code ec;
  int fds = 0;
  for (auto it = std::filesystem::directory_iterator("/proc/self/fd", ec);
       !ec && it != std::filesystem::directory_iterator(); it.increment(ec)) {
    ++fds;
  }
  open_fds_.Set(fds);
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) == 0) {
    max_fds_.Set(limit.rlim_cur == RLIM_INFINITY ? -1 : static_cast<double>(limit.rlim_cur));
  }
}

const char* BuildVersion() { return ENGRAM_VERSION; }
const char* BuildRevision() { return ENGRAM_GIT_REVISION; }

void AddBuildInfo(prometheus::Registry& registry, const char* component) {
  prometheus::BuildGauge()
      .Name("engram_build_info")
      .Help("1, labelled with the component, version and git revision of this build.")
      .Register(registry)
      .Add({{"component", component}, {"version", BuildVersion()}, {"revision", BuildRevision()}})
      .Set(1);
}

}  // namespace engram
