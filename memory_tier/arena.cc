#include "memory_tier/arena.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <random>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "common/status.h"
#include "memory_tier/posix_file.h"

namespace engram {
namespace {

uint64_t RoundUp(uint64_t x, uint64_t to) { return (x + to - 1) / to * to; }

// Whether the kernel backs shmem with transparent huge pages after MADV_HUGEPAGE.
bool ShmemHugePagesAllowed() {
  std::ifstream f("/sys/kernel/mm/transparent_hugepage/shmem_enabled");
  std::string line;
  std::getline(f, line);
  // The active choice is bracketed, e.g. "always within_size advise [never] deny force".
  for (const char* ok : {"[always]", "[within_size]", "[advise]", "[force]"}) {
    if (line.find(ok) != std::string::npos) return true;
  }
  return false;
}

absl::Status ValidateName(const std::string& name) {
  if (name.size() < 2 || name[0] != '/' || name.find('/', 1) != std::string::npos ||
      name.size() > 255) {
    return absl::InvalidArgumentError(absl::StrCat(
        "shared-memory name \"", name, "\" must start with '/' and contain no other '/'"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::string_view ArenaLayoutName(ArenaLayout layout) {
  return layout == ArenaLayout::kResident ? "resident" : "cache";
}

ArenaGeometry ResidentGeometry(uint64_t table_rows, uint32_t row_bytes) {
  ArenaGeometry g;
  g.layout = ArenaLayout::kResident;
  g.table_rows = table_rows;
  g.row_bytes = row_bytes;
  g.ways = 1;
  g.slots = table_rows;
  g.sets = table_rows;
  g.data_offset = kArenaHeaderBytes;
  g.size_bytes = RoundUp(g.data_offset + table_rows * row_bytes, 4096);
  return g;
}

ArenaGeometry CacheGeometry(uint64_t table_rows, uint32_t row_bytes, uint32_t ways,
                            uint64_t budget_bytes) {
  ArenaGeometry g;
  g.layout = ArenaLayout::kCache;
  g.table_rows = table_rows;
  g.row_bytes = row_bytes;
  g.ways = ways == 0 ? 1 : ways;
  // Header page, slot headers and data, each region page-aligned: at most two pages of padding.
  const uint64_t per_set = g.ways * (sizeof(SlotHeader) + row_bytes);
  if (budget_bytes <= 3 * 4096 || per_set == 0) return g;
  g.sets = (budget_bytes - 3 * 4096) / per_set;
  // More sets than rows would never fill.
  g.sets = std::min<uint64_t>(g.sets, (table_rows + g.ways - 1) / g.ways);
  if (g.sets == 0) return g;
  g.slots = g.sets * g.ways;
  g.slot_header_offset = kArenaHeaderBytes;
  g.data_offset = RoundUp(g.slot_header_offset + g.slots * sizeof(SlotHeader), 4096);
  g.size_bytes = RoundUp(g.data_offset + g.slots * row_bytes, 4096);
  return g;
}

absl::StatusOr<std::unique_ptr<SharedArena>> SharedArena::Create(const CreateOptions& o) {
  ENGRAM_RETURN_IF_ERROR(ValidateName(o.shm_name));
  const ArenaGeometry& g = o.geometry;
  if (g.slots == 0 || g.size_bytes == 0) {
    return absl::InvalidArgumentError(absl::StrCat("arena ", o.shm_name, " has no slots"));
  }
  // A stale object of a crashed run has the same name: replace it. Clients that still map it keep
  // their (now retired) mapping.
  if (o.mode != 0600 && o.mode != 0640) {
    return absl::InvalidArgumentError(
        absl::StrCat("arena ", o.shm_name, ": mode must be 0600 or 0640, not 0", absl::Hex(o.mode)));
  }
  shm_unlink(o.shm_name.c_str());
  // Created 0600 (the umask can only remove bits), then set to exactly o.mode with fchmod before
  // any row is written: no moment where the object is readable by others.
  int fd = shm_open(o.shm_name.c_str(), O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC, 0600);
  if (fd < 0) return PosixError("cannot create shared memory", o.shm_name, errno);
  ScopedFd owned(fd);
  if (fchmod(fd, static_cast<mode_t>(o.mode)) != 0) {
    const int e = errno;
    shm_unlink(o.shm_name.c_str());
    return PosixError("cannot set the mode of shared memory", o.shm_name, e);
  }
  auto arena = std::unique_ptr<SharedArena>(new SharedArena());
  arena->shm_name_ = o.shm_name;
  arena->owner_ = true;
  arena->size_ = g.size_bytes;
  // Reserve the memory now: /dev/shm smaller than the arena fails here, not with SIGBUS later.
  int err = posix_fallocate(fd, 0, static_cast<off_t>(g.size_bytes));
  if (err != 0) {
    shm_unlink(o.shm_name.c_str());
    return absl::ResourceExhaustedError(
        absl::StrCat("cannot reserve ", g.size_bytes, " bytes of shared memory for ", o.shm_name,
                     ": ", std::strerror(err), " (is /dev/shm large enough? lower --dram-bytes)"));
  }
  void* p = mmap(nullptr, g.size_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) {
    shm_unlink(o.shm_name.c_str());
    return PosixError("cannot map shared memory", o.shm_name, errno);
  }
  arena->base_ = static_cast<uint8_t*>(p);
  if (o.huge_pages) {
    arena->huge_pages_ = madvise(p, g.size_bytes, MADV_HUGEPAGE) == 0 && ShmemHugePagesAllowed();
  }
  if (o.lock) {
    arena->locked_ = mlock(p, g.size_bytes) == 0;
    if (!arena->locked_) {
      ENGRAM_LOG(INFO).With("arena", o.shm_name).With("bytes", g.size_bytes)
          << "arena not locked in memory (mlock: " << std::strerror(errno) << "); continuing";
    }
  }
  ArenaHeader* h = arena->mutable_header();
  h->magic = kArenaMagic;
  h->format_version = kArenaFormatVersion;
  h->layout = static_cast<uint32_t>(g.layout);
  h->arena_id = o.arena_id;
  if (h->arena_id == 0) {
    std::random_device rd;
    h->arena_id = (uint64_t{rd()} << 32) ^ rd() ^ 1;
  }
  h->size_bytes = g.size_bytes;
  h->table_rows = g.table_rows;
  h->table_version = o.table_version;
  h->layer = o.layer;
  h->row_bytes = g.row_bytes;
  h->slot_bytes = g.row_bytes;
  h->ways = g.ways;
  h->sets = g.sets;
  h->slots = g.slots;
  h->slot_header_offset = g.slot_header_offset;
  h->data_offset = g.data_offset;
  std::memset(h->model, 0, sizeof(h->model));
  std::memcpy(h->model, o.model.data(), std::min(o.model.size(), sizeof(h->model) - 1));
  h->state.store(static_cast<uint32_t>(ArenaState::kLoading), std::memory_order_release);
  return arena;
}

absl::StatusOr<std::unique_ptr<SharedArena>> SharedArena::Open(const std::string& shm_name) {
  ENGRAM_RETURN_IF_ERROR(ValidateName(shm_name));
  int fd = shm_open(shm_name.c_str(), O_RDONLY | O_CLOEXEC, 0);
  if (fd < 0) return PosixError("cannot open shared memory", shm_name, errno);
  ScopedFd owned(fd);
  struct stat st;
  if (fstat(fd, &st) != 0) return PosixError("cannot stat shared memory", shm_name, errno);
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  if (size < kArenaHeaderBytes) {
    return absl::FailedPreconditionError(absl::StrCat(shm_name, " is too small for an arena"));
  }
  void* p = mmap(nullptr, size, PROT_READ, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) return PosixError("cannot map shared memory", shm_name, errno);
  auto arena = std::unique_ptr<SharedArena>(new SharedArena());
  arena->shm_name_ = shm_name;
  arena->base_ = static_cast<uint8_t*>(p);
  arena->size_ = size;
  const ArenaHeader& h = arena->header();
  auto bad = [&](absl::string_view why) {
    return absl::FailedPreconditionError(absl::StrCat(shm_name, " is not a usable arena: ", why));
  };
  if (h.magic != kArenaMagic) return bad("no arena magic");
  if (h.format_version != kArenaFormatVersion) return bad("unknown format version");
  if (h.size_bytes != size) return bad("size differs from the header");
  if (h.layout != static_cast<uint32_t>(ArenaLayout::kResident) &&
      h.layout != static_cast<uint32_t>(ArenaLayout::kCache)) {
    return bad("unknown layout");
  }
  // Every bound in division form: a corrupt header must not overflow its way past the checks,
  // and sets = 0 would be a division by zero in ArenaSetOf.
  const bool cache = h.layout == static_cast<uint32_t>(ArenaLayout::kCache);
  if (h.row_bytes == 0 || h.slot_bytes < h.row_bytes || h.ways == 0 || h.sets == 0 ||
      h.slots == 0 || h.data_offset > size || h.slots > (size - h.data_offset) / h.slot_bytes ||
      (cache && (h.sets > h.slots / h.ways || h.slots != h.sets * h.ways ||
                 h.slot_header_offset > h.data_offset ||
                 h.slots > (h.data_offset - h.slot_header_offset) / sizeof(SlotHeader))) ||
      (!cache && h.slots != h.table_rows)) {
    return bad("inconsistent geometry");
  }
  return arena;
}

SharedArena::~SharedArena() {
  if (base_ != nullptr) munmap(base_, size_);
  if (owner_) shm_unlink(shm_name_.c_str());
}

SlotHeader* SharedArena::slot_headers() const {
  if (header().layout != static_cast<uint32_t>(ArenaLayout::kCache)) return nullptr;
  return reinterpret_cast<SlotHeader*>(base_ + header().slot_header_offset);
}

bool ArenaCacheRead(const SharedArena& arena, uint64_t row, uint8_t* out) {
  const ArenaHeader& h = arena.header();
  const uint64_t set = ArenaSetOf(row, h.sets);
  SlotHeader* headers = arena.slot_headers();
  for (uint32_t w = 0; w < h.ways; ++w) {
    const uint64_t slot = set * h.ways + w;
    SlotHeader& sh = headers[slot];
    const uint64_t s1 = sh.seq.load(std::memory_order_acquire);
    if (s1 & 1) continue;  // being written
    if (sh.key.load(std::memory_order_relaxed) != row + 1) continue;
    std::memcpy(out, arena.slot_data(slot), h.row_bytes);
    std::atomic_thread_fence(std::memory_order_acquire);
    if (sh.seq.load(std::memory_order_relaxed) != s1) return false;  // replaced while copying
    return true;
  }
  return false;
}

void ArenaLookup(const SharedArena& arena, absl::Span<const uint64_t> row_ids, uint8_t* out,
                 std::vector<uint32_t>* missing) {
  const ArenaHeader& h = arena.header();
  if (h.layout == static_cast<uint32_t>(ArenaLayout::kResident)) {
    const uint8_t* data = arena.base() + h.data_offset;
    for (size_t i = 0; i < row_ids.size(); ++i) {
      std::memcpy(out + i * h.row_bytes, data + row_ids[i] * h.slot_bytes, h.row_bytes);
    }
    return;
  }
  for (size_t i = 0; i < row_ids.size(); ++i) {
    if (!ArenaCacheRead(arena, row_ids[i], out + i * h.row_bytes)) {
      missing->push_back(static_cast<uint32_t>(i));
    }
  }
}

std::string LocalHostId() {
  std::ifstream f("/proc/sys/kernel/random/boot_id");
  std::string id;
  std::getline(f, id);
  id = std::string(absl::StripAsciiWhitespace(id));
  if (id.empty()) {
    char host[256] = {};
    gethostname(host, sizeof(host) - 1);
    id = absl::StrCat("host:", host);
  }
  return id;
}

}  // namespace engram
