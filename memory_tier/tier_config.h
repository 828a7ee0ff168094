// File: memory_tier/tier_config.h
//
// The one configuration struct of engram-memory (docs/architecture.md pattern 7), nested by
// subsystem. Every field says its unit and default. Filled from an optional JSON file (same nesting
// and key names as ToJson(), e.g. {"dram": {"bytes": 1073741824}}) and then from the command-line
// flags that were given explicitly (memory_tier/main.cc), validated once, printed at startup.
#ifndef ENGRAM_MEMORY_TIER_TIER_CONFIG_H_
#define ENGRAM_MEMORY_TIER_TIER_CONFIG_H_

#include <cstdint>
#include <functional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "nlohmann/json_fwd.hpp"

namespace engram {

struct TierConfig {
  struct Server {
    // gRPC listen address, host:port; port 0 picks a free one. Default "0.0.0.0:50052".
    std::string listen = "0.0.0.0:50052";
    // /metrics host and port; port 0 picks a free one, -1 disables it. Default 0.0.0.0:9092.
    std::string metrics_host = "0.0.0.0";
    int metrics_port = 9092;
    // Largest batch of row ids in one Lookup or Prefetch request (larger: INVALID_ARGUMENT).
    // Default 262,144 rows (69 MB of 264 B rows).
    uint32_t max_batch_rows = 262144;
    // Threads executing lookups and prefetch batches (earliest Engram layer first). Default 4.
    int lookup_threads = 4;
    // Batches queued per Prefetch stream; more get RESOURCE_EXHAUSTED. Default 4096.
    int max_pending_per_stream = 4096;
    // Largest gRPC message, bytes, in [1 MiB, 2 GiB). A batch whose rows would not fit one
    // response is INVALID_ARGUMENT. Default 256 MiB.
    int64_t max_message_bytes = 256ll << 20;
    // SIGTERM: how long in-flight work may take before streams are cancelled, s. Default 10.
    double drain_timeout_s = 10;
    // gRPC server reflection (grpc.reflection.v1alpha, for grpcurl). Default true
    // (docs/decisions.md, "Reflection stays on by default").
    bool reflection = true;
    // TLS of the gRPC port (PEM paths): certificate + key, and optionally the CA that signs the
    // workers' client certificates (then a client without one is refused: mutual TLS). Empty =
    // plaintext. Flags --tls-cert, --tls-key, --tls-client-ca. Default "" (plaintext).
    std::string tls_cert;
    std::string tls_key;
    std::string tls_client_ca;
  } server;

  struct Store {
    // The store directory written by `engram table import` (catalog + row files). Required.
    std::string dir;
    // Row-file check before a table version is served: "full" re-reads every chunk and checks
    // its CRC-32C (resident tables always do, while loading), "quick" checks header and size.
    // Default "full".
    std::string verify = "full";
    // Background scrub: every page of every served row file is re-read (O_DIRECT) and checked
    // against its page checksum at this rate, bytes/s, round after round, so corruption of rows
    // nobody reads is found too. 0 = no scrub. Default 16 MiB/s (a 100 GiB store in ~2 h).
    uint64_t scrub_bytes_per_s = 16ull << 20;
  } store;

  struct Dram {
    // Shared-memory DRAM budget for all arenas, bytes (0 = no DRAM tier). Tables that fit
    // become resident, earliest Engram layer first; the rest share the remainder as caches.
    // Default 1 GiB.
    uint64_t bytes = 1ull << 30;
    // Ways per set of a cache arena. Default 8.
    uint32_t ways = 8;
    // madvise(MADV_HUGEPAGE) on the arenas (effective when shmem THP allows). Default true.
    bool huge_pages = true;
    // mlock the arenas where the process may (CAP_IPC_LOCK or RLIMIT_MEMLOCK). Default true.
    bool lock = true;
    // Prefix of the shared-memory names: /<prefix>-<store hash>-<model>-L<layer>-v<version>.
    // Default "engram".
    std::string shm_prefix = "engram";
    // Permission bits of the arenas, "0640" (the tier's user writes, its group -- the workers,
    // which run with the tier's group -- maps read-only) or "0600" (the tier's user only; workers
    // must then run as that user). Set exactly, whatever the umask. Default "0640".
    std::string shm_mode = "0640";
  } dram;

  struct Nvme {
    // "uring" (falls back to pread when io_uring is unavailable) or "pread". Default "uring".
    std::string io_backend = "uring";
    // Reads in flight per reader (queue depth). Default 64.
    int io_depth = 64;
    // Largest read: adjacent pages are merged up to this many bytes (a multiple of 4096).
    // Default 32768.
    uint32_t max_read_bytes = 32768;
    // Readers (rings) per table, i.e. concurrent lookups reading one table. Default 4.
    int readers_per_table = 4;
    // Read row files with O_DIRECT (bypass the page cache). Default true.
    bool direct_io = true;
    // Register buffers and files with io_uring. Default true.
    bool register_buffers = true;
    // TEST SEAM, not a config key: sees every read completion of every NVMe reader
    // (memory_tier/io_reader.h); tests use it to make the cold tier slow or faulty in a real
    // server. Empty in production.
    std::function<int(int result)> fault_hook;
  } nvme;

  struct Placement {
    // Promote rows served from NVMe into DRAM cache arenas (TinyLFU admission). Default true.
    bool promote = true;
    // Access records queued for the promoter per table, rows; more are dropped. Default 1 Mi.
    uint64_t queue_rows = 1ull << 20;
    // Hottest rows per table kept with decayed counts (persisted, reported). Default 65,536.
    uint64_t tracked_rows = 1ull << 16;
    // Half-life of the decayed access counts, s. Default 3600.
    double half_life_s = 3600;
    // Interval of decay + persisting the statistics to the catalog, s. Default 60.
    double stats_flush_interval_s = 60;
    // Write the statistics to the catalog (every stats_flush_interval_s and at drain). Benchmarks
    // turn it off so that one run's traffic does not warm the next run's caches. Default true.
    bool persist_stats = true;
  } placement;

  // Errors name the field (e.g. "nvme.io_depth must be in [1, 4096]").
  absl::Status Validate() const;
  // The whole configuration, nested as in this struct.
  nlohmann::json ToJson() const;
  // Overlays the keys present in `json`; unknown keys and wrong types are INVALID_ARGUMENT.
  absl::Status MergeJson(const nlohmann::json& json);
};

// "1073741824", "64M", "1G", "512MiB", "2GB" -> bytes (K/M/G/T and KiB/MiB/GiB/TiB are powers of
// 1024, KB/MB/GB/TB of 1000).
absl::StatusOr<uint64_t> ParseByteSize(absl::string_view text);

}  // namespace engram

#endif  // ENGRAM_MEMORY_TIER_TIER_CONFIG_H_
