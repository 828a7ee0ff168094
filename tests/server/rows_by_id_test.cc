// Rows by id: the worker side of the GPU reading a co-located tier's resident arenas in place. The
// real scheduler (SchedulerOptions::rows_by_id), StepRows and TierRowBackend (ResidentTables,
// SetRowsReadByDevice) against a real engram-memory over gRPC loopback, with a backbone that reads
// rows the way the CUDA backbone given BackboneOptions::engram_tables does: it asks the row source
// where the rows are (Locate), expects row ids, and gathers and decodes them itself from the
// arena's mapping (the GPU does the same over PCIe). Generation must equal the in-process
// reference, every row must have been located by id, and the host must have decoded none.
//
// Needs the GPT-2 tokenizer.json from scripts/fetch-testdata.sh (the demo model writer copies it).
#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "gtest/gtest.h"
#include "memory_tier/tier_server.h"
#include "model/backbone_factory.h"
#include "model/cpu_backbone.h"
#include "model/model.h"
#include "prometheus/registry.h"
#include "server/scheduler.h"
#include "server/tier_rows.h"
#include "server/worker_metrics.h"
#include "tests/common/temp_dir.h"
#include "tests/server/tier_worker_fixture.h"

namespace engram {
namespace {

using testing::TempDir;

constexpr int kContext = 96;
constexpr int kTokens = 8;

// Hands the CPU backbone the rows it gathered itself from the resident tables, by the ids the
// step's row source located. Counts what it saw.
class GatherById : public EngramRowSource {
 public:
  GatherById(EngramRowSource& source, const std::vector<ResidentTable>& tables, int head_dim)
      : source_(source), tables_(tables), head_dim_(head_dim) {}

  absl::StatusOr<absl::Span<const float>> Rows(size_t item, int engram_layer_index) override {
    absl::StatusOr<EngramRows> r = source_.Locate(item, engram_layer_index);
    if (!r.ok()) return r.status();
    if (r->where != EngramRows::Where::kRowIds) {
      return absl::InternalError("the step handed over rows, not row ids");
    }
    const ResidentTable& t = tables_[engram_layer_index];
    std::vector<float>& out = buffers_.emplace_back(r->ids * head_dim_);
    for (size_t i = 0; i < r->ids; ++i) {
      const uint64_t id = r->row_ids[i];
      if (id >= t.rows) return absl::InternalError(absl::StrCat("row id ", id, " >= ", t.rows));
      absl::Status s =
          DecodeRows(t.dtype, t.data + id * t.stride, 1, head_dim_, &out[i * head_dim_]);
      if (!s.ok()) return s;
    }
    ids_located += r->ids;
    return absl::Span<const float>(out);
  }

  uint64_t ids_located = 0;

 private:
  EngramRowSource& source_;
  const std::vector<ResidentTable>& tables_;
  const int head_dim_;
  std::vector<std::vector<float>> buffers_;  // valid until the step ends
};

// The CPU backbone behind GatherById: what the GPU backbone does with engram_tables, on the CPU.
class ByIdBackbone : public Backbone {
 public:
  ByIdBackbone(CpuBackbone& inner, std::vector<ResidentTable> tables)
      : inner_(inner), tables_(std::move(tables)) {}
  const ModelConfig& config() const override { return inner_.config(); }
  std::string device_name() const override { return "cpu, rows by id"; }
  std::unique_ptr<SequenceState> NewSequence(int max_tokens) override {
    return inner_.NewSequence(max_tokens);
  }
  KvCapacity kv_capacity() const override { return inner_.kv_capacity(); }
  int64_t BlocksNeeded(const SequenceState& sequence, int tokens) const override {
    return inner_.BlocksNeeded(sequence, tokens);
  }
  absl::Status Reserve(SequenceState& sequence, int tokens) override {
    return inner_.Reserve(sequence, tokens);
  }
  absl::Status Step(absl::Span<const BatchItem> items, EngramRowSource& rows,
                    StepOutput* out) override {
    GatherById gather(rows, tables_, inner_.config().engram.head_dim);
    absl::Status s = inner_.Step(items, gather, out);
    ids_located_ += gather.ids_located;
    return s;
  }
  uint64_t ids_located() const { return ids_located_; }

 private:
  CpuBackbone& inner_;
  const std::vector<ResidentTable> tables_;
  std::atomic<uint64_t> ids_located_{0};
};

class RowsByIdTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto model = testing::WriteAndImportTinyModel(model_dir(), store_dir(),
                                                  absl::StrCat("rows-by-id-", getpid()), kContext);
    ASSERT_TRUE(model.ok()) << model.status();
    model_ = *std::move(model);
  }

  void TearDown() override {
    if (scheduler_) scheduler_->Stop();
    scheduler_.reset();
    rows_.reset();
    if (server_) server_->Shutdown();
  }

  // engram-memory with `dram_bytes` of DRAM, and a worker-side row backend connected to it.
  void StartTier(uint64_t dram_bytes) {
    TierConfig c;
    c.store.dir = store_dir();
    c.server.listen = "127.0.0.1:0";
    c.server.metrics_port = -1;
    c.dram.bytes = dram_bytes;
    c.dram.lock = false;
    c.dram.shm_prefix = absl::StrCat("engram-byid-", getpid());
    c.nvme.io_backend = "pread";
    c.nvme.direct_io = false;
    auto server = TierServer::Start(c);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    registry_ = std::make_shared<prometheus::Registry>();
    metrics_ = std::make_unique<WorkerMetrics>(registry_, model_->config().engram.layer_ids,
                                               model_->name());
    TierRowBackendOptions t;
    t.address = absl::StrCat("127.0.0.1:", server_->port());
    rows_ = std::make_unique<TierRowBackend>(*model_, t, *metrics_);
    rows_->Start();
    for (int i = 0; i < 500 && !rows_->Ready().ok(); ++i) absl::SleepFor(absl::Milliseconds(10));
    ASSERT_TRUE(rows_->Ready().ok()) << rows_->Ready();
  }

  GenerateParams Params(const std::string& id, const std::string& text) {
    return testing::TestParams(*model_, id, text, kTokens, kContext);
  }

  std::vector<uint32_t> Reference(const std::string& text) {
    return testing::ReferenceTokens(*model_, text, kTokens, kContext);
  }

  std::string model_dir() const { return tmp_.path() + "/model"; }
  std::string store_dir() const { return tmp_.path() + "/store"; }

  TempDir tmp_;
  std::unique_ptr<const Model> model_;
  std::unique_ptr<TierServer> server_;
  std::shared_ptr<prometheus::Registry> registry_;
  std::unique_ptr<WorkerMetrics> metrics_;
  std::unique_ptr<TierRowBackend> rows_;
  std::unique_ptr<Scheduler> scheduler_;
};

TEST_F(RowsByIdTest, ResidentTablesAreTheModelsRows) {
  StartTier(64 << 20);
  auto tables = rows_->ResidentTables();
  ASSERT_TRUE(tables.ok()) << tables.status();
  const ModelConfig& config = model_->config();
  ASSERT_EQ(tables->size(), config.engram.layer_ids.size());
  const int head_dim = config.engram.head_dim;
  for (size_t li = 0; li < tables->size(); ++li) {
    const ResidentTable& t = (*tables)[li];
    const TensorView* w = model_->tensors().Find(model_->EngramTableName(static_cast<int>(li)));
    ASSERT_NE(w, nullptr);
    ASSERT_EQ(t.rows, static_cast<uint64_t>(w->shape[0]));
    ASSERT_EQ(t.head_dim, head_dim);
    ASSERT_GE(t.stride, DTypeSize(w->dtype) * head_dim);
    std::vector<float> got(head_dim), want(head_dim);
    // Every row, decoded from the arena's mapping, equals the model's own row.
    for (uint64_t r = 0; r < t.rows; ++r) {
      ASSERT_TRUE(DecodeRows(t.dtype, t.data + r * t.stride, 1, head_dim, got.data()).ok());
      ASSERT_TRUE(ConvertToF32(w->dtype, w->data + r * DTypeSize(w->dtype) * head_dim, head_dim,
                               want.data())
                      .ok());
      ASSERT_EQ(got, want) << "layer index " << li << " row " << r;
    }
  }
}

TEST_F(RowsByIdTest, GenerationReadsRowsByIdAndEqualsTheReference) {
  StartTier(64 << 20);
  auto tables = rows_->ResidentTables();
  ASSERT_TRUE(tables.ok()) << tables.status();
  rows_->SetRowsReadByDevice(true);
  CpuBackboneOptions b;
  b.threads = 1;
  CpuBackbone cpu(*model_, b);
  ByIdBackbone backbone(cpu, *tables);
  SchedulerOptions o;
  o.max_context_tokens = kContext;
  o.rows_by_id = true;
  scheduler_ = std::make_unique<Scheduler>(*model_, backbone, rows_.get(), *metrics_, o);
  scheduler_->Start();

  const std::vector<std::string> texts = {"The quick brown fox jumps over the lazy dog",
                                          "Colorless green ideas sleep furiously", "a b a b a b"};
  std::vector<std::shared_ptr<testing::RecordingSink>> sinks;
  for (size_t i = 0; i < texts.size(); ++i) {
    sinks.push_back(std::make_shared<testing::RecordingSink>());
    ASSERT_TRUE(scheduler_->Submit(Params(absl::StrCat("r", i), texts[i]), sinks.back()).ok());
  }
  for (size_t i = 0; i < texts.size(); ++i) {
    ASSERT_TRUE(sinks[i]->Wait());
    ASSERT_TRUE(sinks[i]->status().ok()) << sinks[i]->status();
    EXPECT_EQ(sinks[i]->tokens(), Reference(texts[i])) << texts[i];
  }
  // Every row the model used was located by id: prompt and generated positions, every column.
  uint64_t positions = 0;
  for (size_t i = 0; i < texts.size(); ++i) {
    positions += Params("count", texts[i]).prompt.size() + kTokens - 1;
  }
  const uint64_t ids =
      positions * model_->config().engram.columns() * model_->config().engram.layer_ids.size();
  EXPECT_EQ(backbone.ids_located(), ids);
  // They count as arena rows and none came through the Prefetch stream.
  EXPECT_EQ(metrics_->engram_rows(RowTier::kDramShm).Value(), static_cast<double>(ids));
  EXPECT_EQ(metrics_->engram_rows(RowTier::kDram).Value(), 0);
  EXPECT_EQ(metrics_->engram_rows(RowTier::kNvme).Value(), 0);
}

TEST_F(RowsByIdTest, TablesTheTierOnlyCachesAreRefusedNamingTheLayer) {
  StartTier(96 * 1024);  // the tables do not fit: cache arenas over the NVMe tier
  auto tables = rows_->ResidentTables();
  ASSERT_FALSE(tables.ok());
  EXPECT_EQ(tables.status().code(), absl::StatusCode::kFailedPrecondition) << tables.status();
  EXPECT_TRUE(
      absl::StrContains(tables.status().message(),
                        absl::StrCat("Engram layer ", model_->config().engram.layer_ids[0])))
      << tables.status();
  EXPECT_TRUE(absl::StrContains(tables.status().message(), "only caches")) << tables.status();
}

TEST_F(RowsByIdTest, TheCpuBackboneRefusesTablesReadById) {
  BackboneOptions bo;
  bo.device = "cpu";
  bo.engram_tables.resize(model_->config().engram.layer_ids.size());
  auto backbone = CreateBackbone(*model_, bo);
  ASSERT_FALSE(backbone.ok());
  EXPECT_EQ(backbone.status().code(), absl::StatusCode::kInvalidArgument) << backbone.status();
  EXPECT_TRUE(absl::StrContains(backbone.status().message(), "CUDA backbone")) << backbone.status();
}

}  // namespace
}  // namespace engram
