#include "memory_tier/tier_config.h"

#include <cctype>
#include <functional>
#include <limits>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/config_util.h"
#include "common/grpc_tls.h"
#include "common/status.h"
#include "memory_tier/io_reader.h"
#include "nlohmann/json.hpp"

namespace engram {
namespace {

// Calls f(section, key, field pointer) for every field: one list drives ToJson and MergeJson.
template <typename Config, typename F>
void VisitFields(Config& c, F&& f) {
  f("server", "listen", &c.server.listen);
  f("server", "metrics_host", &c.server.metrics_host);
  f("server", "metrics_port", &c.server.metrics_port);
  f("server", "max_batch_rows", &c.server.max_batch_rows);
  f("server", "lookup_threads", &c.server.lookup_threads);
  f("server", "max_pending_per_stream", &c.server.max_pending_per_stream);
  f("server", "max_message_bytes", &c.server.max_message_bytes);
  f("server", "drain_timeout_s", &c.server.drain_timeout_s);
  f("server", "reflection", &c.server.reflection);
  f("server", "tls_cert", &c.server.tls_cert);
  f("server", "tls_key", &c.server.tls_key);
  f("server", "tls_client_ca", &c.server.tls_client_ca);
  f("store", "dir", &c.store.dir);
  f("store", "verify", &c.store.verify);
  f("store", "scrub_bytes_per_s", &c.store.scrub_bytes_per_s);
  f("dram", "bytes", &c.dram.bytes);
  f("dram", "ways", &c.dram.ways);
  f("dram", "huge_pages", &c.dram.huge_pages);
  f("dram", "lock", &c.dram.lock);
  f("dram", "shm_prefix", &c.dram.shm_prefix);
  f("dram", "shm_mode", &c.dram.shm_mode);
  f("nvme", "io_backend", &c.nvme.io_backend);
  f("nvme", "io_depth", &c.nvme.io_depth);
  f("nvme", "max_read_bytes", &c.nvme.max_read_bytes);
  f("nvme", "readers_per_table", &c.nvme.readers_per_table);
  f("nvme", "direct_io", &c.nvme.direct_io);
  f("nvme", "register_buffers", &c.nvme.register_buffers);
  f("placement", "promote", &c.placement.promote);
  f("placement", "queue_rows", &c.placement.queue_rows);
  f("placement", "tracked_rows", &c.placement.tracked_rows);
  f("placement", "half_life_s", &c.placement.half_life_s);
  f("placement", "stats_flush_interval_s", &c.placement.stats_flush_interval_s);
  f("placement", "persist_stats", &c.placement.persist_stats);
}

// Whether `v` has T's type and, for integers, a value T holds: get<uint32_t>() of 4294967300
// would silently become 4.
template <typename T>
bool TypeFits(const nlohmann::json& v) {
  if constexpr (std::is_same_v<T, bool>) {
    return v.is_boolean();
  } else if constexpr (std::is_same_v<T, std::string>) {
    return v.is_string();
  } else if constexpr (std::is_same_v<T, double>) {
    return v.is_number();
  } else if constexpr (std::is_integral_v<T>) {
    T value;
    return JsonIntValue(v, &value);
  }
  return false;
}

absl::Status Bad(absl::string_view field, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("config ", field, " ", what));
}

}  // namespace

nlohmann::json TierConfig::ToJson() const {
  nlohmann::json j = nlohmann::json::object();
  VisitFields(*this, [&](const char* section, const char* key, const auto* field) {
    j[section][key] = *field;
  });
  return j;
}

absl::Status TierConfig::MergeJson(const nlohmann::json& json) {
  if (!json.is_object()) return absl::InvalidArgumentError("config file must hold a JSON object");
  // Every key of the file must name a field.
  // Named copies, not structured bindings: clang 14 (the sanitizer and fuzz build) cannot
  // capture a structured binding in a lambda.
  for (const auto& section_item : json.items()) {
    const std::string& section = section_item.key();
    const nlohmann::json& body = section_item.value();
    if (!body.is_object()) return Bad(section, "must be an object");
    for (const auto& key_item : body.items()) {
      const std::string& key = key_item.key();
      bool known = false;
      VisitFields(*this,
                  [&](const char* s, const char* k, auto*) { known |= section == s && key == k; });
      if (!known) return Bad(absl::StrCat(section, ".", key), "is not a known setting");
    }
  }
  absl::Status status;
  VisitFields(*this, [&](const char* section, const char* key, auto* field) {
    using T = std::remove_pointer_t<decltype(field)>;
    if (!status.ok() || !json.contains(section) || !json[section].contains(key)) return;
    const nlohmann::json& v = json[section][key];
    if (!TypeFits<T>(v)) {
      status = Bad(absl::StrCat(section, ".", key),
                   absl::StrCat("has the wrong type or is out of range: ", v.dump()));
      return;
    }
    *field = v.get<T>();
  });
  return status;
}

absl::Status TierConfig::Validate() const {
  if (store.dir.empty()) return Bad("store.dir", "is required (--store DIR)");
  if (store.verify != "full" && store.verify != "quick") {
    return Bad("store.verify", "must be \"full\" or \"quick\"");
  }
  if (server.listen.find(':') == std::string::npos)
    return Bad("server.listen", "must be host:port");
  if (server.metrics_port < -1 || server.metrics_port > 65535) {
    return Bad("server.metrics_port", "must be in [-1, 65535]");
  }
  if (server.max_batch_rows < 1) return Bad("server.max_batch_rows", "must be >= 1");
  if (server.lookup_threads < 1 || server.lookup_threads > 256) {
    return Bad("server.lookup_threads", "must be in [1, 256]");
  }
  if (server.max_pending_per_stream < 1)
    return Bad("server.max_pending_per_stream", "must be >= 1");
  if (server.max_message_bytes < (1 << 20) ||
      server.max_message_bytes > std::numeric_limits<int32_t>::max()) {
    return Bad("server.max_message_bytes", "must be in [1 MiB, 2 GiB - 1] (a gRPC limit)");
  }
  if (server.drain_timeout_s < 0) return Bad("server.drain_timeout_s", "must be >= 0");
  if (dram.ways < 1 || dram.ways > 64) return Bad("dram.ways", "must be in [1, 64]");
  if (absl::Status s = ValidateServerTls(
          {server.tls_cert, server.tls_key, server.tls_client_ca});
      !s.ok()) {
    return Bad("server.tls_*", s.message());
  }
  if (dram.shm_mode != "0600" && dram.shm_mode != "0640") {
    return Bad("dram.shm_mode", "must be \"0600\" or \"0640\"");
  }
  if (dram.shm_prefix.empty() || dram.shm_prefix.find('/') != std::string::npos) {
    return Bad("dram.shm_prefix", "must be non-empty and contain no '/'");
  }
  if (!ParseIoBackend(nvme.io_backend).ok())
    return Bad("nvme.io_backend", "must be uring or pread");
  if (nvme.io_depth < 1 || nvme.io_depth > 4096)
    return Bad("nvme.io_depth", "must be in [1, 4096]");
  if (nvme.max_read_bytes < 4096 || nvme.max_read_bytes % 4096 != 0 ||
      nvme.max_read_bytes > (1u << 20)) {
    return Bad("nvme.max_read_bytes", "must be a multiple of 4096 in [4096, 1 MiB]");
  }
  if (nvme.readers_per_table < 1 || nvme.readers_per_table > 256) {
    return Bad("nvme.readers_per_table", "must be in [1, 256]");
  }
  if (placement.tracked_rows < 1) return Bad("placement.tracked_rows", "must be >= 1");
  if (placement.queue_rows < 1) return Bad("placement.queue_rows", "must be >= 1");
  if (!(placement.half_life_s > 0)) return Bad("placement.half_life_s", "must be > 0");
  if (!(placement.stats_flush_interval_s > 0)) {
    return Bad("placement.stats_flush_interval_s", "must be > 0");
  }
  return absl::OkStatus();
}

absl::StatusOr<uint64_t> ParseByteSize(absl::string_view text) {
  std::string t(absl::StripAsciiWhitespace(text));
  size_t i = 0;
  while (i < t.size() && std::isdigit(static_cast<unsigned char>(t[i]))) ++i;
  uint64_t n = 0;
  if (i == 0 || !absl::SimpleAtoi(t.substr(0, i), &n)) {
    return absl::InvalidArgumentError(absl::StrCat("\"", text, "\" is not a byte size"));
  }
  std::string unit = absl::AsciiStrToUpper(t.substr(i));
  uint64_t mult = 1;
  if (unit.empty() || unit == "B") {
    mult = 1;
  } else if (unit == "K" || unit == "KIB") {
    mult = 1ull << 10;
  } else if (unit == "M" || unit == "MIB") {
    mult = 1ull << 20;
  } else if (unit == "G" || unit == "GIB") {
    mult = 1ull << 30;
  } else if (unit == "T" || unit == "TIB") {
    mult = 1ull << 40;
  } else if (unit == "KB") {
    mult = 1000;
  } else if (unit == "MB") {
    mult = 1000000;
  } else if (unit == "GB") {
    mult = 1000000000;
  } else if (unit == "TB") {
    mult = 1000000000000;
  } else {
    return absl::InvalidArgumentError(absl::StrCat("\"", text, "\" has an unknown unit"));
  }
  if (n > UINT64_MAX / mult)
    return absl::InvalidArgumentError(absl::StrCat("\"", text, "\" is too large"));
  return n * mult;
}

}  // namespace engram
