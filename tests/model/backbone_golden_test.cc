// Golden test of the whole CPU forward pass (embedding, RMSNorm, RoPE, grouped-query attention with
// the KV cache, SwiGLU, Engram modules with gate and conv, final norm, lm_head): logits of the tiny
// model in tests/golden/backbone against the float64 PyTorch reference that make_golden.py ran.
// Checked per position with |got - want| <= atol + rtol * |want|, through three paths: token by
// token (decode), whole-prompt prefill, and chunked prefill of both sequences in one batch.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "tests/model/test_util.h"

namespace engram {
namespace {

using testing_util::FixedRowSource;
using testing_util::GoldenDir;
using testing_util::LoadModelDir;

// f32 arithmetic against a float64 reference on a 3-layer model: the largest error seen is 5.3e-6
// (logits up to ~6), a tenth of the threshold.
constexpr float kAtol = 5e-5f;
constexpr float kRtol = 5e-5f;

// Compares one position's logits; reports the first few mismatches.
void ExpectClose(const float* got, const float* want, int V, const std::string& where) {
  int bad = 0;
  float worst = 0;
  for (int i = 0; i < V; ++i) {
    float err = std::fabs(got[i] - want[i]);
    worst = std::max(worst, err);
    if (err > kAtol + kRtol * std::fabs(want[i]) && ++bad <= 5) {
      ADD_FAILURE() << where << " logit " << i << ": got " << got[i] << ", want " << want[i]
                    << " (|diff| " << err << ")";
    }
  }
  EXPECT_EQ(bad, 0) << where << ": " << bad << " of " << V << " logits out of tolerance";
}

class BackboneGoldenTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto m = LoadModelDir(GoldenDir() + "/model");
    ASSERT_TRUE(m.ok()) << m.status();
    model_ = *std::move(m);
    ASSERT_EQ(model_->modules.size(), 2u);
    auto golden = testing_util::ReadBackboneGolden(2);
    ASSERT_TRUE(golden.ok()) << golden.status();
    golden_ = *std::move(golden);
    ASSERT_EQ(golden_.V, model_->config.vocab_size);
    ASSERT_EQ(golden_.d_mem, model_->config.engram.d_mem());
    backbone_ = std::make_unique<CpuBackbone>(
        model_->config, model_->weights, model_->module_ptrs(), CpuBackboneOptions{.threads = 2});
  }

  std::vector<std::vector<float>> RowsOf(int b, int start, int n) const {
    return golden_.RowsOf(b, start, n);
  }

  std::unique_ptr<testing_util::LoadedModel> model_;
  testing_util::BackboneGolden golden_;
  std::unique_ptr<CpuBackbone> backbone_;
};

// The GPU tests' reference, the bf16-emulated logits, stays within the bf16 error of the float64
// ones (0.122 when it was made) and is not a copy of them.
TEST_F(BackboneGoldenTest, Bf16ReferenceIsNearTheFloat64One) {
  ASSERT_EQ(golden_.logits_bf16.size(), golden_.logits.size());
  double worst = 0;
  for (size_t i = 0; i < golden_.logits.size(); ++i) {
    worst = std::max(worst, double(std::fabs(golden_.logits_bf16[i] - golden_.logits[i])));
  }
  EXPECT_GT(worst, 0.01);
  EXPECT_LT(worst, 0.2);
}

TEST_F(BackboneGoldenTest, DecodeTokenByTokenMatchesEveryPosition) {
  const int V = golden_.V;
  for (int b = 0; b < golden_.B; ++b) {
    auto seq = backbone_->NewSequence(golden_.L);
    std::vector<float> logits(V);
    for (int t = 0; t < golden_.L; ++t) {
      FixedRowSource rows;
      rows.rows = {RowsOf(b, t, 1)};
      std::vector<absl::Status> status;
      BatchItem item{seq.get(), absl::MakeConstSpan(&golden_.ids[b][t], 1)};
      ASSERT_TRUE(backbone_->Forward({item}, rows, logits.data(), &status).ok());
      ASSERT_TRUE(status[0].ok()) << status[0];
      ExpectClose(logits.data(), golden_.Logits(b, t), V,
                  absl::StrCat("sequence ", b, " position ", t));
    }
    EXPECT_EQ(seq->position(), golden_.L);
  }
}

TEST_F(BackboneGoldenTest, WholePrefillMatchesTheLastPosition) {
  const int V = golden_.V;
  for (int b = 0; b < golden_.B; ++b) {
    auto seq = backbone_->NewSequence(golden_.L);
    FixedRowSource rows;
    rows.rows = {RowsOf(b, 0, golden_.L)};
    std::vector<float> logits(V);
    std::vector<absl::Status> status;
    BatchItem item{seq.get(), golden_.ids[b]};
    ASSERT_TRUE(backbone_->Forward({item}, rows, logits.data(), &status).ok());
    ASSERT_TRUE(status[0].ok()) << status[0];
    ExpectClose(logits.data(), golden_.Logits(b, golden_.L - 1), V, absl::StrCat("sequence ", b));
  }
}

TEST_F(BackboneGoldenTest, ChunkedBatchedPrefillMatchesEachChunkEnd) {
  // Both sequences in one batch, with different chunk boundaries, so items of unequal length meet.
  const int V = golden_.V;
  const std::vector<std::vector<int>> chunks = {{7, 5, 7}, {1, 11, 7}};
  auto s0 = backbone_->NewSequence(golden_.L), s1 = backbone_->NewSequence(golden_.L);
  SequenceState* seqs[2] = {s0.get(), s1.get()};
  int pos[2] = {0, 0};
  for (size_t step = 0; step < 3; ++step) {
    FixedRowSource rows;
    std::vector<BatchItem> items;
    for (int b = 0; b < 2; ++b) {
      int n = chunks[b][step];
      rows.rows.push_back(RowsOf(b, pos[b], n));
      items.push_back({seqs[b], absl::MakeConstSpan(golden_.ids[b]).subspan(pos[b], n)});
    }
    std::vector<float> logits(2 * V);
    std::vector<absl::Status> status;
    ASSERT_TRUE(backbone_->Forward(items, rows, logits.data(), &status).ok());
    for (int b = 0; b < 2; ++b) {
      ASSERT_TRUE(status[b].ok()) << status[b];
      pos[b] += chunks[b][step];
      ExpectClose(&logits[b * V], golden_.Logits(b, pos[b] - 1), V,
                  absl::StrCat("sequence ", b, " after chunk ", step));
    }
  }
}

}  // namespace
}  // namespace engram
