// The GPU reads the memory tier's shared-memory arena in place (docs/architecture.md contract 3): a
// real engram-memory (in-process TierServer on 127.0.0.1:0, gRPC over loopback) imports a bf16
// table and holds it resident in its arena; the test opens the arena as a co-located worker does
// (TableInfo -> ArenaReader), registers the read-only mapping with cudaHostRegister and gathers
// random rows with LaunchEngramGather. Every row must equal the row Lookup returns over gRPC and
// the source safetensors, byte for byte.
#include <cuda_runtime.h>
#include <unistd.h>

#include <random>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "memory_tier/catalog.h"
#include "memory_tier/importer.h"
#include "memory_tier/tier_client.h"
#include "memory_tier/tier_server.h"
#include "model/kernels/engram_gather.cuh"
#include "tests/gpu/cuda_ok.h"
#include "tests/memory_tier/test_model.h"

namespace engram {
namespace {

TEST(ArenaGatherTest, GpuGatherFromTheTiersArenaMatchesLookup) {
  testing::TempDir tmp;
  const std::string model_dir = tmp.path() + "/model";
  const std::string store_dir = tmp.path() + "/store";
  testing::TestModelSpec spec;
  spec.dtype = "bf16";
  spec.head_dim = 64;  // 128-byte rows
  spec.layer_ids = {1, 3};
  ASSERT_TRUE(testing::WriteTestModel(model_dir, spec).ok());
  {
    auto catalog = Catalog::Open(store_dir, Catalog::Mode::kReadWrite);
    ASSERT_TRUE(catalog.ok()) << catalog.status();
    ImportOptions options;
    options.model_dir = model_dir;
    ASSERT_TRUE(ImportModel(**catalog, options).ok());
  }
  size_t row_bytes = 0;
  auto source = testing::SourceRows(model_dir, 1, &row_bytes);
  ASSERT_TRUE(source.ok()) << source.status();
  const uint64_t rows = testing::TestModelRows(spec)[0];

  TierConfig config;
  config.store.dir = store_dir;
  config.server.listen = "127.0.0.1:0";
  config.server.metrics_host = "127.0.0.1";
  config.server.metrics_port = 0;
  config.dram.bytes = 64ull << 20;  // both tables resident
  config.dram.lock = false;
  config.dram.shm_prefix = absl::StrCat("engram-gpu-test-", getpid());
  auto server = TierServer::Start(config);
  ASSERT_TRUE(server.ok()) << server.status();
  auto client = TierClient::Connect({.address = absl::StrCat("127.0.0.1:", (*server)->port())});
  ASSERT_TRUE(client.ok()) << client.status();
  auto table = (*client)->FindTable(spec.name, 1);
  ASSERT_TRUE(table.ok()) << table.status();
  auto arena = ArenaReader::Open(*table);
  ASSERT_TRUE(arena.ok()) << arena.status();
  ASSERT_TRUE((*arena)->resident());
  ASSERT_EQ((*arena)->row_bytes(), row_bytes);

  // Register the read-only shared mapping and take its device address.
  void* base = const_cast<uint8_t*>((*arena)->base());
  CUDA_OK(cudaHostRegister(base, (*arena)->size(), cudaHostRegisterMapped | cudaHostRegisterReadOnly));
  void* device_base = nullptr;
  CUDA_OK(cudaHostGetDevicePointer(&device_base, base, 0));

  std::mt19937_64 rng(7);
  std::vector<uint64_t> ids(4099);
  for (auto& id : ids) id = rng() % rows;
  ids[0] = 0;
  ids[1] = rows - 1;
  uint64_t* d_ids = nullptr;
  uint8_t* d_out = nullptr;
  CUDA_OK(cudaMalloc(&d_ids, ids.size() * sizeof(uint64_t)));
  CUDA_OK(cudaMalloc(&d_out, ids.size() * row_bytes));
  CUDA_OK(cudaMemcpy(d_ids, ids.data(), ids.size() * sizeof(uint64_t), cudaMemcpyHostToDevice));
  kernels::EngramGatherArgs args;
  args.table = static_cast<const uint8_t*>(device_base) + (*arena)->data_offset();
  args.table_rows = rows;
  args.row_stride = row_bytes;  // resident layout: row r at data_offset + r * row_bytes
  args.row_bytes = static_cast<uint32_t>(row_bytes);
  args.row_ids = d_ids;
  args.n = static_cast<uint32_t>(ids.size());
  args.out = d_out;
  ASSERT_TRUE(kernels::LaunchEngramGather(args, nullptr).ok());
  CUDA_OK(cudaDeviceSynchronize());
  std::vector<uint8_t> gathered(ids.size() * row_bytes);
  CUDA_OK(cudaMemcpy(gathered.data(), d_out, gathered.size(), cudaMemcpyDeviceToHost));

  auto lookup = (*client)->Lookup(table->key, ids);
  ASSERT_TRUE(lookup.ok()) << lookup.status();
  ASSERT_EQ(lookup->rows.size(), gathered.size());
  int mismatches = 0;
  for (size_t i = 0; i < ids.size() && mismatches < 5; ++i) {
    const uint8_t* got = gathered.data() + i * row_bytes;
    const auto* via_grpc = reinterpret_cast<const uint8_t*>(lookup->rows.data()) + i * row_bytes;
    const uint8_t* want = source->data() + ids[i] * row_bytes;
    if (std::memcmp(got, want, row_bytes) != 0 || std::memcmp(via_grpc, want, row_bytes) != 0) {
      ADD_FAILURE() << "row id " << ids[i] << " (position " << i << ") differs";
      ++mismatches;
    }
  }
  cudaFree(d_ids);
  cudaFree(d_out);
  CUDA_OK(cudaHostUnregister(base));
  (*server)->Shutdown();
}

}  // namespace
}  // namespace engram
