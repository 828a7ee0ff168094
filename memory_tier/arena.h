// File: memory_tier/arena.h
//
// The DRAM tier's shared-memory arena: one POSIX shared-memory object per table (shm_open), written
// only by engram-memory and mapped read-only by co-located workers, which read warm rows without a
// round trip (ArenaReader in tier_client.h). This header is the format's specification.
//
// Layout of the object (all integers little-endian, offsets from the start of the mapping):
//
//   [0, 4096)                 ArenaHeader (below)
//   [slot_header_offset, ...) cache layout only: SlotHeader[slots], 16 bytes each
//   [data_offset, ...)        slots * slot_bytes bytes of row data; page-aligned start
//
// Two layouts:
//   resident  the whole table fits the DRAM budget. slots = table rows, row r is in slot r at
//             data_offset + r * slot_bytes. Loaded completely before the server reports ready and
//             never changed afterwards, so readers need no synchronisation.
//   cache     a set-associative cache of `sets` sets with `ways` ways: row r may only live in set
//             s = ArenaSetOf(r, sets), in one of the slots s * ways + w (w < ways). Each slot has
//             a SlotHeader {seq, key}: key = row id + 1 (0 = empty). The server is the only writer
//             and updates a slot as a seqlock:
//                 seq = odd (store) ; fence ; key, row bytes ; seq = next even (release store)
//             A reader, lock-free:
//                 s1 = seq (acquire); if odd -> miss; if key != r + 1 -> miss;
//                 copy the row; fence (acquire); s2 = seq; if s1 != s2 -> miss (slot changed).
//             A miss is never an error: the row is then fetched through the server.
//
// The state word moves loading -> ready once the arena holds consistent contents, and to retired
// when the server stops using it (shutdown or a new table version); a retired arena must not be
// read (its contents stay valid for the version in the header, but nothing refreshes them).
//
// Huge pages are requested with madvise(MADV_HUGEPAGE) (shmem THP in "advise" mode) and the
// mapping is mlock()ed where the process may; both are best effort and reported in TableInfo.
#ifndef ENGRAM_MEMORY_TIER_ARENA_H_
#define ENGRAM_MEMORY_TIER_ARENA_H_

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace engram {

inline constexpr uint64_t kArenaMagic = 0x414e455241474e45ull;  // "ENGARENA"
inline constexpr uint32_t kArenaFormatVersion = 1;
inline constexpr size_t kArenaHeaderBytes = 4096;

enum class ArenaLayout : uint32_t { kResident = 1, kCache = 2 };
enum class ArenaState : uint32_t { kLoading = 0, kReady = 1, kRetired = 2 };

// "resident" / "cache".
absl::string_view ArenaLayoutName(ArenaLayout layout);

// The first 4 KiB of an arena. Plain fields are written once before `state` becomes ready.
struct ArenaHeader {
  uint64_t magic;           // kArenaMagic
  uint32_t format_version;  // kArenaFormatVersion
  uint32_t layout;          // ArenaLayout
  uint64_t arena_id;        // random; also reported in TableInfo.arena.arena_id
  uint64_t size_bytes;      // size of the whole object
  uint64_t table_rows;      // rows of the table version
  uint64_t table_version;
  uint32_t layer;  // Engram layer id
  uint32_t row_bytes;
  uint32_t slot_bytes;          // bytes per data slot (= row_bytes)
  uint32_t ways;                // 1 for resident
  uint64_t sets;                // slots / ways
  uint64_t slots;               // data slots
  uint64_t slot_header_offset;  // cache: offset of SlotHeader[slots]; resident: 0
  uint64_t data_offset;         // offset of slot 0's data
  char model[128];              // NUL-terminated model name (truncated)
  std::atomic<uint32_t> state;  // ArenaState
};
static_assert(sizeof(ArenaHeader) <= kArenaHeaderBytes);

// Per-slot header of the cache layout (see the seqlock protocol above).
struct SlotHeader {
  std::atomic<uint64_t> seq;
  std::atomic<uint64_t> key;  // row id + 1; 0 = empty
};
static_assert(sizeof(SlotHeader) == 16);
static_assert(std::atomic<uint64_t>::is_always_lock_free, "shared-memory atomics need lock-free");

// The set of row `row` in a cache of `sets` sets: a 64-bit mix (splitmix64's finaliser) modulo
// sets, so rows that are neighbours in id spread over sets.
inline uint64_t ArenaSetOf(uint64_t row, uint64_t sets) {
  uint64_t z = row + 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  z ^= z >> 31;
  return z % sets;
}

// Sizes of an arena for a table (used by the server to plan and by tests).
struct ArenaGeometry {
  ArenaLayout layout = ArenaLayout::kResident;
  uint64_t table_rows = 0;
  uint32_t row_bytes = 0;
  uint32_t ways = 1;
  uint64_t sets = 0;
  uint64_t slots = 0;
  uint64_t slot_header_offset = 0;
  uint64_t data_offset = 0;
  uint64_t size_bytes = 0;
};
// Resident geometry for a whole table.
ArenaGeometry ResidentGeometry(uint64_t table_rows, uint32_t row_bytes);
// The largest cache geometry with `ways` ways that fits `budget_bytes`; sets = 0 when nothing fits.
ArenaGeometry CacheGeometry(uint64_t table_rows, uint32_t row_bytes, uint32_t ways,
                            uint64_t budget_bytes);

// A mapped arena. Created read-write by the server (Create) or opened read-only by a client (Open).
// Unmaps on destruction; the server's instance also unlinks the name.
class SharedArena {
 public:
  struct CreateOptions {
    std::string shm_name;  // "/engram-..." (leading slash, no other slashes)
    ArenaGeometry geometry;
    uint64_t arena_id = 0;  // 0 = pick a random id
    uint64_t table_version = 0;
    uint32_t layer = 0;
    std::string model;
    bool huge_pages = true;  // madvise(MADV_HUGEPAGE)
    bool lock = true;        // mlock, best effort
    // Permission bits of the object, exactly (set with fchmod, whatever the umask): 0640 lets
    // workers of the tier's group map it read-only, 0600 only the tier's user. Nothing else is
    // accepted: an arena is never writable by others nor readable by everyone.
    uint32_t mode = 0640;
  };
  // Creates (replacing a stale object of the same name), sizes with posix_fallocate so a full
  // /dev/shm fails here and not later with SIGBUS, maps, writes the header (state loading).
  static absl::StatusOr<std::unique_ptr<SharedArena>> Create(const CreateOptions& options);
  // Opens an existing arena read-only and validates its header against the file size.
  static absl::StatusOr<std::unique_ptr<SharedArena>> Open(const std::string& shm_name);
  ~SharedArena();
  SharedArena(const SharedArena&) = delete;
  SharedArena& operator=(const SharedArena&) = delete;

  const std::string& shm_name() const { return shm_name_; }
  const ArenaHeader& header() const { return *reinterpret_cast<const ArenaHeader*>(base_); }
  ArenaHeader* mutable_header() { return reinterpret_cast<ArenaHeader*>(base_); }
  uint8_t* base() const { return base_; }
  size_t size() const { return size_; }
  bool huge_pages() const { return huge_pages_; }
  bool locked() const { return locked_; }
  // Cache layout: the slot headers; nullptr for resident.
  SlotHeader* slot_headers() const;
  uint8_t* slot_data(uint64_t slot) const {
    return base_ + header().data_offset + slot * header().slot_bytes;
  }

 private:
  SharedArena() = default;
  std::string shm_name_;
  uint8_t* base_ = nullptr;
  size_t size_ = 0;
  bool owner_ = false;
  bool huge_pages_ = false;
  bool locked_ = false;
};

// Reads row `row` from a cache-layout arena with the seqlock protocol; false on a miss.
bool ArenaCacheRead(const SharedArena& arena, uint64_t row, uint8_t* out);

// Tier::Lookup over an arena, the same for the server (DramTier) and a co-located client
// (ArenaReader): a resident arena copies every row; a cache arena reads each row with the seqlock
// and appends the positions it misses. Ids must be < header().table_rows (CheckRowIds).
void ArenaLookup(const SharedArena& arena, absl::Span<const uint64_t> row_ids, uint8_t* out,
                 std::vector<uint32_t>* missing);

// The host identity used for co-location: the kernel boot id (/proc/sys/kernel/random/boot_id).
std::string LocalHostId();

}  // namespace engram

#endif  // ENGRAM_MEMORY_TIER_ARENA_H_
