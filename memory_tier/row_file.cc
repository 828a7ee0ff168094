#include "memory_tier/row_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/crc32c.h"
#include "common/engram_config.h"
#include "common/row_format.h"
#include "common/status.h"
#include "nlohmann/json.hpp"

namespace engram {
namespace {

constexpr char kMagic[8] = {'E', 'N', 'G', 'R', 'A', 'M', 'R', 'F'};

// The first bytes of the 4 KiB header; the rest is zero. header_crc32c covers the whole 4 KiB with
// that field zeroed.
struct RowFileHeader {
  char magic[8];
  uint32_t format_version;
  uint32_t header_crc32c;
  uint64_t rows;
  uint32_t row_bytes;
  uint32_t rows_per_page;
  uint32_t page_bytes;
  int32_t head_dim;
  uint64_t header_bytes;
  uint64_t version;
  uint32_t layer;
  char dtype[32];
  char model[256];
  // Format 2 (zero in format 1): where the page checksums start and their CRC-32C.
  uint64_t page_checksum_offset;
  uint32_t page_checksums_crc32c;
};
static_assert(sizeof(RowFileHeader) < kRowFileHeaderBytes);

void CopyString(char* dst, size_t cap, const std::string& s) {
  std::memset(dst, 0, cap);
  std::memcpy(dst, s.data(), std::min(s.size(), cap - 1));
}

std::string FixedString(const char* s, size_t cap) { return std::string(s, strnlen(s, cap)); }

std::vector<uint8_t> EncodeHeader(const Manifest& m, uint32_t* crc) {
  std::vector<uint8_t> block(kRowFileHeaderBytes, 0);
  RowFileHeader h{};
  std::memcpy(h.magic, kMagic, sizeof(kMagic));
  h.format_version = m.layout.format;
  h.rows = m.layout.rows;
  h.row_bytes = m.layout.row_bytes;
  h.rows_per_page = m.layout.rows_per_page;
  h.page_bytes = m.layout.page_bytes;
  h.head_dim = m.head_dim;
  h.header_bytes = m.layout.header_bytes;
  h.version = m.version;
  h.layer = m.layer;
  CopyString(h.dtype, sizeof(h.dtype), m.dtype);
  CopyString(h.model, sizeof(h.model), m.model);
  if (m.layout.page_checksums()) {
    h.page_checksum_offset = m.layout.data_end();
    h.page_checksums_crc32c = m.page_checksums_crc32c;
  }
  std::memcpy(block.data(), &h, sizeof(h));
  *crc = Crc32c(0, block.data(), block.size());
  std::memcpy(block.data() + offsetof(RowFileHeader, header_crc32c), crc, sizeof(*crc));
  return block;
}

// Checks a header block against the manifest; the message names the first differing field.
absl::Status CheckHeader(const Manifest& m, const uint8_t* block, const std::string& path) {
  RowFileHeader h;
  std::memcpy(&h, block, sizeof(h));
  auto bad = [&](absl::string_view what) {
    return absl::DataLossError(absl::StrCat(path, ": header ", what, " (not a row file of ",
                                            m.model, " layer ", m.layer, " v", m.version, "?)"));
  };
  if (std::memcmp(h.magic, kMagic, sizeof(kMagic)) != 0) return bad("has no ENGRAMRF magic");
  if (h.format_version != m.layout.format) {
    return bad(absl::StrCat("format version ", h.format_version, " differs from the manifest's ",
                            m.layout.format));
  }
  std::vector<uint8_t> copy(block, block + kRowFileHeaderBytes);
  std::memset(copy.data() + offsetof(RowFileHeader, header_crc32c), 0, sizeof(uint32_t));
  const uint32_t crc = Crc32c(0, copy.data(), copy.size());
  if (crc != h.header_crc32c) return bad("checksum mismatch");
  if (crc != m.header_crc32c) return bad("checksum differs from the manifest");
  if (h.rows != m.layout.rows || h.row_bytes != m.layout.row_bytes ||
      h.rows_per_page != m.layout.rows_per_page || h.page_bytes != m.layout.page_bytes ||
      h.header_bytes != m.layout.header_bytes) {
    return bad("geometry differs from the manifest");
  }
  if (h.version != m.version || h.layer != m.layer ||
      FixedString(h.model, sizeof(h.model)) != m.model.substr(0, sizeof(h.model) - 1) ||
      FixedString(h.dtype, sizeof(h.dtype)) != m.dtype) {
    return bad("identity (model, layer, version, dtype) differs from the manifest");
  }
  if (m.layout.page_checksums() && (h.page_checksum_offset != m.layout.data_end() ||
                                    h.page_checksums_crc32c != m.page_checksums_crc32c)) {
    return bad("page checksum region differs from the manifest");
  }
  return absl::OkStatus();
}

// Whether `v` is an integer that `T` holds. nlohmann's get<T>() casts any number: a float out of
// the range of T (1e30 as "rows") is undefined behaviour (found by tests/fuzz/row_file_fuzz under
// UBSan), and a negative one or a fraction silently becomes another value.
template <typename T>
bool IntegerFits(const nlohmann::json& v) {
  if (v.is_number_unsigned()) return v.get<uint64_t>() <= uint64_t{std::numeric_limits<T>::max()};
  if (!v.is_number_integer()) return false;
  const int64_t i = v.get<int64_t>();
  return i >= 0 ? static_cast<uint64_t>(i) <= uint64_t{std::numeric_limits<T>::max()}
                : std::is_signed_v<T> && i >= int64_t{std::numeric_limits<T>::min()};
}

template <typename T>
struct IsVector : std::false_type {};
template <typename U>
struct IsVector<std::vector<U>> : std::true_type {};

template <typename T>
absl::Status GetField(const nlohmann::json& j, const char* key, T* out) {
  auto it = j.find(key);
  if (it == j.end())
    return absl::InvalidArgumentError(absl::StrCat("manifest lacks \"", key, "\""));
  const auto not_integer = [&] {
    return absl::InvalidArgumentError(
        absl::StrCat("manifest field \"", key, "\" must hold integers in the field's range, not ",
                     it->dump().substr(0, 64)));
  };
  if constexpr (std::is_integral_v<T> && !std::is_same_v<T, bool>) {
    if (!IntegerFits<T>(*it)) return not_integer();
  } else if constexpr (IsVector<T>::value) {
    using U = typename T::value_type;
    if constexpr (std::is_integral_v<U> && !std::is_same_v<U, bool>) {
      if (!it->is_array()) return not_integer();
      for (const auto& v : *it) {
        if (!IntegerFits<U>(v)) return not_integer();
      }
    }
  }
  try {
    *out = it->get<T>();
  } catch (const nlohmann::json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("manifest field \"", key, "\": ", e.what()));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<RowLayout> RowLayout::For(uint64_t rows, uint32_t row_bytes, uint32_t format) {
  if (row_bytes == 0 || row_bytes > kRowFilePageBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("row_bytes ", row_bytes, " must be in [1, ", kRowFilePageBytes, "]"));
  }
  if (format < 1 || format > kRowFileFormatVersion) {
    return absl::InvalidArgumentError(absl::StrCat("unknown row file format ", format));
  }
  RowLayout l;
  l.format = format;
  l.rows = rows;
  l.row_bytes = row_bytes;
  l.rows_per_page = kRowFilePageBytes / row_bytes;
  return l;
}

uint32_t PageChecksum(const uint8_t* page_data, uint64_t page) {
  uint8_t index[8];
  for (int i = 0; i < 8; ++i) index[i] = static_cast<uint8_t>(page >> (8 * i));
  return Crc32c(Crc32c(0, page_data, kRowFilePageBytes), index, sizeof(index));
}

uint64_t Manifest::num_chunks() const {
  const uint64_t data = layout.file_bytes() - layout.header_bytes;
  return (data + chunk_bytes - 1) / chunk_bytes;
}

uint64_t Manifest::ChunkEnd(uint64_t i) const {
  return std::min(ChunkBegin(i) + chunk_bytes, layout.file_bytes());
}

nlohmann::json Manifest::ToJson() const {
  nlohmann::json j;
  j["format"] = absl::StrCat("engram-rowfile-v", layout.format);
  j["model"] = model;
  j["layer"] = layer;
  j["version"] = version;
  j["rows"] = layout.rows;
  j["row_bytes"] = layout.row_bytes;
  j["dtype"] = dtype;
  j["head_dim"] = head_dim;
  j["layout"] = {{"kind", "paged"},
                 {"page_bytes", layout.page_bytes},
                 {"rows_per_page", layout.rows_per_page},
                 {"header_bytes", layout.header_bytes}};
  j["file"] = {{"name", row_file}, {"bytes", file_bytes}, {"header_crc32c", header_crc32c}};
  j["chunks"] = {{"bytes", chunk_bytes}, {"crc32c", chunk_crc32c}};
  if (layout.page_checksums()) {
    j["page_checksums"] = {{"offset", layout.data_end()},
                           {"bytes", layout.page_checksum_bytes()},
                           {"crc32c", page_checksums_crc32c}};
  }
  j["source"] = {{"files", source.files},   {"tensors", source.tensors},
                 {"dtype", source.dtype},   {"bytes", source.bytes},
                 {"crc32c", source.crc32c}, {"fingerprint", source.fingerprint}};
  j["created"] = created;
  return j;
}

absl::StatusOr<Manifest> Manifest::FromJson(const nlohmann::json& j) {
  if (!j.is_object()) return absl::InvalidArgumentError("manifest is not a JSON object");
  Manifest m;
  std::string format;
  ENGRAM_RETURN_IF_ERROR(GetField(j, "format", &format));
  uint32_t file_format = 0;
  if (format == "engram-rowfile-v1") {
    file_format = 1;
  } else if (format == "engram-rowfile-v2") {
    file_format = 2;
  } else {
    return absl::InvalidArgumentError(absl::StrCat("unknown manifest format \"", format, "\""));
  }
  uint64_t rows = 0;
  uint32_t row_bytes = 0;
  ENGRAM_RETURN_IF_ERROR(GetField(j, "model", &m.model));
  ENGRAM_RETURN_IF_ERROR(GetField(j, "layer", &m.layer));
  ENGRAM_RETURN_IF_ERROR(GetField(j, "version", &m.version));
  ENGRAM_RETURN_IF_ERROR(GetField(j, "rows", &rows));
  ENGRAM_RETURN_IF_ERROR(GetField(j, "row_bytes", &row_bytes));
  ENGRAM_RETURN_IF_ERROR(GetField(j, "dtype", &m.dtype));
  ENGRAM_RETURN_IF_ERROR(GetField(j, "head_dim", &m.head_dim));
  ENGRAM_ASSIGN_OR_RETURN(m.layout, RowLayout::For(rows, row_bytes, file_format));
  nlohmann::json layout, file, chunks, source;
  ENGRAM_RETURN_IF_ERROR(GetField(j, "layout", &layout));
  ENGRAM_RETURN_IF_ERROR(GetField(j, "file", &file));
  ENGRAM_RETURN_IF_ERROR(GetField(j, "chunks", &chunks));
  ENGRAM_RETURN_IF_ERROR(GetField(j, "source", &source));
  uint32_t page_bytes = 0, rows_per_page = 0;
  uint64_t header_bytes = 0;
  ENGRAM_RETURN_IF_ERROR(GetField(layout, "page_bytes", &page_bytes));
  ENGRAM_RETURN_IF_ERROR(GetField(layout, "rows_per_page", &rows_per_page));
  ENGRAM_RETURN_IF_ERROR(GetField(layout, "header_bytes", &header_bytes));
  if (page_bytes != m.layout.page_bytes || rows_per_page != m.layout.rows_per_page ||
      header_bytes != m.layout.header_bytes) {
    return absl::InvalidArgumentError("manifest layout does not match rows and row_bytes");
  }
  ENGRAM_RETURN_IF_ERROR(GetField(file, "name", &m.row_file));
  ENGRAM_RETURN_IF_ERROR(GetField(file, "bytes", &m.file_bytes));
  ENGRAM_RETURN_IF_ERROR(GetField(file, "header_crc32c", &m.header_crc32c));
  ENGRAM_RETURN_IF_ERROR(GetField(chunks, "bytes", &m.chunk_bytes));
  ENGRAM_RETURN_IF_ERROR(GetField(chunks, "crc32c", &m.chunk_crc32c));
  ENGRAM_RETURN_IF_ERROR(GetField(source, "files", &m.source.files));
  ENGRAM_RETURN_IF_ERROR(GetField(source, "tensors", &m.source.tensors));
  ENGRAM_RETURN_IF_ERROR(GetField(source, "dtype", &m.source.dtype));
  ENGRAM_RETURN_IF_ERROR(GetField(source, "bytes", &m.source.bytes));
  ENGRAM_RETURN_IF_ERROR(GetField(source, "crc32c", &m.source.crc32c));
  ENGRAM_RETURN_IF_ERROR(GetField(source, "fingerprint", &m.source.fingerprint));
  ENGRAM_RETURN_IF_ERROR(GetField(j, "created", &m.created));
  if (absl::Status s = CheckChunkBytes(m.chunk_bytes); !s.ok()) return Annotate(s, "manifest");
  auto expected_row_bytes = RowBytes(m.dtype, m.head_dim);
  if (!expected_row_bytes.ok()) return Annotate(expected_row_bytes.status(), "manifest");
  if (*expected_row_bytes != m.layout.row_bytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("manifest row_bytes ", m.layout.row_bytes, " does not match dtype ", m.dtype,
                     " with head_dim ", m.head_dim, " (", *expected_row_bytes, " bytes)"));
  }
  if (m.file_bytes != m.layout.file_bytes()) {
    return absl::InvalidArgumentError(absl::StrCat("manifest file size ", m.file_bytes,
                                                   " does not match the layout's ",
                                                   m.layout.file_bytes()));
  }
  if (m.chunk_crc32c.size() != m.num_chunks()) {
    return absl::InvalidArgumentError(absl::StrCat("manifest lists ", m.chunk_crc32c.size(),
                                                   " chunk checksums, the layout has ",
                                                   m.num_chunks(), " chunks"));
  }
  if (m.layout.page_checksums()) {
    nlohmann::json pages;
    uint64_t offset = 0, bytes = 0;
    ENGRAM_RETURN_IF_ERROR(GetField(j, "page_checksums", &pages));
    ENGRAM_RETURN_IF_ERROR(GetField(pages, "offset", &offset));
    ENGRAM_RETURN_IF_ERROR(GetField(pages, "bytes", &bytes));
    ENGRAM_RETURN_IF_ERROR(GetField(pages, "crc32c", &m.page_checksums_crc32c));
    if (offset != m.layout.data_end() || bytes != m.layout.page_checksum_bytes()) {
      return absl::InvalidArgumentError(
          "manifest page_checksums region does not match rows and row_bytes");
    }
  }
  return m;
}

absl::Status CheckChunkBytes(uint64_t chunk_bytes) {
  if (chunk_bytes == 0 || chunk_bytes % kRowFilePageBytes != 0 || chunk_bytes > kMaxChunkBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("chunk size ", chunk_bytes, " must be a multiple of ", kRowFilePageBytes,
                     " in [", kRowFilePageBytes, ", ", kMaxChunkBytes, "]"));
  }
  return absl::OkStatus();
}

absl::Status WriteManifest(const std::string& path, const Manifest& manifest) {
  return WriteFileAtomically(path, manifest.ToJson().dump(1) + "\n");
}

absl::StatusOr<Manifest> ReadManifest(const std::string& path) {
  ENGRAM_ASSIGN_OR_RETURN(nlohmann::json j, ReadJsonFile(path));
  auto m = Manifest::FromJson(j);
  if (!m.ok()) return Annotate(m.status(), path);
  return m;
}

// ---- Writer ------------------------------------------------------------------------------------

absl::StatusOr<std::unique_ptr<RowFileWriter>> RowFileWriter::Create(const std::string& path,
                                                                     const Manifest& manifest) {
  ENGRAM_RETURN_IF_ERROR(CheckChunkBytes(manifest.chunk_bytes));
  auto w = std::unique_ptr<RowFileWriter>(new RowFileWriter());
  w->path_ = path;
  w->manifest_ = manifest;
  ENGRAM_ASSIGN_OR_RETURN(w->fd_, OpenFile(path, O_WRONLY | O_CREAT | O_TRUNC));
  w->chunk_.assign(manifest.chunk_bytes, 0);
  return w;
}

RowFileWriter::~RowFileWriter() = default;

absl::Status RowFileWriter::FlushChunk() {
  if (chunk_fill_ == 0) return absl::OkStatus();
  const uint64_t offset = manifest_.ChunkBegin(chunks_written_);
  crcs_.push_back(Crc32c(0, chunk_.data(), chunk_fill_));
  ENGRAM_RETURN_IF_ERROR(PwriteAll(fd_.get(), chunk_.data(), chunk_fill_, offset, path_));
  // Tables can be far larger than RAM: start write-back now and drop what was written two
  // chunks ago from the page cache, so an import does not evict everything else on the host.
  sync_file_range(fd_.get(), static_cast<off_t>(offset), static_cast<off_t>(chunk_fill_),
                  SYNC_FILE_RANGE_WRITE);
  if (chunks_written_ >= 2) {
    const uint64_t old = manifest_.ChunkBegin(chunks_written_ - 2);
    sync_file_range(
        fd_.get(), static_cast<off_t>(old), static_cast<off_t>(manifest_.chunk_bytes),
        SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE | SYNC_FILE_RANGE_WAIT_AFTER);
    posix_fadvise(fd_.get(), static_cast<off_t>(old), static_cast<off_t>(manifest_.chunk_bytes),
                  POSIX_FADV_DONTNEED);
  }
  ++chunks_written_;
  std::memset(chunk_.data(), 0, chunk_.size());
  chunk_fill_ = 0;
  return absl::OkStatus();
}

absl::Status RowFileWriter::Append(const uint8_t* rows, uint64_t n) {
  const RowLayout& l = manifest_.layout;
  if (rows_written_ + n > l.rows) {
    return absl::InvalidArgumentError(
        absl::StrCat("row file ", path_, " takes ", l.rows, " rows; got ", rows_written_ + n));
  }
  // chunk_fill_ counts the complete pages in chunk_; the current page starts there.
  for (uint64_t i = 0; i < n;) {
    const uint64_t k = std::min<uint64_t>(n - i, l.rows_per_page - page_fill_);
    std::memcpy(chunk_.data() + chunk_fill_ + page_fill_ * l.row_bytes, rows + i * l.row_bytes,
                k * l.row_bytes);
    page_fill_ += static_cast<uint32_t>(k);
    i += k;
    rows_written_ += k;
    if (page_fill_ == l.rows_per_page) {
      // padding after the last row stays zero
      page_crcs_.push_back(PageChecksum(chunk_.data() + chunk_fill_, page_crcs_.size()));
      chunk_fill_ += l.page_bytes;
      page_fill_ = 0;
      if (chunk_fill_ == chunk_.size()) ENGRAM_RETURN_IF_ERROR(FlushChunk());
    }
  }
  return absl::OkStatus();
}

absl::Status RowFileWriter::Finish(Manifest* manifest) {
  const RowLayout& l = manifest_.layout;
  if (rows_written_ != l.rows) {
    return absl::FailedPreconditionError(
        absl::StrCat("row file ", path_, " got ", rows_written_, " of ", l.rows, " rows"));
  }
  if (page_fill_ > 0) {  // the last, partly filled page
    page_crcs_.push_back(PageChecksum(chunk_.data() + chunk_fill_, page_crcs_.size()));
    chunk_fill_ += l.page_bytes;
    page_fill_ = 0;
    if (chunk_fill_ == chunk_.size()) ENGRAM_RETURN_IF_ERROR(FlushChunk());
  }
  if (l.page_checksums()) {
    // The page checksum region follows the last page, in the same chunks (so the chunk checksums
    // cover it too).
    std::vector<uint8_t> region(l.page_checksum_bytes(), 0);
    for (size_t p = 0; p < page_crcs_.size(); ++p) {
      for (int b = 0; b < 4; ++b) region[p * 4 + b] = static_cast<uint8_t>(page_crcs_[p] >> (8 * b));
    }
    manifest_.page_checksums_crc32c = Crc32c(0, region.data(), region.size());
    for (size_t off = 0; off < region.size(); off += l.page_bytes) {
      std::memcpy(chunk_.data() + chunk_fill_, region.data() + off, l.page_bytes);
      chunk_fill_ += l.page_bytes;
      if (chunk_fill_ == chunk_.size()) ENGRAM_RETURN_IF_ERROR(FlushChunk());
    }
  }
  ENGRAM_RETURN_IF_ERROR(FlushChunk());
  uint32_t header_crc = 0;
  std::vector<uint8_t> header = EncodeHeader(manifest_, &header_crc);
  ENGRAM_RETURN_IF_ERROR(PwriteAll(fd_.get(), header.data(), header.size(), 0, path_));
  if (::fdatasync(fd_.get()) != 0) return PosixError("cannot fsync", path_, errno);
  manifest->file_bytes = l.file_bytes();
  manifest->header_crc32c = header_crc;
  manifest->chunk_crc32c = crcs_;
  manifest->page_checksums_crc32c = manifest_.page_checksums_crc32c;
  return absl::OkStatus();
}

// ---- Verification ------------------------------------------------------------------------------

namespace {

// Opens a row file and checks its header against the manifest; `*size` gets the file size.
absl::StatusOr<ScopedFd> OpenRowFile(const Manifest& m, const std::string& path, uint64_t* size) {
  ENGRAM_ASSIGN_OR_RETURN(ScopedFd fd, OpenFile(path, O_RDONLY));
  struct stat st;
  if (::fstat(fd.get(), &st) != 0) return PosixError("cannot stat", path, errno);
  *size = static_cast<uint64_t>(st.st_size);
  if (*size < kRowFileHeaderBytes) {
    return absl::DataLossError(
        absl::StrCat(path, ": file truncated to ", *size, " bytes, inside the header"));
  }
  std::vector<uint8_t> header(kRowFileHeaderBytes);
  ENGRAM_RETURN_IF_ERROR(PreadAll(fd.get(), header.data(), header.size(), 0, path));
  ENGRAM_RETURN_IF_ERROR(CheckHeader(m, header.data(), path));
  return fd;
}

absl::Status CheckFileSize(const Manifest& m, const std::string& path, uint64_t size) {
  if (size == m.file_bytes) return absl::OkStatus();
  return absl::DataLossError(absl::StrCat(path, ": file has ", size, " bytes, the manifest ",
                                          m.file_bytes, " (truncated or extended after import?)"));
}

}  // namespace

absl::Status QuickCheckRowFile(const Manifest& m, const std::string& path) {
  uint64_t size = 0;
  ENGRAM_ASSIGN_OR_RETURN(ScopedFd fd, OpenRowFile(m, path, &size));
  return CheckFileSize(m, path, size);
}

namespace {

// Reads and checks the page checksum region of an open format-2 file of `size` bytes.
absl::StatusOr<std::vector<uint32_t>> ReadPageChecksumRegion(const Manifest& m, int fd,
                                                             const std::string& path,
                                                             uint64_t size) {
  const RowLayout& l = m.layout;
  const uint64_t begin = l.data_end(), bytes = l.page_checksum_bytes();
  if (size < begin + bytes) {
    return absl::DataLossError(absl::StrFormat(
        "%s: page checksums [%d, %d): file truncated (file has %d bytes, needs %d)", path, begin,
        begin + bytes, size, m.file_bytes));
  }
  std::vector<uint8_t> region(bytes);
  ENGRAM_RETURN_IF_ERROR(PreadAll(fd, region.data(), bytes, begin, path));
  const uint32_t crc = Crc32c(0, region.data(), bytes);
  if (crc != m.page_checksums_crc32c) {
    return absl::DataLossError(absl::StrFormat(
        "%s: page checksums [%d, %d): checksum mismatch (manifest 0x%08x, file 0x%08x)", path,
        begin, begin + bytes, m.page_checksums_crc32c, crc));
  }
  std::vector<uint32_t> crcs(l.pages());
  for (uint64_t p = 0; p < crcs.size(); ++p) {
    crcs[p] = uint32_t{region[p * 4]} | uint32_t{region[p * 4 + 1]} << 8 |
              uint32_t{region[p * 4 + 2]} << 16 | uint32_t{region[p * 4 + 3]} << 24;
  }
  return crcs;
}

}  // namespace

absl::Status CheckPage(const RowLayout& l, const std::string& path, uint64_t page,
                       const uint8_t* data, uint32_t expected) {
  const uint32_t crc = PageChecksum(data, page);
  if (crc == expected) return absl::OkStatus();
  uint64_t first = 0, end = 0;
  l.PageRows(page, &first, &end);
  const uint64_t begin = l.PageOffset(page);
  return absl::DataLossError(absl::StrFormat(
      "%s: page %d (rows %d..%d) [%d, %d): checksum mismatch (stored 0x%08x, read 0x%08x)", path,
      page, first, end - 1, begin, begin + l.page_bytes, expected, crc));
}

absl::StatusOr<std::vector<uint32_t>> ReadPageChecksums(const Manifest& m,
                                                        const std::string& path) {
  ENGRAM_RETURN_IF_ERROR(CheckServableFormat(m, path));
  uint64_t size = 0;
  ENGRAM_ASSIGN_OR_RETURN(ScopedFd fd, OpenRowFile(m, path, &size));
  return ReadPageChecksumRegion(m, fd.get(), path, size);
}

absl::Status CheckServableFormat(const Manifest& m, const std::string& path) {
  if (m.layout.page_checksums()) return absl::OkStatus();
  return absl::FailedPreconditionError(absl::StrCat(
      path, ": row file format ", m.layout.format,
      " has no page checksums, and this engram-memory serves only format ", kRowFileFormatVersion,
      " (corruption after load would go unnoticed); import the table again with `engram table "
      "import MODEL_DIR --store STORE` (it rewrites format-1 tables without --force), or roll "
      "back to an engram-memory older than format ", kRowFileFormatVersion));
}

absl::Status ReadVerifiedChunks(const Manifest& m, const std::string& path, const ChunkFn& fn) {
  ENGRAM_RETURN_IF_ERROR(CheckChunkBytes(m.chunk_bytes));
  uint64_t size = 0;
  ENGRAM_ASSIGN_OR_RETURN(ScopedFd fd, OpenRowFile(m, path, &size));
  const RowLayout& l = m.layout;
  std::vector<uint32_t> page_crcs;
  if (l.page_checksums() && size >= m.file_bytes) {
    // A truncated file is reported below, naming the first chunk it cuts.
    ENGRAM_ASSIGN_OR_RETURN(page_crcs, ReadPageChecksumRegion(m, fd.get(), path, size));
  }
  posix_fadvise(fd.get(), 0, 0, POSIX_FADV_SEQUENTIAL);
  std::vector<uint8_t> buf(m.chunk_bytes);
  const uint64_t chunks = m.num_chunks();
  for (uint64_t c = 0; c < chunks; ++c) {
    const uint64_t begin = m.ChunkBegin(c), end = m.ChunkEnd(c);
    if (size < end) {
      return absl::DataLossError(absl::StrFormat(
          "%s: chunk %d of %d [%d, %d): file truncated (file has %d bytes, needs %d)", path, c,
          chunks, begin, end, size, m.file_bytes));
    }
    ENGRAM_RETURN_IF_ERROR(PreadAll(fd.get(), buf.data(), end - begin, begin, path));
    const uint32_t crc = Crc32c(0, buf.data(), end - begin);
    if (crc != m.chunk_crc32c[c]) {
      return absl::DataLossError(absl::StrFormat(
          "%s: chunk %d of %d [%d, %d): checksum mismatch (manifest 0x%08x, file 0x%08x)", path, c,
          chunks, begin, end, m.chunk_crc32c[c], crc));
    }
    // The chunk matches the manifest; its pages must match their own checksums too (they were
    // computed from the same bytes, so a mismatch means a writer or checksum fault).
    for (uint64_t off = begin; !page_crcs.empty() && off < end && off < l.data_end();
         off += l.page_bytes) {
      const uint64_t page = (off - l.header_bytes) / l.page_bytes;
      ENGRAM_RETURN_IF_ERROR(CheckPage(l, path, page, buf.data() + (off - begin), page_crcs[page]));
    }
    if (fn) ENGRAM_RETURN_IF_ERROR(fn(c, begin, buf.data(), end - begin));
    posix_fadvise(fd.get(), static_cast<off_t>(begin), static_cast<off_t>(end - begin),
                  POSIX_FADV_DONTNEED);
  }
  return CheckFileSize(m, path, size);
}

absl::Status VerifyRowFile(const Manifest& manifest, const std::string& path) {
  return ReadVerifiedChunks(manifest, path, nullptr);
}

}  // namespace engram
