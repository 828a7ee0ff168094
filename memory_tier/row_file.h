// File: memory_tier/row_file.h
//
// The on-disk format of an Engram table version: one row file per (model, layer, version) plus a
// JSON manifest beside it. As contract 3 of docs/architecture.md fixes it: fixed-size records, no
// row crosses a 4 KiB page, row id -> (page, slot) by arithmetic, no per-row index, a checksum per
// chunk.
//
// Row file (all integers little-endian):
//   [0, 4096)           RowFileHeader (magic "ENGRAMRF", format 2, geometry, dtype, model, layer,
//                       version, where the page checksums are and their CRC-32C, CRC-32C of the
//                       header)
//   [4096, data_end)    pages of page_bytes = 4096 bytes; page p holds rows
//                       [p * rows_per_page, (p + 1) * rows_per_page), rows_per_page =
//                       4096 / row_bytes, packed from the page start, zero padding after the last
//                       row of the page. Every page is one aligned O_DIRECT read.
//   [data_end, file_bytes)  format 2: the page checksums, one u32 per page (PageChecksum below),
//                       zero padded to a page boundary. The file always ends on a page boundary.
//   row r lives at 4096 + (r / rows_per_page) * 4096 + (r % rows_per_page) * row_bytes.
//
// Page checksums (format 2) let a reader check every page it reads on its own, like RocksDB's
// block checksums: the NVMe tier verifies each page it reads against them (held in memory, 4 bytes
// per 4 KiB page), the DRAM tier each page it loads, and the scrub pages nobody reads. Format 1
// files (no page checksums) are still parsed, inspected and verified chunk by chunk, but not
// served (docs/decisions.md, "Row files without page checksums are refused").
//
// Manifest (v<V>.manifest.json): model, layer, version, rows, row_bytes, dtype, head_dim, the
// layout, the file's name and size, the header's CRC-32C, the chunk size and one CRC-32C
// (common/crc32c.h) per chunk of the data region [header_bytes, file_bytes) (the last chunk may be
// shorter), and where the rows came from (source files, tensors, their CRC-32C and a stat
// fingerprint used by the importer's idempotence check). docs/memory-tier.md shows an example.
#ifndef ENGRAM_MEMORY_TIER_ROW_FILE_H_
#define ENGRAM_MEMORY_TIER_ROW_FILE_H_

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "memory_tier/posix_file.h"
#include "nlohmann/json_fwd.hpp"

namespace engram {

inline constexpr uint32_t kRowFilePageBytes = 4096;
inline constexpr uint64_t kRowFileHeaderBytes = 4096;
inline constexpr uint64_t kDefaultChunkBytes = 1 << 20;  // 256 pages
// Largest checksummed chunk: verification holds one chunk in memory.
inline constexpr uint64_t kMaxChunkBytes = 1 << 30;
// The format written by RowFileWriter; the only one engram-memory serves.
inline constexpr uint32_t kRowFileFormatVersion = 2;
// The first format with page checksums.
inline constexpr uint32_t kFirstPageChecksumFormat = 2;

// Row id -> file offset arithmetic of one row file.
struct RowLayout {
  uint64_t rows = 0;
  uint32_t row_bytes = 0;
  uint32_t rows_per_page = 0;
  uint32_t page_bytes = kRowFilePageBytes;
  uint64_t header_bytes = kRowFileHeaderBytes;
  uint32_t format = kRowFileFormatVersion;  // 1: no page checksums

  // INVALID_ARGUMENT when row_bytes is 0 or larger than a page, or the format is unknown.
  static absl::StatusOr<RowLayout> For(uint64_t rows, uint32_t row_bytes,
                                       uint32_t format = kRowFileFormatVersion);

  bool page_checksums() const { return format >= kFirstPageChecksumFormat; }
  uint64_t pages() const { return (rows + rows_per_page - 1) / rows_per_page; }
  // End of the row pages = start of the page checksums (format 2).
  uint64_t data_end() const { return header_bytes + pages() * page_bytes; }
  // Bytes of the page checksum region: 4 per page, rounded up to a page; 0 in format 1.
  uint64_t page_checksum_bytes() const {
    return page_checksums() ? (pages() * 4 + page_bytes - 1) / page_bytes * page_bytes : 0;
  }
  uint64_t file_bytes() const { return data_end() + page_checksum_bytes(); }
  uint64_t PageOf(uint64_t row) const { return row / rows_per_page; }
  uint64_t PageOffset(uint64_t page) const { return header_bytes + page * page_bytes; }
  uint32_t InPageOffset(uint64_t row) const {
    return static_cast<uint32_t>(row % rows_per_page) * row_bytes;
  }
  uint64_t RowOffset(uint64_t row) const { return PageOffset(PageOf(row)) + InPageOffset(row); }
  // Rows [*first, *end) of page `page`.
  void PageRows(uint64_t page, uint64_t* first, uint64_t* end) const {
    *first = page * rows_per_page;
    *end = std::min(rows, *first + rows_per_page);
  }
};

// The checksum of data page `page` (its 4096 bytes): CRC-32C of the bytes, extended with the page
// index as 8 little-endian bytes, so a page read from the wrong place fails too.
uint32_t PageChecksum(const uint8_t* page_data, uint64_t page);

// Where a table version's rows came from.
struct SourceInfo {
  std::vector<std::string> files;    // safetensors files (absolute paths)
  std::vector<std::string> tensors;  // tensor names (weight, then scale for FP8)
  std::string dtype;                 // source dtype(s), e.g. "BF16" or "F8_E4M3+F8_E8M0"
  uint64_t bytes = 0;                // tensor bytes read
  uint32_t crc32c = 0;               // CRC-32C of those bytes in row order
  std::string fingerprint;           // size, mtime and tensor offsets of the files (stat only)
};

// The manifest of one table version.
struct Manifest {
  std::string model;
  uint32_t layer = 0;
  uint64_t version = 0;
  std::string dtype;  // common/row_format.h name
  int head_dim = 0;
  RowLayout layout;
  std::string row_file;  // path relative to the store directory
  uint64_t file_bytes = 0;
  uint32_t header_crc32c = 0;
  uint32_t page_checksums_crc32c = 0;  // format 2: CRC-32C of the page checksum region
  uint64_t chunk_bytes = kDefaultChunkBytes;
  std::vector<uint32_t> chunk_crc32c;
  SourceInfo source;
  std::string created;  // RFC 3339 UTC

  uint64_t num_chunks() const;
  // [begin, end) file offsets of chunk i.
  uint64_t ChunkBegin(uint64_t i) const { return layout.header_bytes + i * chunk_bytes; }
  uint64_t ChunkEnd(uint64_t i) const;

  nlohmann::json ToJson() const;
  // Parses and checks internal consistency (row size vs dtype and head_dim, geometry, chunk size
  // and count); the error names the field.
  static absl::StatusOr<Manifest> FromJson(const nlohmann::json& json);
};

// INVALID_ARGUMENT unless `chunk_bytes` is a multiple of the page size in [4096, kMaxChunkBytes].
absl::Status CheckChunkBytes(uint64_t chunk_bytes);

absl::Status WriteManifest(const std::string& path, const Manifest& manifest);
absl::StatusOr<Manifest> ReadManifest(const std::string& path);

// Streams rows into a new row file; computes the chunk checksums on the way.
//
//   ENGRAM_ASSIGN_OR_RETURN(auto writer, RowFileWriter::Create(tmp_path, manifest));
//   while (...) ENGRAM_RETURN_IF_ERROR(writer->Append(rows, n));
//   ENGRAM_RETURN_IF_ERROR(writer->Finish(&manifest));   // fills checksums and sizes; fsyncs
class RowFileWriter {
 public:
  // `manifest` supplies model, layer, version, dtype, head_dim, layout and chunk_bytes (a
  // positive multiple of the page size). The file has layout.format: format 1 only for tests of
  // old-file handling.
  static absl::StatusOr<std::unique_ptr<RowFileWriter>> Create(const std::string& path,
                                                               const Manifest& manifest);
  ~RowFileWriter();
  // Appends `n` rows of layout.row_bytes bytes each, packed back to back in `rows`.
  absl::Status Append(const uint8_t* rows, uint64_t n);
  uint64_t rows_written() const { return rows_written_; }
  // Requires every row written; writes the page checksums (format 2), the header, fsyncs, and
  // fills manifest->file_bytes, header_crc32c, page_checksums_crc32c and chunk_crc32c.
  absl::Status Finish(Manifest* manifest);

 private:
  RowFileWriter() = default;
  absl::Status FlushChunk();

  std::string path_;
  ScopedFd fd_;
  Manifest manifest_;
  std::vector<uint8_t> chunk_;  // chunk_bytes of pages being filled
  size_t chunk_fill_ = 0;       // bytes of complete pages in chunk_
  uint32_t page_fill_ = 0;      // rows in the current page
  uint64_t rows_written_ = 0;
  uint64_t chunks_written_ = 0;
  std::vector<uint32_t> crcs_;
  std::vector<uint32_t> page_crcs_;  // PageChecksum of every complete page so far
};

// Reads a row file chunk by chunk, checks the header against the manifest and every chunk's
// CRC-32C, and hands each verified chunk to `fn(chunk index, file offset, bytes, size)`.
// DATA_LOSS naming the first bad chunk and its byte range ("chunk 12 [12587008, 13635584):
// checksum mismatch ..." or "... file truncated ..."); NOT_FOUND when the file is missing.
using ChunkFn =
    std::function<absl::Status(uint64_t chunk, uint64_t offset, const uint8_t* data, size_t size)>;
absl::Status ReadVerifiedChunks(const Manifest& manifest, const std::string& path,
                                const ChunkFn& fn);
// Format 2: every data page of a verified chunk is also checked against its page checksum
// (DATA_LOSS "page 7 (rows 105..119) [32768, 36864): checksum mismatch ...").
// ReadVerifiedChunks with nothing to do per chunk.
absl::Status VerifyRowFile(const Manifest& manifest, const std::string& path);
// Checks only the header and the file size (cheap; used when full verification is off).
absl::Status QuickCheckRowFile(const Manifest& manifest, const std::string& path);

// Format 2: reads the page checksum region (one u32 per data page) and checks it against the
// manifest's page_checksums_crc32c. DATA_LOSS naming the file when it does not match;
// FAILED_PRECONDITION for a format 1 file.
absl::StatusOr<std::vector<uint32_t>> ReadPageChecksums(const Manifest& manifest,
                                                        const std::string& path);

// OK when page `page` (page_bytes at `data`) matches `expected`; otherwise DATA_LOSS naming the
// file, the page, its rows and its byte range.
absl::Status CheckPage(const RowLayout& layout, const std::string& path, uint64_t page,
                       const uint8_t* data, uint32_t expected);

// OK for a file engram-memory serves (format 2). FAILED_PRECONDITION for a format 1 file, naming
// it and the fix: import the table again (`engram table import` rewrites format-1 tables).
absl::Status CheckServableFormat(const Manifest& manifest, const std::string& path);

}  // namespace engram

#endif  // ENGRAM_MEMORY_TIER_ROW_FILE_H_
