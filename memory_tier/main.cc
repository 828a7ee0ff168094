// engram-memory: the memory tier. Serves the Engram tables of a store written by
// `engram table import` over engram.v1.MemoryTier (docs/memory-tier.md).
//
//   engram-memory --store DIR [--listen ADDR] [--metrics-port P] [--config FILE]
//                 [--dram-bytes N] [--io-depth N] [--io-backend uring|pread] ...
//
// The configuration is TierConfig (memory_tier/tier_config.h): defaults, then the JSON file of
// --config, then every flag given on the command line. Flag names take '-' or '_'.
#include <cstdio>
#include <set>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/synchronization/notification.h"
#include "common/config_util.h"
#include "common/engram_config.h"
#include "common/flags_help.h"
#include "common/lifecycle.h"
#include "common/log.h"
#include "common/status.h"
#include "memory_tier/tier_config.h"
#include "memory_tier/tier_server.h"
#include "nlohmann/json.hpp"

ABSL_FLAG(std::string, config, "", "JSON configuration file (nested like the printed config)");
ABSL_FLAG(std::string, store, "", "store directory (catalog + row files); required");
ABSL_FLAG(std::string, listen, "0.0.0.0:50052", "gRPC listen address host:port");
ABSL_FLAG(std::string, metrics_host, "0.0.0.0", "host of /metrics");
ABSL_FLAG(int, metrics_port, 9092, "port of /metrics (0 = any free port, -1 = off)");
ABSL_FLAG(std::string, dram_bytes, "1G", "shared-memory DRAM budget, e.g. 64M, 8G (0 = none)");
ABSL_FLAG(uint32_t, dram_ways, 8, "ways per set of DRAM cache arenas");
ABSL_FLAG(bool, huge_pages, true, "madvise(MADV_HUGEPAGE) on the arenas");
ABSL_FLAG(bool, mlock, true, "lock the arenas in memory where allowed");
ABSL_FLAG(std::string, shm_prefix, "engram", "prefix of the shared-memory names");
ABSL_FLAG(std::string, shm_mode, "0640",
          "permission bits of the arenas: 0640 (tier user + group) or 0600 (tier user only)");
ABSL_FLAG(std::string, io_backend, "uring", "cold-tier I/O: uring or pread");
ABSL_FLAG(int, io_depth, 64, "NVMe reads in flight per reader");
ABSL_FLAG(uint32_t, max_read_bytes, 32768, "largest merged read, a multiple of 4096");
ABSL_FLAG(int, readers_per_table, 4, "concurrent NVMe readers per table");
ABSL_FLAG(bool, direct_io, true, "read row files with O_DIRECT");
ABSL_FLAG(std::string, verify, "full", "row-file check before serving: full or quick");
ABSL_FLAG(std::string, scrub_bytes_per_s, "16M",
          "background scrub rate of the row files, bytes/s, e.g. 16M (0 = no scrub)");
ABSL_FLAG(uint32_t, max_batch_rows, 262144, "largest batch of row ids per request");
ABSL_FLAG(int, lookup_threads, 4, "threads executing lookups and prefetch batches");
ABSL_FLAG(bool, promote, true, "promote NVMe rows into DRAM cache arenas");
ABSL_FLAG(double, half_life_s, 3600, "half-life of the access statistics, seconds");
ABSL_FLAG(double, stats_flush_interval_s, 60, "seconds between persisting statistics");
ABSL_FLAG(double, drain_timeout_s, 10, "seconds in-flight work may take on SIGTERM");
ABSL_FLAG(bool, reflection, true, "serve gRPC reflection (for grpcurl)");
ABSL_FLAG(std::string, tls_cert, "", "PEM certificate (chain) of the gRPC port; enables TLS");
ABSL_FLAG(std::string, tls_key, "", "PEM private key of --tls-cert");
ABSL_FLAG(std::string, tls_client_ca, "",
          "PEM CA of the workers' client certificates: clients without one are refused (mTLS)");
ABSL_FLAG(std::string, log_level, "info", "debug, info, warning or error");

namespace engram {
namespace {

// Names of the flags given on the command line ("--name", "--name=v", "--noname" for booleans).
std::set<std::string>& GivenFlags() {
  static std::set<std::string> given;
  return given;
}

bool Given(const char* name) { return GivenFlags().count(name) > 0; }

// Defaults, then --config, then the flags given explicitly.
absl::StatusOr<TierConfig> BuildConfig() {
  TierConfig c;
  if (const std::string path = absl::GetFlag(FLAGS_config); !path.empty()) {
    ENGRAM_ASSIGN_OR_RETURN(nlohmann::json j, ReadJsonFile(path));
    absl::Status s = c.MergeJson(j);
    if (!s.ok()) return Annotate(s, path);
  }
  if (Given("store")) c.store.dir = absl::GetFlag(FLAGS_store);
  if (Given("listen")) c.server.listen = absl::GetFlag(FLAGS_listen);
  if (Given("metrics_host")) c.server.metrics_host = absl::GetFlag(FLAGS_metrics_host);
  if (Given("metrics_port")) c.server.metrics_port = absl::GetFlag(FLAGS_metrics_port);
  if (Given("dram_bytes")) {
    ENGRAM_ASSIGN_OR_RETURN(c.dram.bytes, ParseByteSize(absl::GetFlag(FLAGS_dram_bytes)));
  }
  if (Given("dram_ways")) c.dram.ways = absl::GetFlag(FLAGS_dram_ways);
  if (Given("huge_pages")) c.dram.huge_pages = absl::GetFlag(FLAGS_huge_pages);
  if (Given("mlock")) c.dram.lock = absl::GetFlag(FLAGS_mlock);
  if (Given("shm_prefix")) c.dram.shm_prefix = absl::GetFlag(FLAGS_shm_prefix);
  if (Given("shm_mode")) c.dram.shm_mode = absl::GetFlag(FLAGS_shm_mode);
  if (Given("io_backend")) c.nvme.io_backend = absl::GetFlag(FLAGS_io_backend);
  if (Given("io_depth")) c.nvme.io_depth = absl::GetFlag(FLAGS_io_depth);
  if (Given("max_read_bytes")) c.nvme.max_read_bytes = absl::GetFlag(FLAGS_max_read_bytes);
  if (Given("readers_per_table")) c.nvme.readers_per_table = absl::GetFlag(FLAGS_readers_per_table);
  if (Given("direct_io")) c.nvme.direct_io = absl::GetFlag(FLAGS_direct_io);
  if (Given("verify")) c.store.verify = absl::GetFlag(FLAGS_verify);
  if (Given("scrub_bytes_per_s")) {
    ENGRAM_ASSIGN_OR_RETURN(c.store.scrub_bytes_per_s,
                            ParseByteSize(absl::GetFlag(FLAGS_scrub_bytes_per_s)));
  }
  if (Given("max_batch_rows")) c.server.max_batch_rows = absl::GetFlag(FLAGS_max_batch_rows);
  if (Given("lookup_threads")) c.server.lookup_threads = absl::GetFlag(FLAGS_lookup_threads);
  if (Given("promote")) c.placement.promote = absl::GetFlag(FLAGS_promote);
  if (Given("half_life_s")) c.placement.half_life_s = absl::GetFlag(FLAGS_half_life_s);
  if (Given("stats_flush_interval_s")) {
    c.placement.stats_flush_interval_s = absl::GetFlag(FLAGS_stats_flush_interval_s);
  }
  if (Given("reflection")) c.server.reflection = absl::GetFlag(FLAGS_reflection);
  if (Given("tls_cert")) c.server.tls_cert = absl::GetFlag(FLAGS_tls_cert);
  if (Given("tls_key")) c.server.tls_key = absl::GetFlag(FLAGS_tls_key);
  if (Given("tls_client_ca")) c.server.tls_client_ca = absl::GetFlag(FLAGS_tls_client_ca);
  if (Given("drain_timeout_s")) c.server.drain_timeout_s = absl::GetFlag(FLAGS_drain_timeout_s);
  ENGRAM_RETURN_IF_ERROR(c.Validate());
  return c;
}

// absl flags are spelled with '_'; accept "--metrics-port" as well. Records the flags given.
std::vector<char*> NormaliseFlagNames(int argc, char** argv, std::vector<std::string>* storage) {
  *storage = UnderscoreFlagNames(argc, argv);
  std::vector<char*> out;
  for (auto& a : *storage) {
    out.push_back(a.data());
    if (a.size() > 2 && a[0] == '-' && a[1] == '-') {
      std::string name =
          a.substr(2, a.find('=') == std::string::npos ? std::string::npos : a.find('=') - 2);
      GivenFlags().insert(name);
      if (name.rfind("no", 0) == 0) GivenFlags().insert(name.substr(2));
    }
  }
  return out;
}

int Run(int argc, char** argv) {
  constexpr char kUsage[] = "engram-memory --store DIR [--listen ADDR] [--metrics-port P] ...";
  if (HelpRequested(argc, argv)) {
    std::fputs(FlagsHelp(kUsage, __FILE__).c_str(), stdout);
    return 0;
  }
  absl::SetProgramUsageMessage(kUsage);
  std::vector<std::string> storage;
  std::vector<char*> args = NormaliseFlagNames(argc, argv, &storage);
  absl::ParseCommandLine(static_cast<int>(args.size()), args.data());
  LogLevel level;
  if (!ParseLogLevel(absl::GetFlag(FLAGS_log_level), &level)) {
    std::fprintf(stderr, "engram-memory: --log-level must be debug, info, warning or error\n");
    return 2;
  }
  SetLogLevel(level);
  auto config = BuildConfig();
  if (!config.ok()) {
    std::fprintf(stderr, "engram-memory: %s\n", std::string(config.status().message()).c_str());
    return 2;
  }
  ENGRAM_LOG(INFO).With("config", config->ToJson().dump()) << "engram-memory starting";
  absl::Notification stop;
  SignalWatcher signals([&stop](int sig) {
    ENGRAM_LOG(INFO).With("signal", sig) << "draining";
    if (!stop.HasBeenNotified()) stop.Notify();
  });
  auto server = TierServer::Start(*config);
  if (!server.ok()) {
    ENGRAM_LOG(ERROR).With("error", server.status().message()) << "engram-memory cannot start";
    return 1;
  }
  ENGRAM_LOG(INFO).With("port", (*server)->port()).With("metrics_port", (*server)->metrics_port())
      << "ready";
  stop.WaitForNotification();
  (*server)->Shutdown();
  ENGRAM_LOG(INFO) << "stopped";
  return 0;
}

}  // namespace
}  // namespace engram

int main(int argc, char** argv) { return engram::Run(argc, argv); }
