// Returns the heap memory a large request freed to the kernel.
//
// glibc keeps freed memory in its arenas, and after a large block is freed it raises its mmap
// threshold, so the next large buffers come from the arenas too: after one 4 MiB Tokenize (whose
// ids, token strings and response take a few hundred MiB for a moment) a worker's RSS stayed
// there for good. malloc_trim(0) hands the free pages of every arena back (MADV_DONTNEED); it
// walks the heap, so it runs on one background thread, a moment after the request, at most once
// a second, and only after requests of at least kLargeRequestBytes.
#ifndef ENGRAM_COMMON_MEMORY_TRIM_H_
#define ENGRAM_COMMON_MEMORY_TRIM_H_

#include <cstddef>
#include <cstdint>

namespace engram {

// Requests smaller than this never trigger a trim.
inline constexpr size_t kLargeRequestBytes = 1 << 20;

// Called when a request of `request_bytes` (its message or body) is done with its big buffers:
// schedules a trim (cheap; returns at once) when the request was large.
void TrimMemorySoon(size_t request_bytes);

// Trims now, on this thread; true when memory was returned.
bool TrimMemoryNow();

// Trims done by the background thread so far (for tests and logs).
uint64_t BackgroundMemoryTrims();

}  // namespace engram

#endif  // ENGRAM_COMMON_MEMORY_TRIM_H_
