// Fuzz target: the memory tier's request path (memory_tier/memory_tier_service.cc) on a real
// TableSet: the raw request bytes parsed as the method's message, then what the service does with
// them before and during a lookup: Admit (draining/loading, batch limits, table resolution,
// response size), the arena-hit validation and budget (RecordArenaHits), and the lookup itself
// (RunBatch over the DRAM arena and the NVMe row file: every row id out of range must be an
// error, never a read). TableInfo's model filter and Stats' top_rows run through the same parse.
//
// The table set is two Engram layers of a small test model imported into a store under the
// scratch directory at start-up: layer 1 resident in DRAM, layer 3 a small cache over NVMe.
// Input: METHOD_BYTE then the serialized request. METHOD_BYTE % 4: 0 Lookup, 1 Prefetch,
// 2 TableInfo, 3 Stats.
#include <grpc/grpc.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "common/grpc_message.h"
#include "engram/v1/memory_tier.pb.h"
#include "grpcpp/support/byte_buffer.h"
#include "memory_tier/catalog.h"
#include "memory_tier/importer.h"
#include "memory_tier/memory_tier_service.h"
#include "memory_tier/table_set.h"
#include "prometheus/registry.h"
#include "tests/fuzz/fuzz_input.h"
#include "tests/memory_tier/test_model.h"

namespace engram {

class MemoryTierServicePeer {
 public:
  static absl::StatusOr<ServedTable*> Admit(MemoryTierService& s, const v1::TableRef& table,
                                            size_t rows) {
    return s.Admit(table, rows);
  }
  static absl::Status RecordArenaHits(MemoryTierService& s, const v1::PrefetchRequest& request,
                                      uint64_t* credit) {
    return s.RecordArenaHits(request, credit);
  }
  static absl::Status RunBatch(MemoryTierService& s, ServedTable* table,
                               const google::protobuf::RepeatedField<uint64_t>& ids) {
    std::string rows;
    uint64_t version = 0;
    uint32_t row_bytes = 0;
    google::protobuf::RepeatedPtrField<v1::TierCount> served_by;
    absl::Status status = s.RunBatch(table, ids, &rows, &version, &row_bytes, &served_by);
    if (status.ok() && rows.size() != static_cast<size_t>(ids.size()) * row_bytes) {
      __builtin_trap();
    }
    // Out-of-range ids are the caller's fault, never a lookup: the cascade must say so.
    if (status.ok()) {
      for (uint64_t id : ids) {
        if (id >= table->manifest.layout.rows) __builtin_trap();
      }
    }
    return status;
  }
};

namespace {

struct Fixture {
  std::unique_ptr<Catalog> catalog;
  std::unique_ptr<TierMetrics> metrics;
  std::unique_ptr<TableSet> tables;
  std::unique_ptr<MemoryTierService> service;
};

Fixture& Get() {
  static Fixture* fixture = [] {
    grpc_init();
    auto* f = new Fixture();
    const std::string dir = fuzz::ScratchDir();
    testing::TestModelSpec spec;
    spec.name = "fuzzmodel";
    spec.layer_ids = {1, 3};
    spec.dtype = "bf16";
    if (!testing::WriteTestModel(dir + "/model", spec).ok()) std::abort();
    auto catalog = Catalog::Open(dir + "/store", Catalog::Mode::kReadWrite);
    if (!catalog.ok()) std::abort();
    f->catalog = *std::move(catalog);
    ImportOptions io;
    io.model_dir = dir + "/model";
    io.chunk_bytes = 8192;
    if (!ImportModel(*f->catalog, io).ok()) std::abort();
    TierConfig config;
    config.store.dir = dir + "/store";
    const uint64_t layer1_bytes = testing::TestModelRows(spec)[0] * 64;  // bf16, head_dim 32
    config.dram.bytes = 4096 + layer1_bytes + 40 * 1024;  // layer 1 resident, layer 3 a cache
    config.dram.ways = 4;
    config.dram.lock = false;
    config.dram.shm_prefix = absl::StrCat("engram-fuzz-", getpid());
    config.nvme.io_depth = 16;
    f->metrics = std::make_unique<TierMetrics>(std::make_shared<prometheus::Registry>());
    auto tables = TableSet::Load(*f->catalog, config, f->metrics.get());
    if (!tables.ok()) std::abort();
    f->tables = *std::move(tables);
    MemoryTierService::Options options;
    options.max_batch_rows = 5000;
    options.lookup_threads = 1;
    f->service = std::make_unique<MemoryTierService>(options, f->metrics.get());
    f->service->SetTables(f->tables.get());
    // At exit the arenas are retired and unlinked (the table set's destructor), so a campaign
    // leaves nothing in /dev/shm; registered after ScratchDir's cleanup, so it runs first.
    std::atexit([] {
      Fixture& fx = Get();
      fx.service.reset();
      fx.tables.reset();
    });
    return f;
  }();
  return *fixture;
}

}  // namespace
}  // namespace engram

extern "C" int LLVMFuzzerInitialize(int* argc, char*** argv) {
  (void)engram::Get();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using engram::MemoryTierServicePeer;
  if (size == 0) return 0;
  engram::Fixture& f = engram::Get();
  grpc::Slice slice(data + 1, size - 1);
  const grpc::ByteBuffer bytes(&slice, 1);
  switch (data[0] % 4) {
    case 0: {  // Lookup
      auto request = engram::ParseMessage<engram::v1::LookupRequest>(bytes);
      if (!request.ok()) return 0;
      auto table =
          MemoryTierServicePeer::Admit(*f.service, request->table(), request->row_ids().size());
      if (table.ok()) (void)MemoryTierServicePeer::RunBatch(*f.service, *table, request->row_ids());
      break;
    }
    case 1: {  // one Prefetch message, on a fresh stream's budget
      auto request = engram::ParseMessage<engram::v1::PrefetchRequest>(bytes);
      if (!request.ok()) return 0;
      uint64_t credit = engram::MemoryTierService::kArenaHitAllowance +
                        engram::MemoryTierService::kArenaHitsPerAskedRow *
                            static_cast<uint64_t>(request->row_ids().size());
      const uint64_t before = credit;
      absl::Status hits = MemoryTierServicePeer::RecordArenaHits(*f.service, *request, &credit);
      if (credit > before) __builtin_trap();  // the budget only shrinks
      if (!hits.ok() || request->row_ids().empty()) return 0;
      auto table =
          MemoryTierServicePeer::Admit(*f.service, request->table(), request->row_ids().size());
      if (table.ok()) (void)MemoryTierServicePeer::RunBatch(*f.service, *table, request->row_ids());
      break;
    }
    case 2:
      (void)engram::ParseMessage<engram::v1::TableInfoRequest>(bytes);
      break;
    default:
      (void)engram::ParseMessage<engram::v1::StatsRequest>(bytes);
      break;
  }
  return 0;
}
