#include "tests/memory_tier/test_model.h"

#include <liburing.h>
#include <stdlib.h>
#include <sys/wait.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>

#include "absl/strings/str_cat.h"
#include "common/engram_config.h"
#include "common/ngram_hash.h"
#include "common/row_format.h"
#include "common/safetensors.h"
#include "common/status.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace engram::testing {
namespace {

uint64_t Mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

nlohmann::json ConfigJson(const TestModelSpec& spec) {
  return {{"model_name", spec.name},
          {"hidden_size", 64},
          {"engram_layer_ids", spec.layer_ids},
          {"engram_max_ngram_size", spec.max_ngram_size},
          {"engram_n_heads", spec.n_heads},
          {"engram_head_dim", spec.head_dim},
          {"engram_vocab_size", spec.vocab_size_per_order},
          {"engram_pad_token_id", 2},
          {"engram_kernel_size", 0}};
}

}  // namespace

std::vector<int64_t> TestModelRows(const TestModelSpec& spec) {
  auto config = ParseEngramConfig(ConfigJson(spec));
  return config.ok() ? EngramLayerRowCounts(*config) : std::vector<int64_t>{};
}

absl::Status WriteTestModel(const std::string& dir, const TestModelSpec& spec) {
  std::filesystem::create_directories(dir);
  {
    std::ofstream f(dir + "/config.json");
    f << ConfigJson(spec).dump(2);
    if (!f) return absl::InternalError("cannot write config.json");
  }
  const std::vector<int64_t> rows = TestModelRows(spec);
  if (rows.size() != spec.layer_ids.size()) return absl::InvalidArgumentError("bad test spec");
  SafetensorsWriter writer;
  const int64_t d = spec.head_dim;
  for (size_t li = 0; li < spec.layer_ids.size(); ++li) {
    const std::string base = absl::StrCat("model.layers.", spec.layer_ids[li],
                                          ".engram.multi_head_embedding.embedding.");
    const int64_t n = rows[li];
    const uint64_t salt = (uint64_t{spec.seed} << 32) ^ static_cast<uint64_t>(spec.layer_ids[li]);
    if (spec.dtype == "fp8_e4m3_e8m0") {
      // Payload bytes avoid the NaN codes; scales stay near 2^0.
      writer.AddProduced(base + "embed.weight", DType::kF8E4M3, {n, d},
                         [salt](uint64_t offset, uint8_t* out, size_t len) {
                           for (size_t i = 0; i < len; ++i) {
                             uint8_t b = static_cast<uint8_t>(Mix(salt * 1000003 + offset + i));
                             out[i] = (b & 0x7f) == 0x7f ? b ^ 0x01 : b;
                           }
                           return absl::OkStatus();
                         });
      writer.AddProduced(base + "embed.scale", DType::kF8E8M0, {n, d / 32},
                         [salt](uint64_t offset, uint8_t* out, size_t len) {
                           for (size_t i = 0; i < len; ++i) {
                             out[i] = static_cast<uint8_t>(120 + Mix(salt ^ (offset + i)) % 14);
                           }
                           return absl::OkStatus();
                         });
      continue;
    }
    DType dtype = spec.dtype == "f32"   ? DType::kF32
                  : spec.dtype == "f16" ? DType::kF16
                                        : DType::kBF16;
    const size_t esize = DTypeSize(dtype);
    writer.AddProduced(base + "weight", dtype, {n, d},
                       [salt, esize, dtype](uint64_t offset, uint8_t* out, size_t len) {
                         // Element-aligned offsets: the writer asks for whole tensors in pieces.
                         for (size_t i = 0; i < len; i += esize) {
                           const uint64_t e = (offset + i) / esize;
                           const float v = static_cast<float>(
                               std::sin(static_cast<double>(Mix(salt * 7919 + e) % 100000) / 97.0));
                           if (dtype == DType::kF32) {
                             std::memcpy(out + i, &v, 4);
                           } else {
                             uint16_t h = dtype == DType::kF16 ? F32ToF16(v) : F32ToBf16(v);
                             std::memcpy(out + i, &h, 2);
                           }
                         }
                         return absl::OkStatus();
                       });
  }
  return writer.Write(dir + "/model.safetensors");
}

absl::StatusOr<std::vector<uint8_t>> SourceRows(const std::string& model_dir, uint32_t layer,
                                                size_t* row_bytes) {
  ENGRAM_ASSIGN_OR_RETURN(auto st, SafetensorsDir::Open(model_dir));
  const std::string base =
      absl::StrCat("model.layers.", layer, ".engram.multi_head_embedding.embedding.");
  if (const TensorView* w = st->Find(base + "weight")) {
    *row_bytes = w->size_bytes / w->shape[0];
    return std::vector<uint8_t>(w->data, w->data + w->size_bytes);
  }
  ENGRAM_ASSIGN_OR_RETURN(const TensorView* w, st->Get(base + "embed.weight"));
  ENGRAM_ASSIGN_OR_RETURN(const TensorView* s, st->Get(base + "embed.scale"));
  const size_t rows = w->shape[0], wb = w->size_bytes / rows, sb = s->size_bytes / rows;
  *row_bytes = wb + sb;
  std::vector<uint8_t> out(rows * (wb + sb));
  for (size_t r = 0; r < rows; ++r) {
    std::memcpy(&out[r * (wb + sb)], w->data + r * wb, wb);
    std::memcpy(&out[r * (wb + sb) + wb], s->data + r * sb, sb);
  }
  return out;
}

RandomRowFile::RandomRowFile(uint64_t n_rows, absl::string_view dtype, int head_dim,
                             uint64_t seed, uint32_t format) {
  manifest.model = "test";
  manifest.layer = 1;
  manifest.version = 1;
  manifest.dtype = std::string(dtype);
  manifest.head_dim = head_dim;
  manifest.chunk_bytes = 64 * 1024;
  auto row_bytes = RowBytes(dtype, head_dim);
  auto layout = row_bytes.ok() ? RowLayout::For(n_rows, static_cast<uint32_t>(*row_bytes), format)
                               : absl::StatusOr<RowLayout>(row_bytes.status());
  if (!layout.ok()) {
    ADD_FAILURE() << layout.status();
    return;
  }
  manifest.layout = *layout;
  std::mt19937_64 rng(seed);
  rows.resize(n_rows * manifest.layout.row_bytes);
  for (auto& b : rows) b = static_cast<uint8_t>(rng());
  path = dir.path() + "/v1.rows";
  auto writer = RowFileWriter::Create(path, manifest);
  absl::Status s = writer.ok() ? (*writer)->Append(rows.data(), n_rows) : writer.status();
  if (s.ok()) s = (*writer)->Finish(&manifest);
  EXPECT_TRUE(s.ok()) << s;
}

std::pair<int, std::string> RunCommand(const std::string& command) {
  FILE* p = popen((command + " 2>&1").c_str(), "r");
  if (p == nullptr) return {-1, "popen failed"};
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), p)) > 0) out.append(buf, n);
  const int status = pclose(p);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, out};
}

bool UringAvailable() {
  static const bool available = [] {
    io_uring ring;
    if (io_uring_queue_init(4, &ring, 0) != 0) return false;
    io_uring_queue_exit(&ring);
    return true;
  }();
  return available;
}

TableDescription ArenaTableDescription(const DramTier& dram, const TableKey& key, uint64_t rows) {
  TableDescription d;
  d.key = key;
  d.rows = rows;
  d.row_bytes = static_cast<uint32_t>(dram.row_bytes());
  d.arena.shm_name = dram.arena().shm_name();
  d.arena.layout = dram.resident() ? "resident" : "cache";
  d.arena.host_id = LocalHostId();
  d.arena.arena_id = dram.arena().header().arena_id;
  return d;
}

}  // namespace engram::testing
