// Cold rows never stall the whole batch: the real scheduler, CPU backbone and TierRowBackend
// against a real engram-memory over gRPC loopback, co-located (shared-memory cache arenas), whose
// NVMe reads are held at a gate (TierConfig::nvme.fault_hook) while the test says so.
//
// Sequence A's rows are all in the tier's DRAM cache arena (an earlier run of the same request
// promoted them); sequence B's rows are not, so they must come from the gated NVMe tier:
//   - sit-out (the default): A produces every token while B waits; B completes, with the
//     reference output, once its rows arrive; the sit-out is counted;
//   - sit-out past rows_timeout: B fails with UNAVAILABLE, A is unaffected;
//   - wait (the alternative): A's step waits for B's rows, so A finishes only after the gate opens.
//
// Needs the GPT-2 tokenizer.json from scripts/fetch-testdata.sh (the demo model writer copies it).
#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "memory_tier/tier_server.h"
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
constexpr int kTokens = 6;

class ColdRowsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto model = testing::WriteAndImportTinyModel(
        model_dir(), store_dir(), absl::StrCat("cold-rows-", getpid()), kContext, 8192);
    ASSERT_TRUE(model.ok()) << model.status();
    model_ = *std::move(model);
    // Neither table fits the DRAM budget: both are cache arenas over the (gated) NVMe tier.
    TierConfig c;
    c.store.dir = store_dir();
    c.server.listen = "127.0.0.1:0";
    c.server.metrics_host = "127.0.0.1";
    c.server.metrics_port = -1;
    c.server.lookup_threads = 4;
    c.server.drain_timeout_s = 2;
    c.dram.bytes = 96 * 1024;
    c.dram.ways = 4;
    c.dram.lock = false;
    c.dram.shm_prefix = absl::StrCat("engram-cold-", getpid());
    c.nvme.io_backend = "pread";
    c.nvme.direct_io = false;
    c.nvme.fault_hook = [gate = gate_](int result) {
      while (gate->load()) absl::SleepFor(absl::Milliseconds(2));
      return result;
    };
    auto server = TierServer::Start(c);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
  }

  void TearDown() override {
    gate_->store(false);
    if (scheduler_) scheduler_->Stop();
    scheduler_.reset();
    rows_.reset();
    if (server_) server_->Shutdown();
  }

  void StartWorker(ColdRows mode, absl::Duration rows_timeout = absl::Seconds(30)) {
    registry_ = std::make_shared<prometheus::Registry>();
    metrics_ = std::make_unique<WorkerMetrics>(registry_, model_->config().engram.layer_ids,
                                               model_->name());
    CpuBackboneOptions b;
    b.threads = 1;
    backbone_ = std::make_unique<CpuBackbone>(*model_, b);
    TierRowBackendOptions t;
    t.address = absl::StrCat("127.0.0.1:", server_->port());
    rows_ = std::make_unique<TierRowBackend>(*model_, t, *metrics_);
    rows_->Start();
    for (int i = 0; i < 500 && !rows_->Ready().ok(); ++i) absl::SleepFor(absl::Milliseconds(10));
    ASSERT_TRUE(rows_->Ready().ok()) << rows_->Ready();
    SchedulerOptions o;
    o.max_context_tokens = kContext;
    o.rows_timeout = rows_timeout;
    o.cold_rows = mode;
    scheduler_ = std::make_unique<Scheduler>(*model_, *backbone_, rows_.get(), *metrics_, o);
    scheduler_->SetStepObserver([this](const StepInfo& info) {
      absl::MutexLock lock(&steps_mu_);
      steps_.push_back(info);
    });
    scheduler_->Start();
  }

  GenerateParams Params(const std::string& id, const std::string& text) {
    return testing::TestParams(*model_, id, text, kTokens, kContext);
  }

  std::shared_ptr<testing::RecordingSink> Submit(const std::string& id, const std::string& text) {
    auto sink = std::make_shared<testing::RecordingSink>();
    auto h = scheduler_->Submit(Params(id, text), sink);
    EXPECT_TRUE(h.ok()) << h.status();
    return sink;
  }

  std::vector<uint32_t> Reference(const std::string& text) {
    return testing::ReferenceTokens(*model_, text, kTokens, kContext);
  }

  // Rows that came through the Prefetch stream (served by the tier's DRAM or NVMe).
  double StreamRows() {
    return metrics_->engram_rows(RowTier::kDram).Value() +
           metrics_->engram_rows(RowTier::kNvme).Value();
  }

  // Runs request `text` until one run takes every row from the shared-memory arena: the tier's
  // promoter has admitted all of them into its DRAM cache.
  void Warm(const std::string& text) {
    for (int run = 0; run < 50; ++run) {
      const double before = StreamRows();
      auto sink = Submit(absl::StrCat("warm-", run), text);
      ASSERT_TRUE(sink->Wait());
      ASSERT_TRUE(sink->status().ok()) << sink->status();
      if (StreamRows() == before) return;
      absl::SleepFor(absl::Milliseconds(50));
    }
    FAIL() << "the rows of \"" << text << "\" never all reached the DRAM cache";
  }

  bool SatOut(const std::string& id) {
    absl::MutexLock lock(&steps_mu_);
    for (const StepInfo& s : steps_) {
      for (const std::string& r : s.sat_out) {
        if (r == id) return true;
      }
    }
    return false;
  }
  // Steps that ran request `id`.
  int StepsOf(const std::string& id) {
    absl::MutexLock lock(&steps_mu_);
    int n = 0;
    for (const StepInfo& s : steps_) {
      for (const auto& item : s.items) n += item.request_id == id;
    }
    return n;
  }

  std::string model_dir() const { return tmp_.path() + "/model"; }
  std::string store_dir() const { return tmp_.path() + "/store"; }

  const std::string kHot = "The quick brown fox jumps over the lazy dog";
  const std::string kCold = "Colorless green ideas sleep furiously tonight, said Noam";

  TempDir tmp_;
  std::shared_ptr<std::atomic<bool>> gate_ = std::make_shared<std::atomic<bool>>(false);
  std::unique_ptr<const Model> model_;
  std::unique_ptr<TierServer> server_;
  std::shared_ptr<prometheus::Registry> registry_;
  std::unique_ptr<WorkerMetrics> metrics_;
  std::unique_ptr<CpuBackbone> backbone_;
  std::unique_ptr<TierRowBackend> rows_;
  std::unique_ptr<Scheduler> scheduler_;
  absl::Mutex steps_mu_;
  std::vector<StepInfo> steps_;
};

TEST_F(ColdRowsTest, ResidentSequenceGoesOnWhileColdOneSitsOut) {
  StartWorker(ColdRows::kSitOut);
  Warm(kHot);
  const std::vector<uint32_t> cold_reference = Reference(kCold);

  gate_->store(true);  // NVMe reads now wait until the gate opens
  auto cold = Submit("cold", kCold);
  auto hot = Submit("hot", kHot);
  ASSERT_TRUE(hot->Wait(absl::Seconds(30))) << "the resident sequence was held back";
  EXPECT_TRUE(hot->status().ok()) << hot->status();
  EXPECT_EQ(hot->tokens().size(), static_cast<size_t>(kTokens));
  EXPECT_FALSE(cold->done());
  EXPECT_TRUE(cold->tokens().empty()) << "the cold sequence ran without its rows";
  EXPECT_TRUE(SatOut("cold"));
  EXPECT_EQ(StepsOf("cold"), 0);
  EXPECT_GE(StepsOf("hot"), kTokens);
  EXPECT_GT(metrics_->sat_out.Value(), 0);

  const absl::Time opened = absl::Now();
  gate_->store(false);
  ASSERT_TRUE(cold->Wait(absl::Seconds(30)));
  EXPECT_TRUE(cold->status().ok()) << cold->status();
  EXPECT_GE(cold->first(), opened);
  EXPECT_EQ(cold->tokens(), cold_reference) << "rows after a sit-out are the right rows";
}

TEST_F(ColdRowsTest, SitOutIsBoundedByTheRowsTimeout) {
  StartWorker(ColdRows::kSitOut, absl::Milliseconds(800));
  Warm(kHot);
  gate_->store(true);
  const absl::Time start = absl::Now();
  auto cold = Submit("cold", kCold);
  auto hot = Submit("hot", kHot);
  ASSERT_TRUE(hot->Wait(absl::Seconds(30)));
  EXPECT_TRUE(hot->status().ok()) << hot->status();
  ASSERT_TRUE(cold->Wait(absl::Seconds(30)));
  const absl::Duration took = cold->finished() - start;
  EXPECT_EQ(cold->status().code(), absl::StatusCode::kUnavailable) << cold->status();
  EXPECT_TRUE(absl::StrContains(cold->status().message(), "did not arrive within"))
      << cold->status();
  EXPECT_TRUE(absl::StrContains(cold->status().message(), "sat out")) << cold->status();
  EXPECT_GE(took, absl::Milliseconds(800));
  EXPECT_LT(took, absl::Seconds(10));
  EXPECT_TRUE(cold->tokens().empty());
}

TEST_F(ColdRowsTest, WaitInStepHoldsTheWholeBatch) {
  StartWorker(ColdRows::kWaitInStep);
  Warm(kHot);
  gate_->store(true);
  auto cold = Submit("cold", kCold);
  auto hot = Submit("hot", kHot);
  // Both are in the step that waits for the cold rows: the hot sequence cannot finish.
  EXPECT_FALSE(hot->Wait(absl::Milliseconds(700)));
  const absl::Time opened = absl::Now();
  gate_->store(false);
  ASSERT_TRUE(hot->Wait(absl::Seconds(30)));
  ASSERT_TRUE(cold->Wait(absl::Seconds(30)));
  EXPECT_TRUE(hot->status().ok()) << hot->status();
  EXPECT_TRUE(cold->status().ok()) << cold->status();
  EXPECT_GE(hot->finished(), opened);
  EXPECT_FALSE(SatOut("cold"));
  EXPECT_EQ(metrics_->sat_out.Value(), 0);
}

}  // namespace
}  // namespace engram
