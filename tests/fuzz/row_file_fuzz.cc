// Fuzz target: the row-file manifest (memory_tier/row_file.cc Manifest::FromJson, which the tier
// reads from its catalog and from v<V>.manifest.json) and the row file's header and chunk checks
// (QuickCheckRowFile, ReadVerifiedChunks), with the rows of each verified chunk decoded by the
// manifest's dtype (common/row_format.cc DecodeRows) as the worker decodes served rows.
//
// Input: MANIFEST_JSON '\0' ROW_FILE_BYTES (fuzz_input.h). A manifest that does not parse is
// replaced by the one of a valid 40-row file written at start-up, so the file bytes alone still
// reach the header checks; a missing part B is that valid file itself.
// ENGRAM_FUZZ_WRITE_SEED=PATH writes that valid pair to PATH as a seed (how corpus/row_file/valid
// was made).
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "common/row_format.h"
#include "memory_tier/row_file.h"
#include "nlohmann/json.hpp"
#include "tests/fuzz/fuzz_input.h"

namespace {

struct ValidPair {
  engram::Manifest manifest;
  std::string file_bytes;
};

const ValidPair& Valid() {
  static const ValidPair* valid = [] {
    auto* v = new ValidPair();
    engram::Manifest& m = v->manifest;
    m.model = "fuzz";
    m.layer = 1;
    m.version = 1;
    m.dtype = "bf16";
    m.head_dim = 8;
    m.chunk_bytes = 4096;
    m.layout = *engram::RowLayout::For(/*rows=*/40, /*row_bytes=*/16);
    const std::string path = engram::fuzz::ScratchDir() + "/valid.rows";
    auto writer = engram::RowFileWriter::Create(path, m);
    if (!writer.ok()) std::abort();
    std::vector<uint8_t> rows(40 * 16);
    for (size_t i = 0; i < rows.size(); ++i) rows[i] = static_cast<uint8_t>(i * 7 + 3);
    if (!(*writer)->Append(rows.data(), 40).ok() || !(*writer)->Finish(&m).ok()) std::abort();
    std::ifstream in(path, std::ios::binary);
    v->file_bytes.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
    return v;
  }();
  return *valid;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int* argc, char*** argv) {
  const ValidPair& v = Valid();
  if (const char* seed = std::getenv("ENGRAM_FUZZ_WRITE_SEED")) {
    std::ofstream out(seed, std::ios::binary);
    out << v.manifest.ToJson().dump() << '\0' << v.file_bytes;
  }
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const engram::fuzz::TwoParts in = engram::fuzz::SplitAtNul(data, size);
  engram::Manifest manifest = Valid().manifest;
  const nlohmann::json json =
      nlohmann::json::parse(in.a.begin(), in.a.end(), nullptr, /*allow_exceptions=*/false);
  if (!json.is_discarded()) {
    auto parsed = engram::Manifest::FromJson(json);
    if (parsed.ok()) {
      // A manifest that parsed has a geometry that holds its rows: the row -> offset arithmetic
      // of the tiers relies on it.
      const engram::RowLayout& l = parsed->layout;
      if (l.rows_per_page == 0 || l.pages() > (UINT64_MAX - l.header_bytes) / l.page_bytes ||
          l.pages() * l.rows_per_page < l.rows || parsed->file_bytes != l.file_bytes()) {
        __builtin_trap();
      }
      manifest = *std::move(parsed);
    }
  }
  static const std::string path = engram::fuzz::ScratchDir() + "/fuzz.rows";
  engram::fuzz::WriteFileOrDie(path, in.has_b ? in.b : std::string_view(Valid().file_bytes));
  (void)engram::QuickCheckRowFile(manifest, path);
  // Verification holds one chunk in memory; a fuzzed manifest may ask for up to 1 GiB, which is
  // allowed (kMaxChunkBytes) but not worth allocating thousands of times a second.
  if (manifest.chunk_bytes > (1u << 20)) return 0;
  auto row_dtype = engram::ParseRowDType(manifest.dtype);
  std::vector<float> decoded;
  (void)engram::ReadVerifiedChunks(
      manifest, path,
      [&](uint64_t, uint64_t, const uint8_t* bytes, size_t n) -> absl::Status {
        if (!row_dtype.ok()) return absl::OkStatus();
        const size_t row_bytes = manifest.layout.row_bytes;
        const size_t rows = n / row_bytes;
        decoded.resize(rows * static_cast<size_t>(manifest.head_dim));
        return engram::DecodeRows(*row_dtype, bytes, rows, manifest.head_dim, decoded.data());
      });
  return 0;
}
