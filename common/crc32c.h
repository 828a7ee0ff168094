// CRC-32C (Castagnoli), the checksum of table chunks and pages of row files.
// Uses the SSE4.2 crc32 instruction when the CPU has it (three interleaved streams for buffers of
// 4080 bytes and more), a table otherwise; all give the same value.
#ifndef ENGRAM_COMMON_CRC32C_H_
#define ENGRAM_COMMON_CRC32C_H_

#include <cstddef>
#include <cstdint>

namespace engram {

// Extends `crc` (0 for a fresh checksum) over `n` bytes.
uint32_t Crc32c(uint32_t crc, const void* data, size_t n);

}  // namespace engram

#endif  // ENGRAM_COMMON_CRC32C_H_
