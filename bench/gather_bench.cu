// GPU gather of Engram rows from each place a row can live, side by side in one run:
//   hbm      table in device memory (the HBM hot tier)
//   arena    table in a POSIX shared-memory mapping registered with cudaHostRegister, read in place
//            by the kernel over PCIe (how a co-located worker reads the memory tier's DRAM arena)
//   staged   baseline: the CPU gathers the rows into a pinned staging buffer, then one H2D copy
//            (what an engine does when the GPU cannot read host memory in place)
// Batches of 48, 768 and 12,288 rows (one V4.1 token, a 16-sequence decode step, a 256-sequence
// step) of uniformly random row ids; per-batch latency p50/p99 from CUDA events (staged: wall clock
// around gather + copy + sync), rows/s at p50, and each path's ratio to the staged baseline.
//
// usage: gather_bench [--table-mib N] [--row-bytes B] [--iters N]
#include <cuda_runtime.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "bench/percentile.h"
#include "model/kernels/engram_gather.cuh"

namespace {

#define CHECK_CUDA(expr)                                                                 \
  do {                                                                                   \
    cudaError_t e = (expr);                                                              \
    if (e != cudaSuccess) {                                                              \
      std::fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #expr, cudaGetErrorString(e)); \
      std::exit(1);                                                                      \
    }                                                                                    \
  } while (0)

struct Result {
  double p50_us;
  double p99_us;
};

}  // namespace

int main(int argc, char** argv) {
  size_t table_mib = 4096;
  uint32_t row_bytes = 256;
  int iters = 200;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string flag = argv[i];
    if (flag == "--table-mib") table_mib = std::strtoull(argv[i + 1], nullptr, 10);
    else if (flag == "--row-bytes") row_bytes = std::strtoul(argv[i + 1], nullptr, 10);
    else if (flag == "--iters") iters = std::atoi(argv[i + 1]);
    else { std::fprintf(stderr, "unknown flag %s\n", argv[i]); return 2; }
  }
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    std::fprintf(stderr, "gather_bench: no CUDA device\n");
    return 77;
  }
  cudaDeviceProp prop;
  CHECK_CUDA(cudaGetDeviceProperties(&prop, 0));
  const uint64_t table_bytes = table_mib << 20;
  const uint64_t rows = table_bytes / row_bytes;
  std::printf("# gather_bench device=\"%s\" table=%zu MiB rows=%lu row_bytes=%u iters=%d\n",
              prop.name, table_mib, static_cast<unsigned long>(rows), row_bytes, iters);

  // Host table in POSIX shared memory, as the memory tier's arena.
  std::string shm_name = "/engram-gather-bench-" + std::to_string(getpid());
  int fd = shm_open(shm_name.c_str(), O_CREAT | O_RDWR | O_EXCL, 0600);
  if (fd < 0 || ftruncate(fd, table_bytes) != 0) { std::perror("shm"); return 1; }
  auto* arena = static_cast<uint8_t*>(mmap(nullptr, table_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0));
  if (arena == MAP_FAILED) { std::perror("mmap"); return 1; }
  close(fd);
  shm_unlink(shm_name.c_str());
  for (uint64_t i = 0; i < table_bytes; i += 8) {
    uint64_t v = i * 0x9e3779b97f4a7c15ull;
    std::memcpy(arena + i, &v, 8);
  }
  auto t0 = std::chrono::steady_clock::now();
  CHECK_CUDA(cudaHostRegister(arena, table_bytes, cudaHostRegisterMapped | cudaHostRegisterReadOnly));
  double register_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  void* arena_dev = nullptr;
  CHECK_CUDA(cudaHostGetDevicePointer(&arena_dev, arena, 0));
  std::printf("# cudaHostRegister of %zu MiB: %.3f s\n", table_mib, register_s);

  uint8_t* hbm = nullptr;
  CHECK_CUDA(cudaMalloc(&hbm, table_bytes));
  CHECK_CUDA(cudaMemcpy(hbm, arena, table_bytes, cudaMemcpyHostToDevice));

  const std::vector<uint32_t> batches = {48, 768, 12288};
  const uint32_t max_batch = batches.back();
  uint64_t* d_ids = nullptr;
  uint8_t* d_out = nullptr;
  uint64_t* h_ids = nullptr;
  uint8_t* staging = nullptr;
  CHECK_CUDA(cudaMalloc(&d_ids, max_batch * 8));
  CHECK_CUDA(cudaMalloc(&d_out, size_t{max_batch} * row_bytes));
  CHECK_CUDA(cudaMallocHost(&h_ids, max_batch * 8));
  CHECK_CUDA(cudaMallocHost(&staging, size_t{max_batch} * row_bytes));
  cudaStream_t stream;
  CHECK_CUDA(cudaStreamCreate(&stream));
  cudaEvent_t start, stop;
  CHECK_CUDA(cudaEventCreate(&start));
  CHECK_CUDA(cudaEventCreate(&stop));
  std::mt19937_64 rng(42);

  std::printf("%-7s %7s %10s %10s %14s %9s\n", "source", "batch", "p50_us", "p99_us", "rows_per_s",
              "vs_staged");
  for (uint32_t batch : batches) {
    auto run_gpu = [&](const uint8_t* table) {
      std::vector<double> us;
      for (int it = 0; it < iters + 10; ++it) {
        for (uint32_t i = 0; i < batch; ++i) h_ids[i] = rng() % rows;
        CHECK_CUDA(cudaMemcpyAsync(d_ids, h_ids, batch * 8, cudaMemcpyHostToDevice, stream));
        engram::kernels::EngramGatherArgs args;
        args.table = table;
        args.table_rows = rows;
        args.row_stride = row_bytes;
        args.row_bytes = row_bytes;
        args.row_ids = d_ids;
        args.n = batch;
        args.out = d_out;
        CHECK_CUDA(cudaEventRecord(start, stream));
        if (!engram::kernels::LaunchEngramGather(args, stream).ok()) std::exit(1);
        CHECK_CUDA(cudaEventRecord(stop, stream));
        CHECK_CUDA(cudaEventSynchronize(stop));
        float ms = 0;
        CHECK_CUDA(cudaEventElapsedTime(&ms, start, stop));
        if (it >= 10) us.push_back(ms * 1000.0);
      }
      return Result{engram::Percentile(us, 0.5), engram::Percentile(us, 0.99)};
    };
    auto run_staged = [&]() {
      std::vector<double> us;
      for (int it = 0; it < iters + 10; ++it) {
        for (uint32_t i = 0; i < batch; ++i) h_ids[i] = rng() % rows;
        auto begin = std::chrono::steady_clock::now();
        for (uint32_t i = 0; i < batch; ++i) {
          std::memcpy(staging + size_t{i} * row_bytes, arena + h_ids[i] * row_bytes, row_bytes);
        }
        CHECK_CUDA(cudaMemcpyAsync(d_out, staging, size_t{batch} * row_bytes, cudaMemcpyHostToDevice, stream));
        CHECK_CUDA(cudaStreamSynchronize(stream));
        double t = std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - begin).count();
        if (it >= 10) us.push_back(t);
      }
      return Result{engram::Percentile(us, 0.5), engram::Percentile(us, 0.99)};
    };
    Result staged = run_staged();
    Result hbm_r = run_gpu(hbm);
    Result arena_r = run_gpu(static_cast<const uint8_t*>(arena_dev));
    auto print = [&](const char* name, Result r) {
      std::printf("%-7s %7u %10.2f %10.2f %14.3e %8.2fx\n", name, batch, r.p50_us, r.p99_us,
                  batch / (r.p50_us * 1e-6), staged.p50_us / r.p50_us);
    };
    print("staged", staged);
    print("hbm", hbm_r);
    print("arena", arena_r);
  }
  cudaHostUnregister(arena);
  munmap(arena, table_bytes);
  cudaFree(hbm);
  return 0;
}
