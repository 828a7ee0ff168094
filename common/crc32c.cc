#include "common/crc32c.h"

#include <array>
#include <cstring>

namespace engram {
namespace {

constexpr uint32_t kPoly = 0x82f63b78;  // reflected Castagnoli polynomial

const std::array<uint32_t, 256>& Table() {
  static const std::array<uint32_t, 256> table = [] {
    std::array<uint32_t, 256> t{};
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c >> 1) ^ ((c & 1) ? kPoly : 0);
      t[i] = c;
    }
    return t;
  }();
  return table;
}

uint32_t SoftwareCrc(uint32_t crc, const uint8_t* p, size_t n) {
  const auto& table = Table();
  for (size_t i = 0; i < n; ++i) crc = table[(crc ^ p[i]) & 0xff] ^ (crc >> 8);
  return crc;
}

// Buffers of 3 * kStride bytes and more run as three interleaved streams: the crc32 instruction
// has a latency of 3 cycles and a throughput of 1 per cycle, so one dependent chain uses a third
// of it (a 4 KiB page took ~0.5-0.8 us, checked on every row-file read). The streams are joined
// with the CRC's linearity: crc(s, A|B) = shift(crc(s, A), |B|) ^ crc(0, B), where shift (the
// register run over |B| zero bytes) is linear in the register and precomputed as four byte
// tables for the one length kStride. 3 * 1360 = 4080 bytes: a 4 KiB page is one round.
constexpr size_t kStride = 1360;

struct ShiftTables {
  uint32_t t[4][256];
};

const ShiftTables& Shift() {
  static const ShiftTables tables = [] {
    ShiftTables s{};
    const std::array<uint8_t, kStride> zeros{};
    uint32_t basis[32];
    for (int k = 0; k < 32; ++k) basis[k] = SoftwareCrc(uint32_t{1} << k, zeros.data(), kStride);
    for (int i = 0; i < 4; ++i) {
      for (uint32_t v = 0; v < 256; ++v) {
        uint32_t x = 0;
        for (int j = 0; j < 8; ++j) {
          if (v & (1u << j)) x ^= basis[8 * i + j];
        }
        s.t[i][v] = x;
      }
    }
    return s;
  }();
  return tables;
}

// The register after kStride zero bytes, from `crc`.
uint32_t ShiftStride(const ShiftTables& s, uint32_t crc) {
  return s.t[0][crc & 0xff] ^ s.t[1][(crc >> 8) & 0xff] ^ s.t[2][(crc >> 16) & 0xff] ^
         s.t[3][crc >> 24];
}

__attribute__((target("sse4.2"))) uint32_t HardwareCrc(uint32_t crc, const uint8_t* p, size_t n) {
  if (n >= 3 * kStride) {
    const ShiftTables& shift = Shift();
    while (n >= 3 * kStride) {
      uint64_t c0 = crc, c1 = 0, c2 = 0;
      for (size_t i = 0; i < kStride; i += 8) {
        uint64_t v0, v1, v2;
        std::memcpy(&v0, p + i, 8);
        std::memcpy(&v1, p + kStride + i, 8);
        std::memcpy(&v2, p + 2 * kStride + i, 8);
        c0 = __builtin_ia32_crc32di(c0, v0);
        c1 = __builtin_ia32_crc32di(c1, v1);
        c2 = __builtin_ia32_crc32di(c2, v2);
      }
      crc = ShiftStride(shift, ShiftStride(shift, static_cast<uint32_t>(c0)) ^
                                   static_cast<uint32_t>(c1)) ^
            static_cast<uint32_t>(c2);
      p += 3 * kStride;
      n -= 3 * kStride;
    }
  }
  uint64_t c = crc;
  while (n >= 8) {
    uint64_t v;
    std::memcpy(&v, p, 8);
    c = __builtin_ia32_crc32di(c, v);
    p += 8;
    n -= 8;
  }
  uint32_t c32 = static_cast<uint32_t>(c);
  while (n-- > 0) c32 = __builtin_ia32_crc32qi(c32, *p++);
  return c32;
}

bool HaveSse42() {
  static const bool have = __builtin_cpu_supports("sse4.2");
  return have;
}

}  // namespace

uint32_t Crc32c(uint32_t crc, const void* data, size_t n) {
  const auto* p = static_cast<const uint8_t*>(data);
  crc = ~crc;
  crc = HaveSse42() ? HardwareCrc(crc, p, n) : SoftwareCrc(crc, p, n);
  return ~crc;
}

}  // namespace engram
