// memory_tier_bench: the memory tier's tiers side by side with their baselines, in one run, on one
// table it creates itself (docs/benchmarks.md has the method and figures).
//
//   memory_tier_bench --dir /mnt/nvme/tmp --table-gib 1 --depth 64 --seconds 2
//
// For batches of 48 (one V4.1 token), 768 (16 tokens) and 12,288 (a 256-sequence decode step)
// uniformly random row ids it reports rows/s and per-batch p50/p99 of:
//   baselines  raw io_uring (random 4 KiB O_DIRECT reads at the same depth: the device ceiling),
//              a plain pread loop (QD1, O_DIRECT), RocksDB MultiGet holding the same rows
//              (direct reads, 8 MiB block cache)
//   tiers      NvmeTier (io_uring and pread backends), DramTier (resident arena, in-process),
//              ArenaReader (a co-located client reading the same arena through shared memory)
//   gRPC       Lookup and Prefetch over loopback against an in-process engram-memory serving the
//              table from DRAM (the per-row cost of the RPC path)
// and the ratios the design targets: NVMe tier >= 90% of raw io_uring IOPS at the same depth,
// ArenaReader within 1.5x of the in-process DRAM tier. NvmeTier checks every page it reads against
// its page checksum (row_file.h), as in production; the raw baselines check nothing. The CPU cost
// of one page check is printed first.
#include <fcntl.h>
#include <liburing.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "bench/percentile.h"
#include "common/status.h"
#include "memory_tier/arena.h"
#include "memory_tier/catalog.h"
#include "memory_tier/dram_tier.h"
#include "memory_tier/nvme_tier.h"
#include "memory_tier/row_file.h"
#include "memory_tier/tier_client.h"
#include "memory_tier/tier_server.h"
#include "rocksdb/cache.h"
#include "rocksdb/db.h"
#include "rocksdb/filter_policy.h"
#include "rocksdb/sst_file_writer.h"
#include "rocksdb/table.h"

namespace engram {
namespace {

using Clock = std::chrono::steady_clock;

struct Flags {
  std::string dir = "/tmp";
  double table_gib = 1.0;
  uint32_t row_bytes = 264;
  int depth = 64;
  double seconds = 2.0;
  std::vector<size_t> batches = {48, 768, 12288};
  bool rocksdb = true;
  bool grpc = true;
  bool keep = false;
};

void Usage() {
  std::fprintf(
      stderr,
      "usage: memory_tier_bench [--dir DIR] [--table-gib G] [--row-bytes EVEN_B] [--depth D]\n"
      "                         [--seconds S] [--batches 48,768,12288] [--no-rocksdb]\n"
      "                         [--no-grpc] [--keep]\n");
}

bool ParseFlags(int argc, char** argv, Flags* f) {
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto value = [&](std::string* out) {
      if (a.find('=') != std::string::npos) {
        *out = a.substr(a.find('=') + 1);
        return true;
      }
      if (i + 1 >= argc) return false;
      *out = argv[++i];
      return true;
    };
    std::string v;
    const std::string name = a.substr(0, a.find('='));
    if (name == "--dir" && value(&v)) {
      f->dir = v;
    } else if (name == "--table-gib" && value(&v)) {
      if (!absl::SimpleAtod(v, &f->table_gib)) return false;
    } else if (name == "--row-bytes" && value(&v)) {
      if (!absl::SimpleAtoi(v, &f->row_bytes)) return false;
    } else if (name == "--depth" && value(&v)) {
      if (!absl::SimpleAtoi(v, &f->depth)) return false;
    } else if (name == "--seconds" && value(&v)) {
      if (!absl::SimpleAtod(v, &f->seconds)) return false;
    } else if (name == "--batches" && value(&v)) {
      f->batches.clear();
      for (absl::string_view p : absl::StrSplit(v, ',')) {
        size_t n;
        if (!absl::SimpleAtoi(p, &n) || n == 0) return false;
        f->batches.push_back(n);
      }
    } else if (name == "--no-rocksdb") {
      f->rocksdb = false;
    } else if (name == "--no-grpc") {
      f->grpc = false;
    } else if (name == "--keep") {
      f->keep = true;
    } else {
      return false;
    }
  }
  // 264-byte rows are V4.1's FP8 rows; any other size is a bf16 row of row_bytes / 2 values.
  return f->row_bytes > 0 && f->row_bytes <= 4096 && f->row_bytes % 2 == 0 && f->depth > 0 &&
         f->table_gib > 0;
}

// Per-batch latencies of one measurement.
struct Result {
  std::string name;
  size_t batch = 0;
  uint64_t rows = 0;
  uint64_t pages = 0;  // 4 KiB reads, where meaningful
  double seconds = 0;
  std::vector<double> batch_us;

  double rows_per_s() const { return rows / seconds; }
  double pages_per_s() const { return pages / seconds; }
  double Percentile(double p) const { return engram::Percentile(batch_us, p); }
};

std::vector<Result> g_results;

using BatchFn = std::function<uint64_t(const std::vector<uint64_t>&)>;

void Print(const Result& r) {
  std::printf("%-26s batch %6zu  %12.0f rows/s  p50 %9.1f us  p99 %9.1f us", r.name.c_str(),
              r.batch, r.rows_per_s(), r.Percentile(0.5), r.Percentile(0.99));
  if (r.pages) std::printf("  %9.0f reads/s", r.pages_per_s());
  std::printf("\n");
  std::fflush(stdout);
}

// Runs each `batch_fn(ids)` on fresh random ids, taking turns batch by batch (the first to go
// alternates), until each has run `seconds` (at least 5 batches each). Taking turns matters on a
// shared virtual disk whose rate drifts from one second to the next: measured one after the
// other, two readers would see different devices.
void MeasureTogether(size_t batch, uint64_t table_rows, double seconds,
                     const std::vector<std::pair<std::string, BatchFn>>& fns) {
  std::vector<Result> results(fns.size());
  std::vector<std::mt19937_64> rngs;
  for (size_t k = 0; k < fns.size(); ++k) {
    results[k].name = fns[k].first;
    results[k].batch = batch;
    rngs.emplace_back(batch * 7919 + fns[k].first.size() + 31 * k);
  }
  std::vector<uint64_t> ids(batch);
  const auto start = Clock::now();
  for (size_t turn = 0;
       results[0].batch_us.size() < 5 ||
       std::chrono::duration<double>(Clock::now() - start).count() < seconds * fns.size();
       ++turn) {
    for (size_t j = 0; j < fns.size(); ++j) {
      const size_t k = (turn + j) % fns.size();
      Result& r = results[k];
      for (auto& id : ids) id = rngs[k]() % table_rows;
      const auto t0 = Clock::now();
      r.pages += fns[k].second(ids);
      r.batch_us.push_back(std::chrono::duration<double, std::micro>(Clock::now() - t0).count());
      r.rows += batch;
    }
  }
  for (Result& r : results) {
    r.seconds = 0;
    for (double us : r.batch_us) r.seconds += us / 1e6;
    Print(r);
    g_results.push_back(r);
  }
}

void Measure(const std::string& name, size_t batch, uint64_t table_rows, double seconds,
             const BatchFn& batch_fn) {
  MeasureTogether(batch, table_rows, seconds, {{name, batch_fn}});
}

const Result* Find(const std::string& name, size_t batch) {
  for (const Result& r : g_results) {
    if (r.name == name && r.batch == batch) return &r;
  }
  return nullptr;
}

// Creates the table through the real writer and registers it in a catalog, like an import.
absl::StatusOr<Manifest> CreateTable(const std::string& store, const Flags& f) {
  const uint64_t rows = static_cast<uint64_t>(f.table_gib * (1ull << 30)) / f.row_bytes;
  {
    ENGRAM_ASSIGN_OR_RETURN(auto catalog, Catalog::Open(store, Catalog::Mode::kReadWrite));
    ENGRAM_ASSIGN_OR_RETURN(auto existing, catalog->GetTable("bench", 1));
    if (existing && existing->live_version != 0) {
      ENGRAM_ASSIGN_OR_RETURN(Manifest m, catalog->GetManifest("bench", 1, existing->live_version));
      if (m.layout.rows == rows && m.layout.row_bytes == f.row_bytes &&
          m.layout.format == kRowFileFormatVersion) {
        return m;
      }
    }
  }
  std::filesystem::remove_all(store);
  ENGRAM_ASSIGN_OR_RETURN(auto catalog, Catalog::Open(store, Catalog::Mode::kReadWrite));
  Manifest m;
  m.model = "bench";
  m.layer = 1;
  m.version = 1;
  m.dtype = f.row_bytes == 264 ? "fp8_e4m3_e8m0" : "bf16";
  m.head_dim = f.row_bytes == 264 ? 256 : static_cast<int>(f.row_bytes / 2);
  ENGRAM_ASSIGN_OR_RETURN(m.layout, RowLayout::For(rows, f.row_bytes));
  const std::string dir = TableDir(store, "bench", 1);
  std::filesystem::create_directories(dir);
  m.row_file = std::filesystem::relative(dir, store).string() + "/" + RowFileName(1);
  m.created = "bench";
  std::printf("creating %s: %llu rows x %u B ...\n", (store + "/" + m.row_file).c_str(),
              static_cast<unsigned long long>(rows), f.row_bytes);
  std::fflush(stdout);
  ENGRAM_ASSIGN_OR_RETURN(auto writer, RowFileWriter::Create(store + "/" + m.row_file, m));
  std::mt19937_64 rng(1);
  std::vector<uint8_t> block(4096 * static_cast<size_t>(f.row_bytes));
  for (uint64_t r = 0; r < rows; r += 4096) {
    const uint64_t n = std::min<uint64_t>(4096, rows - r);
    for (size_t i = 0; i < n * f.row_bytes; i += 8) {
      const uint64_t x = rng();
      std::memcpy(&block[i], &x, std::min<size_t>(8, n * f.row_bytes - i));
    }
    ENGRAM_RETURN_IF_ERROR(writer->Append(block.data(), n));
  }
  ENGRAM_RETURN_IF_ERROR(writer->Finish(&m));
  ENGRAM_RETURN_IF_ERROR(WriteManifest(dir + "/" + ManifestFileName(1), m));
  ENGRAM_RETURN_IF_ERROR(catalog->CommitVersions({m}));
  return m;
}

// The device ceiling: random aligned 4 KiB O_DIRECT reads, `depth` always in flight.
void RawUringCeiling(const std::string& path, const RowLayout& l, int depth, double seconds) {
  int fd = open(path.c_str(), O_RDONLY | O_DIRECT);
  io_uring ring;
  if (fd < 0 || io_uring_queue_init(depth, &ring, 0) != 0) {
    std::printf("raw io_uring: unavailable\n");
    return;
  }
  void* buf = mmap(nullptr, static_cast<size_t>(depth) * 4096, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  iovec iov{buf, static_cast<size_t>(depth) * 4096};
  const bool fixed = io_uring_register_buffers(&ring, &iov, 1) == 0;
  io_uring_register_files(&ring, &fd, 1);
  std::mt19937_64 rng(5);
  auto submit = [&](int slot) {
    io_uring_sqe* sqe = io_uring_get_sqe(&ring);
    const uint64_t off = l.PageOffset(rng() % l.pages());
    uint8_t* b = static_cast<uint8_t*>(buf) + slot * 4096;
    if (fixed) {
      io_uring_prep_read_fixed(sqe, 0, b, 4096, off, 0);
    } else {
      io_uring_prep_read(sqe, 0, b, 4096, off);
    }
    sqe->flags |= IOSQE_FIXED_FILE;
    io_uring_sqe_set_data64(sqe, slot);
  };
  for (int s = 0; s < depth; ++s) submit(s);
  uint64_t done = 0;
  const auto start = Clock::now();
  double elapsed = 0;
  while (elapsed < seconds) {
    io_uring_submit_and_wait(&ring, 1);
    io_uring_cqe* cqe;
    unsigned head, seen = 0;
    io_uring_for_each_cqe(&ring, head, cqe) {
      ++seen;
      submit(static_cast<int>(io_uring_cqe_get_data64(cqe)));
    }
    io_uring_cq_advance(&ring, seen);
    done += seen;
    elapsed = std::chrono::duration<double>(Clock::now() - start).count();
  }
  // Drain.
  io_uring_submit(&ring);
  for (int s = 0; s < depth; ++s) {
    io_uring_cqe* cqe;
    if (io_uring_wait_cqe(&ring, &cqe) == 0) io_uring_cqe_seen(&ring, cqe);
  }
  Result r;
  r.name = "raw io_uring (ceiling)";
  r.pages = done;
  r.rows = done;
  r.seconds = elapsed;
  g_results.push_back(r);
  std::printf("%-26s depth %4d  %12.0f reads/s (random 4 KiB, O_DIRECT, registered buffers %s)\n",
              r.name.c_str(), depth, r.pages_per_s(), fixed ? "yes" : "no");
  io_uring_queue_exit(&ring);
  munmap(buf, static_cast<size_t>(depth) * 4096);
  close(fd);
}

// The batch-shaped baseline: one random 4 KiB O_DIRECT read per row of the batch (no dedup, no
// merging), `depth` in flight, with plain liburing calls: what the NVMe tier does minus its work.
class RawUringBatch {
 public:
  RawUringBatch(const std::string& path, const RowLayout& l, int depth) : l_(l), depth_(depth) {
    fd_ = open(path.c_str(), O_RDONLY | O_DIRECT);
    ok_ = fd_ >= 0 && io_uring_queue_init(depth, &ring_, 0) == 0;
    buf_ = static_cast<uint8_t*>(mmap(nullptr, static_cast<size_t>(depth) * 4096,
                                      PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
    if (ok_) {
      iovec iov{buf_, static_cast<size_t>(depth) * 4096};
      fixed_ = io_uring_register_buffers(&ring_, &iov, 1) == 0;
      io_uring_register_files(&ring_, &fd_, 1);
    }
  }
  ~RawUringBatch() {
    if (ok_) io_uring_queue_exit(&ring_);
    munmap(buf_, static_cast<size_t>(depth_) * 4096);
    if (fd_ >= 0) close(fd_);
  }
  bool ok() const { return ok_; }
  uint64_t Read(const std::vector<uint64_t>& ids) {
    size_t next = 0, done = 0;
    int in_flight = 0;
    while (done < ids.size()) {
      while (in_flight < depth_ && next < ids.size()) {
        io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
        const int slot = static_cast<int>(next % depth_);
        uint8_t* b = buf_ + static_cast<size_t>(slot) * 4096;
        const uint64_t off = l_.PageOffset(l_.PageOf(ids[next]));
        if (fixed_) {
          io_uring_prep_read_fixed(sqe, 0, b, 4096, off, 0);
        } else {
          io_uring_prep_read(sqe, 0, b, 4096, off);
        }
        sqe->flags |= IOSQE_FIXED_FILE;
        ++next;
        ++in_flight;
      }
      io_uring_submit_and_wait(&ring_, 1);
      io_uring_cqe* cqe;
      unsigned head, seen = 0;
      io_uring_for_each_cqe(&ring_, head, cqe) { ++seen; }
      io_uring_cq_advance(&ring_, seen);
      in_flight -= static_cast<int>(seen);
      done += seen;
    }
    return ids.size();
  }

 private:
  RowLayout l_;
  int depth_;
  int fd_ = -1;
  bool ok_ = false;
  bool fixed_ = false;
  uint8_t* buf_ = nullptr;
  io_uring ring_{};
};

uint64_t DistinctPages(const RowLayout& l, const std::vector<uint64_t>& ids) {
  std::vector<uint64_t> pages;
  for (uint64_t id : ids) pages.push_back(l.PageOf(id));
  std::sort(pages.begin(), pages.end());
  return std::unique(pages.begin(), pages.end()) - pages.begin();
}

absl::Status BuildRocksDb(const std::string& path, const std::string& row_file, const Manifest& m,
                          std::unique_ptr<rocksdb::DB>* db) {
  rocksdb::Options o;
  o.create_if_missing = true;
  o.compression = rocksdb::kNoCompression;
  o.use_direct_reads = true;
  rocksdb::BlockBasedTableOptions t;
  t.block_size = 4096;
  t.block_cache = rocksdb::NewLRUCache(8 << 20);
  t.filter_policy.reset(rocksdb::NewBloomFilterPolicy(10));
  o.table_factory.reset(rocksdb::NewBlockBasedTableFactory(t));
  rocksdb::DB* raw = nullptr;
  if (!std::filesystem::exists(path + "/CURRENT")) {
    std::printf("building RocksDB with the same rows (SstFileWriter + ingest) ...\n");
    std::fflush(stdout);
    std::filesystem::create_directories(path);
    rocksdb::SstFileWriter w(rocksdb::EnvOptions(), o);
    const std::string sst = path + "/rows.sst";
    if (!w.Open(sst).ok()) return absl::InternalError("SstFileWriter::Open");
    ENGRAM_ASSIGN_OR_RETURN(ScopedFd fd, OpenFile(row_file, O_RDONLY));
    const RowLayout& l = m.layout;
    std::vector<uint8_t> page(4096);
    for (uint64_t p = 0; p < l.pages(); ++p) {
      ENGRAM_RETURN_IF_ERROR(PreadAll(fd.get(), page.data(), 4096, l.PageOffset(p), row_file));
      for (uint32_t s = 0; s < l.rows_per_page; ++s) {
        const uint64_t row = p * l.rows_per_page + s;
        if (row >= l.rows) break;
        char key[8];
        for (int i = 0; i < 8; ++i) key[i] = static_cast<char>(row >> (56 - 8 * i));
        auto st = w.Put(
            rocksdb::Slice(key, 8),
            rocksdb::Slice(reinterpret_cast<char*>(page.data()) + s * l.row_bytes, l.row_bytes));
        if (!st.ok()) return absl::InternalError(st.ToString());
      }
    }
    if (!w.Finish().ok()) return absl::InternalError("SstFileWriter::Finish");
    if (!rocksdb::DB::Open(o, path, &raw).ok()) return absl::InternalError("DB::Open");
    db->reset(raw);
    auto st = (*db)->IngestExternalFile({sst}, rocksdb::IngestExternalFileOptions());
    if (!st.ok()) return absl::InternalError(st.ToString());
    return absl::OkStatus();
  }
  if (!rocksdb::DB::Open(o, path, &raw).ok()) return absl::InternalError("DB::Open");
  db->reset(raw);
  return absl::OkStatus();
}

int Run(const Flags& f) {
  const std::string root = f.dir + "/engram-memory-tier-bench";
  const std::string store = root + "/store";
  auto manifest = CreateTable(store, f);
  if (!manifest.ok()) {
    std::fprintf(stderr, "cannot create the table: %s\n", manifest.status().ToString().c_str());
    return 1;
  }
  const Manifest& m = *manifest;
  const RowLayout& l = m.layout;
  const std::string path = store + "/" + m.row_file;
  std::printf(
      "table: %llu rows x %u B, %u rows per 4 KiB page, %.2f GiB; depth %d; %.1f s per "
      "measurement\n\n",
      static_cast<unsigned long long>(l.rows), l.row_bytes, l.rows_per_page,
      m.file_bytes / double(1ull << 30), f.depth, f.seconds);

  {
    // The page check's CPU cost: PageChecksum over 4 KiB pages already in memory.
    std::vector<uint8_t> pages(256 * 4096);
    std::mt19937_64 rng(2);
    for (auto& b : pages) b = static_cast<uint8_t>(rng());
    uint32_t sink = 0;
    uint64_t n = 0;
    auto cpu_seconds = [] {
      timespec ts;
      clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
      return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
    };
    const auto start = Clock::now();
    const double cpu_start = cpu_seconds();
    while (std::chrono::duration<double>(Clock::now() - start).count() < 0.5) {
      for (uint64_t p = 0; p < 256; ++p, ++n) sink ^= PageChecksum(&pages[p * 4096], p);
    }
    const double s = std::chrono::duration<double>(Clock::now() - start).count();
    const double cpu = cpu_seconds() - cpu_start;  // excludes time other processes had the core
    std::printf(
        "page check (CRC-32C of 4 KiB + index): %.3f us/page of CPU (%.2f GB/s), %.3f us wall "
        "(%08x)\n\n",
        1e6 * cpu / static_cast<double>(n), static_cast<double>(n) * 4096 / cpu / 1e9,
        1e6 * s / static_cast<double>(n), sink);
  }
  RawUringCeiling(path, l, f.depth, f.seconds);
  for (size_t b : f.batches) {
    // ---- baselines ----
    {
      int fd = open(path.c_str(), O_RDONLY | O_DIRECT);
      void* page = mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
      std::vector<uint8_t> out(b * l.row_bytes);
      Measure("pread loop (QD1)", b, l.rows, f.seconds / 2, [&](const std::vector<uint64_t>& ids) {
        for (size_t i = 0; i < ids.size(); ++i) {
          if (pread(fd, page, 4096, static_cast<off_t>(l.PageOffset(l.PageOf(ids[i])))) != 4096) {
            std::abort();
          }
          std::memcpy(&out[i * l.row_bytes], static_cast<uint8_t*>(page) + l.InPageOffset(ids[i]),
                      l.row_bytes);
        }
        return ids.size();
      });
      munmap(page, 4096);
      close(fd);
    }
    {
      // The NVMe tier against the same reads without its work (dedup, page checks, copies),
      // batch by batch in turns; then the tier's pread backend.
      RawUringBatch raw(path, l, f.depth);
      std::vector<std::unique_ptr<NvmeTier>> tiers;
      for (IoBackend backend : {IoBackend::kUring, IoBackend::kPread}) {
        NvmeTier::Options o;
        o.io.backend = backend;
        o.io.depth = f.depth;
        auto tier = NvmeTier::Open(m, path, o);
        if (!tier.ok()) {
          std::fprintf(stderr, "NvmeTier: %s\n", tier.status().ToString().c_str());
          return 1;
        }
        tiers.push_back(std::move(*tier));
      }
      std::vector<uint8_t> out(b * l.row_bytes);
      std::vector<uint32_t> missing;
      auto tier_fn = [&](NvmeTier* tier) {
        return [&, tier](const std::vector<uint64_t>& ids) {
          missing.clear();
          if (!tier->Lookup(ids, out.data(), &missing).ok()) std::abort();
          return DistinctPages(l, ids);
        };
      };
      std::vector<std::pair<std::string, BatchFn>> together;
      if (raw.ok()) {
        together.emplace_back("raw io_uring batch",
                              [&](const std::vector<uint64_t>& ids) { return raw.Read(ids); });
      }
      together.emplace_back("NvmeTier uring", tier_fn(tiers[0].get()));
      MeasureTogether(b, l.rows, f.seconds, together);
      Measure("NvmeTier pread", b, l.rows, f.seconds / 2, tier_fn(tiers[1].get()));
    }
  }

  // ---- RocksDB MultiGet ----
  if (f.rocksdb) {
    std::unique_ptr<rocksdb::DB> db;
    absl::Status s = BuildRocksDb(root + "/rocksdb", path, m, &db);
    if (!s.ok()) {
      std::fprintf(stderr, "RocksDB: %s\n", s.ToString().c_str());
    } else {
      for (size_t b : f.batches) {
        std::vector<std::string> keys(b);
        std::vector<rocksdb::Slice> slices(b);
        std::vector<rocksdb::PinnableSlice> values(b);
        std::vector<rocksdb::Status> statuses(b);
        Measure("RocksDB MultiGet", b, l.rows, f.seconds, [&](const std::vector<uint64_t>& ids) {
          for (size_t i = 0; i < ids.size(); ++i) {
            keys[i].resize(8);
            for (int k = 0; k < 8; ++k) keys[i][k] = static_cast<char>(ids[i] >> (56 - 8 * k));
            slices[i] = keys[i];
            values[i].Reset();
          }
          db->MultiGet(rocksdb::ReadOptions(), db->DefaultColumnFamily(), ids.size(), slices.data(),
                       values.data(), statuses.data());
          for (auto& st : statuses) {
            if (!st.ok()) std::abort();
          }
          return uint64_t{0};
        });
      }
    }
  }

  // ---- DRAM: in-process tier vs a co-located client through shared memory ----
  {
    DramTier::Options o;
    o.shm_name = absl::StrCat("/engram-bench-", getpid());
    o.budget_bytes = ResidentGeometry(l.rows, l.row_bytes).size_bytes;
    o.lock = false;
    o.model = m.model;
    o.layer = m.layer;
    o.version = m.version;
    auto dram = DramTier::Create(o, l.rows, l.row_bytes);
    if (!dram.ok() || !(*dram)->LoadResident(m, path).ok()) {
      std::fprintf(stderr,
                   "DRAM tier: cannot build a resident arena (is /dev/shm large enough?)\n");
    } else {
      TableDescription d;
      d.key = TableKey{m.model, m.layer, m.version};
      d.rows = l.rows;
      d.row_bytes = l.row_bytes;
      d.arena.shm_name = o.shm_name;
      d.arena.layout = "resident";
      d.arena.host_id = LocalHostId();
      d.arena.arena_id = (*dram)->arena().header().arena_id;
      auto reader = ArenaReader::Open(d);
      for (size_t b : f.batches) {
        std::vector<uint8_t> out(b * l.row_bytes);
        std::vector<uint32_t> missing;
        Measure("DramTier (in-process)", b, l.rows, f.seconds,
                [&](const std::vector<uint64_t>& ids) {
                  missing.clear();
                  (void)(*dram)->Lookup(ids, out.data(), &missing);
                  return uint64_t{0};
                });
        if (reader.ok()) {
          Measure("ArenaReader (co-located)", b, l.rows, f.seconds,
                  [&](const std::vector<uint64_t>& ids) {
                    missing.clear();
                    (void)(*reader)->Lookup(ids, out.data(), &missing);
                    return uint64_t{0};
                  });
        }
      }
    }
  }

  // ---- gRPC over loopback, rows served from DRAM ----
  if (f.grpc) {
    TierConfig c;
    c.store.dir = store;
    c.store.verify = "quick";
    c.server.listen = "127.0.0.1:0";
    c.server.metrics_port = -1;
    c.server.lookup_threads = 2;
    c.dram.bytes = ResidentGeometry(l.rows, l.row_bytes).size_bytes;
    c.dram.lock = false;
    c.dram.shm_prefix = absl::StrCat("engram-bench-", getpid());
    auto server = TierServer::Start(c);
    if (!server.ok()) {
      std::fprintf(stderr, "engram-memory: %s\n", server.status().ToString().c_str());
    } else {
      TierClientOptions co;
      co.address = absl::StrCat("127.0.0.1:", (*server)->port());
      auto client = TierClient::Connect(co);
      auto stream = (*client)->OpenPrefetchStream({});
      uint64_t batch_id = 0;
      for (size_t b : f.batches) {
        Measure("gRPC Lookup", b, l.rows, f.seconds, [&](const std::vector<uint64_t>& ids) {
          if (!(*client)->Lookup({"bench", 1, 0}, ids).ok()) std::abort();
          return uint64_t{0};
        });
        Measure("gRPC Prefetch (1 in flight)", b, l.rows, f.seconds,
                [&](const std::vector<uint64_t>& ids) {
                  PrefetchBatch batch;
                  batch.batch_id = ++batch_id;
                  batch.table = {"bench", 1, 0};
                  batch.row_ids = ids;
                  PrefetchResult r = (*stream)->SendAsync(std::move(batch)).get();
                  if (!r.status.ok()) std::abort();
                  return uint64_t{0};
                });
      }
      (void)(*stream)->Finish();
      (*server)->Shutdown();
    }
  }

  // ---- ratios ----
  std::printf("\nratios (same run, same table):\n");
  const Result* raw = Find("raw io_uring (ceiling)", 0);
  for (size_t b : f.batches) {
    const Result* tier = Find("NvmeTier uring", b);
    const Result* raw_batch = Find("raw io_uring batch", b);
    const Result* pread = Find("pread loop (QD1)", b);
    const Result* rocks = Find("RocksDB MultiGet", b);
    const Result* dram = Find("DramTier (in-process)", b);
    const Result* arena = Find("ArenaReader (co-located)", b);
    const Result* lookup = Find("gRPC Lookup", b);
    const Result* prefetch = Find("gRPC Prefetch (1 in flight)", b);
    std::printf("batch %6zu:", b);
    if (tier && raw) {
      std::printf("  NvmeTier reads/s vs ceiling %5.1f%%",
                  100 * tier->pages_per_s() / raw->pages_per_s());
    }
    if (tier && raw_batch) {
      std::printf("  NvmeTier rows/s vs raw batch %5.1f%%",
                  100 * tier->rows_per_s() / raw_batch->rows_per_s());
    }
    if (tier && pread)
      std::printf("  NvmeTier/pread loop rows %5.1fx", tier->rows_per_s() / pread->rows_per_s());
    if (tier && rocks)
      std::printf("  NvmeTier/RocksDB rows %5.1fx", tier->rows_per_s() / rocks->rows_per_s());
    if (dram && arena) {
      std::printf("  ArenaReader p50 / DramTier p50 %4.2fx",
                  arena->Percentile(0.5) / dram->Percentile(0.5));
    }
    if (lookup) std::printf("  gRPC Lookup %6.3f us/row", lookup->Percentile(0.5) / b);
    if (prefetch) std::printf("  Prefetch %6.3f us/row", prefetch->Percentile(0.5) / b);
    if (dram) std::printf("  (DramTier %6.4f us/row)", dram->Percentile(0.5) / b);
    std::printf("\n");
  }
  if (!f.keep) std::filesystem::remove_all(root);
  return 0;
}

}  // namespace
}  // namespace engram

int main(int argc, char** argv) {
  engram::Flags flags;
  if (!engram::ParseFlags(argc, argv, &flags)) {
    engram::Usage();
    return 2;
  }
  return engram::Run(flags);
}
