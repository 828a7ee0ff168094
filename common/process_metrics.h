// The metrics every process exports besides its own: the standard process_* metrics (what the
// Prometheus Go and Python clients export; prometheus-cpp has no process collector, so they are
// read from /proc), and engram_build_info.
//
//   process_cpu_seconds_total          counter  user + system CPU time
//   process_resident_memory_bytes      gauge    resident set size
//   process_virtual_memory_bytes       gauge    virtual memory size
//   process_open_fds, process_max_fds  gauges   open file descriptors and their limit
//   process_start_time_seconds         gauge    start time, seconds since the Unix epoch
//   engram_build_info{component, version, revision}  gauge = 1
//
// MetricsServer (common/metrics_server.h) owns one ProcessMetrics and updates it before each
// scrape, so both servers export them without further wiring.
#ifndef ENGRAM_COMMON_PROCESS_METRICS_H_
#define ENGRAM_COMMON_PROCESS_METRICS_H_

#include <mutex>

#include "prometheus/counter.h"
#include "prometheus/gauge.h"
#include "prometheus/registry.h"

namespace engram {

class ProcessMetrics {
 public:
  explicit ProcessMetrics(prometheus::Registry& registry);
  // Reads /proc/self and sets the metrics. Thread-safe.
  void Update();

 private:
  std::mutex mu_;
  double cpu_seconds_ = 0;  // what cpu_ already counts
  prometheus::Counter& cpu_;
  prometheus::Gauge& rss_;
  prometheus::Gauge& vsize_;
  prometheus::Gauge& open_fds_;
  prometheus::Gauge& max_fds_;
  prometheus::Gauge& start_time_;
};

// The version of this build (the CMake project version) and its git revision ("unknown" when the
// source was not a git checkout at configure time).
const char* BuildVersion();
const char* BuildRevision();

// Registers engram_build_info{component=`component`, version, revision} = 1 in `registry`.
void AddBuildInfo(prometheus::Registry& registry, const char* component);

}  // namespace engram

#endif  // ENGRAM_COMMON_PROCESS_METRICS_H_
