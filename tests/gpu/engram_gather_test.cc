// LaunchEngramGather against its CPU reference, from HBM and from registered (mapped) host memory,
// with awkward shapes: 1, 19, 111 and 4099 rows; row sizes 2 (odd word), 64, 128 and 264 (FP8 +
// scales); strides equal to and larger than the row; out-of-range ids.
#include <cuda_runtime.h>
#include <sys/mman.h>

#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "model/kernels/engram_gather.cuh"
#include "model/kernels/reference.h"
#include "tests/gpu/cuda_ok.h"

namespace engram::kernels {
namespace {

struct Shape {
  uint32_t n;
  uint32_t row_bytes;
  uint64_t row_stride;
};

class EngramGatherTest : public testing::TestWithParam<std::tuple<Shape, bool>> {};

TEST_P(EngramGatherTest, MatchesReference) {
  const auto [shape, host_table] = GetParam();
  const uint64_t table_rows = 5003;
  const size_t table_size = table_rows * shape.row_stride;
  std::mt19937_64 rng(shape.n * 131 + shape.row_bytes);

  // The host table lives in an anonymous mapping, registered like the memory tier's arena.
  void* host = mmap(nullptr, table_size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(host, MAP_FAILED);
  auto* table = static_cast<uint8_t*>(host);
  for (size_t i = 0; i < table_size; ++i) table[i] = static_cast<uint8_t>(rng());

  std::vector<uint64_t> ids(shape.n);
  for (auto& id : ids) id = rng() % table_rows;
  if (shape.n > 3) {
    ids[1] = table_rows;       // out of range -> zeros
    ids[2] = ~uint64_t{0};
    ids[3] = table_rows - 1;   // last row
  }

  const uint8_t* device_table = nullptr;
  uint8_t* hbm = nullptr;
  if (host_table) {
    CUDA_OK(cudaHostRegister(host, table_size, cudaHostRegisterMapped | cudaHostRegisterReadOnly));
    void* mapped = nullptr;
    CUDA_OK(cudaHostGetDevicePointer(&mapped, host, 0));
    device_table = static_cast<const uint8_t*>(mapped);
  } else {
    CUDA_OK(cudaMalloc(&hbm, table_size));
    CUDA_OK(cudaMemcpy(hbm, table, table_size, cudaMemcpyHostToDevice));
    device_table = hbm;
  }
  uint64_t* d_ids = nullptr;
  uint8_t* d_out = nullptr;
  unsigned int* d_bad = nullptr;
  CUDA_OK(cudaMalloc(&d_ids, ids.size() * 8));
  CUDA_OK(cudaMalloc(&d_out, size_t{shape.n} * shape.row_bytes));
  CUDA_OK(cudaMalloc(&d_bad, sizeof(unsigned int)));
  CUDA_OK(cudaMemset(d_bad, 0, sizeof(unsigned int)));
  CUDA_OK(cudaMemset(d_out, 0xab, size_t{shape.n} * shape.row_bytes));
  CUDA_OK(cudaMemcpy(d_ids, ids.data(), ids.size() * 8, cudaMemcpyHostToDevice));

  EngramGatherArgs args;
  args.table = device_table;
  args.table_rows = table_rows;
  args.row_stride = shape.row_stride;
  args.row_bytes = shape.row_bytes;
  args.row_ids = d_ids;
  args.n = shape.n;
  args.out = d_out;
  args.out_of_range = d_bad;
  ASSERT_TRUE(LaunchEngramGather(args, nullptr).ok());
  CUDA_OK(cudaDeviceSynchronize());

  std::vector<uint8_t> got(size_t{shape.n} * shape.row_bytes), want(got.size());
  unsigned int bad = 0;
  CUDA_OK(cudaMemcpy(got.data(), d_out, got.size(), cudaMemcpyDeviceToHost));
  CUDA_OK(cudaMemcpy(&bad, d_bad, sizeof(bad), cudaMemcpyDeviceToHost));
  size_t want_bad = EngramGatherReference(table, table_rows, shape.row_stride, shape.row_bytes,
                                          ids.data(), ids.size(), want.data());
  EXPECT_EQ(bad, want_bad);
  int printed = 0;
  for (size_t i = 0; i < got.size() && printed < 8; ++i) {
    if (got[i] != want[i]) {
      ADD_FAILURE() << "row " << i / shape.row_bytes << " byte " << i % shape.row_bytes << ": got "
                    << int(got[i]) << " want " << int(want[i]);
      ++printed;
    }
  }

  cudaFree(d_ids);
  cudaFree(d_out);
  cudaFree(d_bad);
  if (hbm) cudaFree(hbm);
  if (host_table) cudaHostUnregister(host);
  munmap(host, table_size);
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, EngramGatherTest,
    testing::Combine(testing::Values(Shape{1, 64, 64}, Shape{19, 128, 128}, Shape{111, 264, 264},
                                     Shape{4099, 128, 128}, Shape{19, 64, 96}, Shape{111, 2, 3},
                                     Shape{111, 264, 272}),
                     testing::Bool()));

TEST(EngramGatherArgsTest, RejectsBadArguments) {
  EngramGatherArgs args;
  args.n = 1;
  EXPECT_FALSE(LaunchEngramGather(args, nullptr).ok());
  EXPECT_TRUE(LaunchEngramGather(EngramGatherArgs{}, nullptr).ok());  // n = 0 is a no-op
}

}  // namespace
}  // namespace engram::kernels
