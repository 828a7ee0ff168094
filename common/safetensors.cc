#include "common/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <bit>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <limits>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status.h"
#include "nlohmann/json.hpp"

namespace engram {
namespace {

struct DTypeInfo {
  DType dtype;
  absl::string_view name;
  size_t size;
};

constexpr std::array<DTypeInfo, 16> kDTypes = {{
    {DType::kF64, "F64", 8},        {DType::kF32, "F32", 4},
    {DType::kF16, "F16", 2},        {DType::kBF16, "BF16", 2},
    {DType::kF8E4M3, "F8_E4M3", 1}, {DType::kF8E5M2, "F8_E5M2", 1},
    {DType::kF8E8M0, "F8_E8M0", 1}, {DType::kI64, "I64", 8},
    {DType::kI32, "I32", 4},        {DType::kI16, "I16", 2},
    {DType::kI8, "I8", 1},          {DType::kU64, "U64", 8},
    {DType::kU32, "U32", 4},        {DType::kU16, "U16", 2},
    {DType::kU8, "U8", 1},          {DType::kBool, "BOOL", 1},
}};

const DTypeInfo& Info(DType dtype) {
  for (const auto& info : kDTypes) {
    if (info.dtype == dtype) return info;
  }
  return kDTypes[1];
}

absl::Status Malformed(const std::string& path, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("malformed safetensors file ", path, ": ", what));
}

// Positive finite E4M3 values in increasing order, index = bit pattern (0x00..0x7e).
const std::array<float, 127>& E4M3Table() {
  static const std::array<float, 127> table = [] {
    std::array<float, 127> t{};
    for (int bits = 0; bits < 127; ++bits) t[bits] = F8E4M3ToF32(static_cast<uint8_t>(bits));
    return t;
  }();
  return table;
}

}  // namespace

size_t DTypeSize(DType dtype) { return Info(dtype).size; }
absl::string_view DTypeName(DType dtype) { return Info(dtype).name; }

absl::StatusOr<DType> ParseDType(absl::string_view name) {
  for (const auto& info : kDTypes) {
    if (info.name == name) return info.dtype;
  }
  return absl::InvalidArgumentError(absl::StrCat("unknown safetensors dtype \"", name, "\""));
}

int64_t TensorView::num_elements() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::string TensorView::ShapeString() const { return absl::StrCat("[", absl::StrJoin(shape, ", "), "]"); }

// ---- SafetensorsFile ---------------------------------------------------------------------------

absl::StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::Open(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    int err = errno;
    std::string msg = absl::StrCat("cannot open ", path, ": ", std::strerror(err));
    return err == ENOENT ? absl::NotFoundError(msg) : absl::PermissionDeniedError(msg);
  }
  struct stat st;
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    return absl::InvalidArgumentError(absl::StrCat(path, " is not a regular file"));
  }
  const size_t size = static_cast<size_t>(st.st_size);
  if (size < 8) {
    ::close(fd);
    return Malformed(path, absl::StrCat("file is ", size, " bytes, shorter than the 8-byte header"));
  }
  void* map = ::mmap(nullptr, size, PROT_READ, MAP_SHARED, fd, 0);
  ::close(fd);
  if (map == MAP_FAILED) {
    return absl::InternalError(absl::StrCat("mmap ", path, ": ", std::strerror(errno)));
  }
  std::unique_ptr<SafetensorsFile> file(new SafetensorsFile());
  file->path_ = path;
  file->map_ = map;
  file->map_size_ = size;

  const auto* bytes = static_cast<const uint8_t*>(map);
  uint64_t header_len = 0;
  std::memcpy(&header_len, bytes, 8);  // little-endian host (x86_64)
  if (header_len > size - 8 || header_len > (100u << 20)) {
    return Malformed(path, absl::StrCat("header length ", header_len, " exceeds the file size ", size));
  }
  const uint64_t data_start = 8 + header_len;
  const uint64_t data_size = size - data_start;
  nlohmann::json header = nlohmann::json::parse(
      reinterpret_cast<const char*>(bytes + 8), reinterpret_cast<const char*>(bytes + data_start),
      /*cb=*/nullptr, /*allow_exceptions=*/false);
  if (header.is_discarded() || !header.is_object()) {
    return Malformed(path, "header is not a JSON object");
  }
  for (auto it = header.begin(); it != header.end(); ++it) {
    if (it.key() == "__metadata__") {
      if (!it.value().is_object()) return Malformed(path, "__metadata__ is not an object");
      for (auto m = it.value().begin(); m != it.value().end(); ++m) {
        if (!m.value().is_string()) {
          return Malformed(path, absl::StrCat("metadata value of \"", m.key(), "\" is not a string"));
        }
        file->metadata_[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    const nlohmann::json& entry = it.value();
    if (!entry.is_object() || !entry.contains("dtype") || !entry.contains("shape") ||
        !entry.contains("data_offsets") || !entry["dtype"].is_string() ||
        !entry["shape"].is_array() || !entry["data_offsets"].is_array() ||
        entry["data_offsets"].size() != 2) {
      return Malformed(path, absl::StrCat("entry \"", it.key(), "\" lacks dtype/shape/data_offsets"));
    }
    TensorView view;
    view.name = it.key();
    auto dtype = ParseDType(entry["dtype"].get<std::string>());
    if (!dtype.ok()) return Malformed(path, absl::StrCat("tensor \"", it.key(), "\": ", dtype.status().message()));
    view.dtype = *dtype;
    uint64_t elements = 1;
    for (const auto& d : entry["shape"]) {
      if (!d.is_number_integer() || d.get<int64_t>() < 0) {
        return Malformed(path, absl::StrCat("tensor \"", it.key(), "\" has a bad shape"));
      }
      view.shape.push_back(d.get<int64_t>());
      uint64_t dim = static_cast<uint64_t>(view.shape.back());
      if (dim != 0 && elements > std::numeric_limits<uint64_t>::max() / dim) {
        return Malformed(path, absl::StrCat("tensor \"", it.key(), "\" shape overflows"));
      }
      elements *= dim;
    }
    const auto& offs = entry["data_offsets"];
    if (!offs[0].is_number_unsigned() || !offs[1].is_number_unsigned()) {
      return Malformed(path, absl::StrCat("tensor \"", it.key(), "\" has bad data_offsets"));
    }
    uint64_t begin = offs[0].get<uint64_t>();
    uint64_t end = offs[1].get<uint64_t>();
    if (begin > end || end > data_size) {
      return Malformed(path, absl::StrCat("tensor \"", it.key(), "\" data [", begin, ", ", end,
                                          ") lies outside the ", data_size, "-byte data section",
                                          " (truncated file?)"));
    }
    // elements is bounded by the byte count first, so the product below cannot wrap around (a
    // shape of 2^61 F64 elements would otherwise "need" 0 bytes and pass).
    const uint64_t element_bytes = DTypeSize(view.dtype);
    if (elements > (end - begin) / element_bytes || elements * element_bytes != end - begin) {
      return Malformed(
          path, absl::StrCat("tensor \"", it.key(), "\" has ", end - begin, " bytes but shape ",
                             view.ShapeString(), " of ", DTypeName(view.dtype), " needs ", elements,
                             " x ", element_bytes));
    }
    view.data = bytes + data_start + begin;
    view.size_bytes = end - begin;
    view.file_offset = data_start + begin;
    file->tensors_.push_back(std::move(view));
  }
  std::sort(file->tensors_.begin(), file->tensors_.end(),
            [](const TensorView& a, const TensorView& b) { return a.file_offset < b.file_offset; });
  for (size_t i = 0; i < file->tensors_.size(); ++i) file->index_[file->tensors_[i].name] = i;
  return file;
}

SafetensorsFile::~SafetensorsFile() {
  if (map_ != nullptr) ::munmap(map_, map_size_);
}

const TensorView* SafetensorsFile::Find(absl::string_view name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

absl::StatusOr<const TensorView*> SafetensorsFile::Get(absl::string_view name) const {
  if (const TensorView* t = Find(name)) return t;
  return absl::NotFoundError(absl::StrCat("tensor \"", name, "\" not found in ", path_));
}

void SafetensorsFile::AdviseSequential() const {
  ::madvise(map_, map_size_, MADV_SEQUENTIAL);
}

// ---- SafetensorsDir ----------------------------------------------------------------------------

absl::StatusOr<std::unique_ptr<SafetensorsDir>> SafetensorsDir::Open(const std::string& dir) {
  std::error_code ec;
  if (!std::filesystem::is_directory(dir, ec)) {
    return absl::NotFoundError(absl::StrCat("model directory ", dir, " does not exist"));
  }
  std::vector<std::string> paths;
  for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
    if (entry.path().extension() == ".safetensors") paths.push_back(entry.path().string());
  }
  if (ec) return absl::InternalError(absl::StrCat("listing ", dir, ": ", ec.message()));
  if (paths.empty()) return absl::NotFoundError(absl::StrCat("no *.safetensors files in ", dir));
  std::sort(paths.begin(), paths.end());
  auto result = std::make_unique<SafetensorsDir>();
  for (const auto& path : paths) {
    ENGRAM_ASSIGN_OR_RETURN(auto file, SafetensorsFile::Open(path));
    for (const auto& t : file->tensors()) {
      auto [it, inserted] = result->index_.emplace(t.name, &t);
      if (!inserted) {
        const std::string& earlier = result->FileOf(it->second)->path();
        return absl::InvalidArgumentError(
            absl::StrCat("tensor \"", t.name, "\" appears in both ", earlier, " and ", path));
      }
    }
    result->files_.push_back(std::move(file));
  }
  return result;
}

const SafetensorsFile* SafetensorsDir::FileOf(const TensorView* tensor) const {
  for (const auto& f : files_) {
    if (f->Find(tensor->name) == tensor) return f.get();
  }
  return nullptr;
}

const TensorView* SafetensorsDir::Find(absl::string_view name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : it->second;
}

absl::StatusOr<const TensorView*> SafetensorsDir::Get(absl::string_view name) const {
  if (const TensorView* t = Find(name)) return t;
  return absl::NotFoundError(absl::StrCat("tensor \"", name, "\" not found in the model's safetensors files"));
}

std::vector<const TensorView*> SafetensorsDir::tensors() const {
  std::vector<const TensorView*> out;
  for (const auto& f : files_) {
    for (const auto& t : f->tensors()) out.push_back(&t);
  }
  return out;
}

// ---- Conversions -------------------------------------------------------------------------------

float Bf16ToF32(uint16_t bits) { return std::bit_cast<float>(static_cast<uint32_t>(bits) << 16); }

uint16_t F32ToBf16(float value) {
  uint32_t bits = std::bit_cast<uint32_t>(value);
  if (std::isnan(value)) return static_cast<uint16_t>((bits >> 16) | 0x40);
  uint32_t rounding = 0x7fff + ((bits >> 16) & 1);
  return static_cast<uint16_t>((bits + rounding) >> 16);
}

float F16ToF32(uint16_t h) {
  uint32_t sign = static_cast<uint32_t>(h & 0x8000) << 16;
  uint32_t exp = (h >> 10) & 0x1f;
  uint32_t mant = h & 0x3ff;
  if (exp == 0) {
    if (mant == 0) return std::bit_cast<float>(sign);
    float v = std::ldexp(static_cast<float>(mant), -24);  // subnormal
    return sign ? -v : v;
  }
  if (exp == 31) return std::bit_cast<float>(sign | 0x7f800000 | (mant << 13));
  return std::bit_cast<float>(sign | ((exp + 112) << 23) | (mant << 13));
}

uint16_t F32ToF16(float value) {
  uint32_t bits = std::bit_cast<uint32_t>(value);
  uint16_t sign = static_cast<uint16_t>((bits >> 16) & 0x8000);
  uint32_t abs = bits & 0x7fffffff;
  if (abs > 0x7f800000) return sign | 0x7e00;                  // NaN
  if (abs >= 0x477ff000) return sign | 0x7c00;                 // overflow -> inf (>= 65520)
  if (abs < 0x38800000) {                                      // subnormal or zero in f16
    float f = std::bit_cast<float>(abs);
    // Scale so the subnormal unit (2^-24) becomes 1 and round to nearest even.
    float scaled = f * 16777216.0f;
    uint32_t m = static_cast<uint32_t>(std::nearbyint(scaled));
    return sign | static_cast<uint16_t>(m);
  }
  uint32_t exp = ((abs >> 23) - 112) << 10;
  uint32_t mant = (abs >> 13) & 0x3ff;
  uint32_t rest = abs & 0x1fff;
  uint32_t h = exp | mant;
  if (rest > 0x1000 || (rest == 0x1000 && (h & 1))) ++h;
  return sign | static_cast<uint16_t>(h);
}

float F8E4M3ToF32(uint8_t bits) {
  const bool neg = bits & 0x80;
  const int exp = (bits >> 3) & 0xf;
  const int mant = bits & 0x7;
  float v;
  if (exp == 0xf && mant == 0x7) return std::numeric_limits<float>::quiet_NaN();
  if (exp == 0) {
    v = std::ldexp(static_cast<float>(mant), -9);  // mant/8 * 2^-6
  } else {
    v = std::ldexp(1.0f + mant / 8.0f, exp - 7);
  }
  return neg ? -v : v;
}

uint8_t F32ToF8E4M3(float value) {
  if (std::isnan(value)) return 0x7f;
  const uint8_t sign = std::signbit(value) ? 0x80 : 0x00;
  const float a = std::fabs(value);
  const auto& table = E4M3Table();
  if (a >= table[126]) return sign | 126;  // saturate at 448
  // First index whose value is >= a.
  auto it = std::lower_bound(table.begin(), table.end(), a);
  int hi = static_cast<int>(it - table.begin());
  if (hi == 0) return sign;
  int lo = hi - 1;
  float dlo = a - table[lo], dhi = table[hi] - a;
  int pick = dlo < dhi ? lo : (dhi < dlo ? hi : ((lo & 1) == 0 ? lo : hi));
  return sign | static_cast<uint8_t>(pick);
}

float F8E8M0ToF32(uint8_t bits) {
  if (bits == 0xff) return std::numeric_limits<float>::quiet_NaN();
  return std::ldexp(1.0f, static_cast<int>(bits) - 127);
}

absl::Status ConvertToF32(DType dtype, const uint8_t* src, size_t count, float* out) {
  switch (dtype) {
    case DType::kF32:
      // An empty tensor's buffers may be null, and memcpy from or to null is undefined even for
      // 0 bytes (found by tests/fuzz/safetensors_fuzz under UBSan).
      if (count > 0) std::memcpy(out, src, count * 4);
      return absl::OkStatus();
    case DType::kF64:
      for (size_t i = 0; i < count; ++i) {
        double d;
        std::memcpy(&d, src + 8 * i, 8);
        out[i] = static_cast<float>(d);
      }
      return absl::OkStatus();
    case DType::kBF16:
      for (size_t i = 0; i < count; ++i) {
        uint16_t b;
        std::memcpy(&b, src + 2 * i, 2);
        out[i] = Bf16ToF32(b);
      }
      return absl::OkStatus();
    case DType::kF16:
      for (size_t i = 0; i < count; ++i) {
        uint16_t b;
        std::memcpy(&b, src + 2 * i, 2);
        out[i] = F16ToF32(b);
      }
      return absl::OkStatus();
    case DType::kF8E4M3:
      for (size_t i = 0; i < count; ++i) out[i] = F8E4M3ToF32(src[i]);
      return absl::OkStatus();
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("cannot convert dtype ", DTypeName(dtype), " to f32"));
  }
}

absl::StatusOr<std::vector<float>> TensorToF32(const TensorView& tensor) {
  std::vector<float> out(static_cast<size_t>(tensor.num_elements()));
  absl::Status s = ConvertToF32(tensor.dtype, tensor.data, out.size(), out.data());
  if (!s.ok()) return Annotate(s, absl::StrCat("tensor \"", tensor.name, "\""));
  return out;
}

absl::Status ExpectShape(const TensorView& tensor, absl::Span<const int64_t> shape) {
  if (tensor.shape.size() == shape.size() && std::equal(shape.begin(), shape.end(), tensor.shape.begin())) {
    return absl::OkStatus();
  }
  return absl::InvalidArgumentError(absl::StrCat("tensor \"", tensor.name, "\" has shape ",
                                                 tensor.ShapeString(), ", expected [",
                                                 absl::StrJoin(shape, ", "), "]"));
}

// ---- Writer ------------------------------------------------------------------------------------

void SafetensorsWriter::SetMetadata(std::string key, std::string value) {
  metadata_[std::move(key)] = std::move(value);
}

void SafetensorsWriter::Add(std::string name, DType dtype, std::vector<int64_t> shape,
                            absl::Span<const uint8_t> data) {
  entries_.push_back(Entry{std::move(name), dtype, std::move(shape), data, nullptr, nullptr});
}

void SafetensorsWriter::AddProduced(std::string name, DType dtype, std::vector<int64_t> shape,
                                    Producer producer) {
  entries_.push_back(Entry{std::move(name), dtype, std::move(shape), {}, std::move(producer), nullptr});
}

void SafetensorsWriter::AddF32As(std::string name, DType dtype, std::vector<int64_t> shape,
                                 absl::Span<const float> values) {
  auto owned = std::make_shared<std::vector<uint8_t>>(values.size() * DTypeSize(dtype));
  uint8_t* p = owned->data();
  for (size_t i = 0; i < values.size(); ++i) {
    switch (dtype) {
      case DType::kBF16: {
        uint16_t b = F32ToBf16(values[i]);
        std::memcpy(p + 2 * i, &b, 2);
        break;
      }
      case DType::kF16: {
        uint16_t b = F32ToF16(values[i]);
        std::memcpy(p + 2 * i, &b, 2);
        break;
      }
      case DType::kF64: {
        double d = values[i];
        std::memcpy(p + 8 * i, &d, 8);
        break;
      }
      default:
        std::memcpy(p + 4 * i, &values[i], 4);
        break;
    }
  }
  if (dtype != DType::kBF16 && dtype != DType::kF16 && dtype != DType::kF64) dtype = DType::kF32;
  Entry e{std::move(name), dtype, std::move(shape), absl::Span<const uint8_t>(*owned), nullptr, owned};
  entries_.push_back(std::move(e));
}

absl::Status SafetensorsWriter::Write(const std::string& path) const {
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata_.empty()) {
    nlohmann::ordered_json meta = nlohmann::ordered_json::object();
    for (const auto& [k, v] : metadata_) meta[k] = v;
    header["__metadata__"] = meta;
  }
  uint64_t offset = 0;
  std::vector<uint64_t> sizes;
  for (const auto& e : entries_) {
    uint64_t elements = 1;
    for (int64_t d : e.shape) elements *= static_cast<uint64_t>(d);
    uint64_t bytes = elements * DTypeSize(e.dtype);
    if (!e.producer && e.data.size() != bytes) {
      return absl::InvalidArgumentError(absl::StrCat("tensor \"", e.name, "\": ", e.data.size(),
                                                     " bytes given, shape needs ", bytes));
    }
    header[e.name] = {{"dtype", std::string(DTypeName(e.dtype))},
                      {"shape", e.shape},
                      {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
    sizes.push_back(bytes);
  }
  std::string text = header.dump();
  while ((text.size() + 8) % 8 != 0) text.push_back(' ');  // align the data section to 8 bytes
  const std::string tmp = path + ".tmp";
  FILE* f = std::fopen(tmp.c_str(), "wb");
  if (f == nullptr) {
    return absl::PermissionDeniedError(absl::StrCat("cannot create ", tmp, ": ", std::strerror(errno)));
  }
  auto fail = [&](absl::string_view what) {
    std::fclose(f);
    std::remove(tmp.c_str());
    return absl::InternalError(absl::StrCat("writing ", path, ": ", what));
  };
  uint64_t len = text.size();
  if (std::fwrite(&len, 8, 1, f) != 1 || std::fwrite(text.data(), 1, text.size(), f) != text.size()) {
    return fail(std::strerror(errno));
  }
  std::vector<uint8_t> chunk;
  for (size_t i = 0; i < entries_.size(); ++i) {
    const Entry& e = entries_[i];
    if (!e.producer) {
      if (!e.data.empty() && std::fwrite(e.data.data(), 1, e.data.size(), f) != e.data.size()) {
        return fail(std::strerror(errno));
      }
      continue;
    }
    constexpr size_t kChunk = 8 << 20;
    chunk.resize(kChunk);
    for (uint64_t done = 0; done < sizes[i];) {
      size_t n = static_cast<size_t>(std::min<uint64_t>(kChunk, sizes[i] - done));
      absl::Status s = e.producer(done, chunk.data(), n);
      if (!s.ok()) {
        std::fclose(f);
        std::remove(tmp.c_str());
        return Annotate(s, absl::StrCat("producing tensor \"", e.name, "\""));
      }
      if (std::fwrite(chunk.data(), 1, n, f) != n) return fail(std::strerror(errno));
      done += n;
    }
  }
  if (std::fflush(f) != 0 || ::fsync(fileno(f)) != 0) return fail(std::strerror(errno));
  std::fclose(f);
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    return absl::InternalError(absl::StrCat("rename ", tmp, " -> ", path, ": ", std::strerror(errno)));
  }
  return absl::OkStatus();
}

}  // namespace engram
