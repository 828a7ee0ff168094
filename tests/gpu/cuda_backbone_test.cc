// The CUDA backbone at model level, on the golden model of tests/golden/backbone (3 layers, Engram
// modules with conv at layers 0 and 2, GQA 4/2, head_dim 8: the generic attention path) and on a
// random model with head_dim 64 (the tensor-core attention path):
//   - logits against the float64 PyTorch goldens, token by token, whole prefill and chunked
//     batched prefill, within a bf16 tolerance;
//   - greedy continuations equal the CPU backend's;
//   - a sequence's greedy output does not depend on its batch-mates, on prefill chunking or on
//     CUDA-graph replay.
#include "model/cuda/cuda_backbone.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "model/cpu_backbone.h"
#include "model/sampler.h"
#include "tests/model/test_util.h"

namespace engram {
namespace {

using testing_util::FixedRowSource;
using testing_util::GoldenDir;
using testing_util::LoadModelDir;
using testing_util::SyntheticRows;

// bf16 weights and activations (8 significant bits, ~4e-3 relative per rounding) through three
// layers against a float64 reference: the logits (|x| up to ~6) carry errors of a few 1e-2. A
// wrong kernel (a transposed weight, a lost residual, a bad mask) moves them by O(1).
constexpr double kAtol = 0.06;
constexpr double kRtol = 0.03;

double ExpectClose(const float* got, const float* want, int V, const std::string& where) {
  int bad = 0;
  double worst = 0;
  for (int i = 0; i < V; ++i) {
    const double err = std::fabs(double(got[i]) - want[i]);
    worst = std::max(worst, err);
    if (!(err <= kAtol + kRtol * std::fabs(want[i])) && ++bad <= 5) {
      ADD_FAILURE() << where << " logit " << i << ": got " << got[i] << ", want " << want[i];
    }
  }
  EXPECT_EQ(bad, 0) << where;
  return worst;
}

CudaBackboneOptions SmallOptions(bool graphs = true) {
  CudaBackboneOptions o;
  o.max_batch_sequences = 8;
  o.max_step_tokens = 256;
  o.gpu_memory_fraction = 0.5;
  o.cuda_graphs = graphs;
  o.block_tokens = 16;
  return o;
}

class GoldenTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto m = LoadModelDir(GoldenDir() + "/model");
    ASSERT_TRUE(m.ok()) << m.status();
    model_ = *std::move(m);
    auto golden = testing_util::ReadBackboneGolden(2);
    ASSERT_TRUE(golden.ok()) << golden.status();
    golden_ = *std::move(golden);
    auto b = CudaBackbone::Create(model_->config, model_->weights, model_->module_ptrs(),
                                  SmallOptions());
    ASSERT_TRUE(b.ok()) << b.status();
    backbone_ = *std::move(b);
  }
  std::vector<std::vector<float>> RowsOf(int b, int start, int n) const {
    return golden_.RowsOf(b, start, n);
  }
  std::unique_ptr<testing_util::LoadedModel> model_;
  testing_util::BackboneGolden golden_;
  std::unique_ptr<CudaBackbone> backbone_;
};

TEST_F(GoldenTest, DecodeTokenByTokenMatchesEveryPosition) {
  double worst = 0;
  for (int b = 0; b < golden_.B; ++b) {
    auto seq = backbone_->NewSequence(golden_.L);
    std::vector<float> logits(golden_.V);
    for (int t = 0; t < golden_.L; ++t) {
      FixedRowSource rows;
      rows.rows = {RowsOf(b, t, 1)};
      StepOutput out;
      out.logits = logits.data();
      BatchItem item{seq.get(), absl::MakeConstSpan(&golden_.ids[b][t], 1)};
      ASSERT_TRUE(backbone_->Step({item}, rows, &out).ok());
      ASSERT_TRUE(out.status[0].ok()) << out.status[0];
      worst = std::max(worst, ExpectClose(logits.data(), golden_.Logits(b, t), golden_.V,
                                          absl::StrCat("sequence ", b, " position ", t)));
    }
    EXPECT_EQ(seq->position(), golden_.L);
  }
  RecordProperty("max_abs_err", std::to_string(worst));
  std::printf("decode: largest |logit error| %.4f\n", worst);
}

TEST_F(GoldenTest, ChunkedBatchedPrefillMatchesEachChunkEnd) {
  const int V = golden_.V;
  const std::vector<std::vector<int>> chunks = {{7, 5, 7}, {1, 11, 7}};
  auto s0 = backbone_->NewSequence(golden_.L), s1 = backbone_->NewSequence(golden_.L);
  SequenceState* seqs[2] = {s0.get(), s1.get()};
  int pos[2] = {0, 0};
  double worst = 0;
  for (size_t step = 0; step < 3; ++step) {
    FixedRowSource rows;
    std::vector<BatchItem> items;
    for (int b = 0; b < 2; ++b) {
      const int n = chunks[b][step];
      rows.rows.push_back(RowsOf(b, pos[b], n));
      items.push_back({seqs[b], absl::MakeConstSpan(golden_.ids[b]).subspan(pos[b], n)});
    }
    std::vector<float> logits(2 * V);
    StepOutput out;
    out.logits = logits.data();
    ASSERT_TRUE(backbone_->Step(items, rows, &out).ok());
    for (int b = 0; b < 2; ++b) {
      ASSERT_TRUE(out.status[b].ok()) << out.status[b];
      pos[b] += chunks[b][step];
      worst = std::max(worst, ExpectClose(&logits[b * V], golden_.Logits(b, pos[b] - 1), V,
                                          absl::StrCat("sequence ", b, " after chunk ", step)));
    }
  }
  std::printf("chunked prefill: largest |logit error| %.4f\n", worst);
}

TEST_F(GoldenTest, FailedRowsFailOnlyTheirItemAndKeepItsState) {
  auto s0 = backbone_->NewSequence(golden_.L), s1 = backbone_->NewSequence(golden_.L);
  FixedRowSource rows;
  rows.rows = {RowsOf(0, 0, 5), RowsOf(1, 0, 5)};
  rows.errors[{1, 1}] = absl::UnavailableError("tier away");
  StepOutput out;
  std::vector<BatchItem> items = {{s0.get(), absl::MakeConstSpan(golden_.ids[0]).subspan(0, 5)},
                                  {s1.get(), absl::MakeConstSpan(golden_.ids[1]).subspan(0, 5)}};
  ASSERT_TRUE(backbone_->Step(items, rows, &out).ok());
  EXPECT_TRUE(out.status[0].ok());
  EXPECT_EQ(out.status[1].code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(s0->position(), 5);
  EXPECT_EQ(s1->position(), 0);
}

// Greedy decoding of `prompt` then `steps` tokens on `backbone`, alone or beside other sequences,
// with the prompt in chunks of `chunk`. Rows are SyntheticRows (a function of position).
std::vector<uint32_t> Greedy(Backbone& backbone, int d_mem, int layers,
                             const std::vector<uint32_t>& prompt, int steps, int chunk,
                             int companions, std::vector<float>* margins) {
  SamplingParams greedy;
  std::vector<Sampler> samplers(companions + 1, Sampler(greedy));
  std::vector<std::unique_ptr<SequenceState>> seqs;
  for (int i = 0; i <= companions; ++i) seqs.push_back(backbone.NewSequence(256));
  std::vector<std::vector<uint32_t>> fed(companions + 1);
  std::vector<uint32_t> out_tokens;
  const int V = backbone.vocab_size();
  std::vector<uint32_t> next(companions + 1, 0);
  int pos = 0;
  while (static_cast<int>(out_tokens.size()) < steps) {
    FixedRowSource rows;
    std::vector<BatchItem> items;
    std::vector<std::vector<uint32_t>> tokens(companions + 1);
    for (int i = 0; i <= companions; ++i) {
      if (pos < static_cast<int>(prompt.size())) {
        const int n = std::min<int>(chunk, prompt.size() - pos);
        // Companions read a shifted copy of the prompt.
        for (int j = 0; j < n; ++j) tokens[i].push_back((prompt[pos + j] + 7 * i) % V);
      } else {
        tokens[i] = {next[i]};
      }
      std::vector<std::vector<float>> r;
      for (int l = 0; l < layers; ++l) {
        r.push_back(SyntheticRows(i, l, pos, static_cast<int>(tokens[i].size()), d_mem));
      }
      rows.rows.push_back(std::move(r));
      const bool last = pos + static_cast<int>(tokens[i].size()) >= static_cast<int>(prompt.size());
      items.push_back({seqs[i].get(), tokens[i], last ? &samplers[i] : nullptr});
    }
    std::vector<float> logits;
    StepOutput out;
    if (margins) {
      logits.resize(items.size() * V);
      out.logits = logits.data();
    }
    EXPECT_TRUE(backbone.Step(items, rows, &out).ok());
    for (int i = 0; i <= companions; ++i) EXPECT_TRUE(out.status[i].ok()) << out.status[i];
    pos += static_cast<int>(tokens[0].size());
    if (pos >= static_cast<int>(prompt.size())) {
      for (int i = 0; i <= companions; ++i) next[i] = out.tokens[i];
      out_tokens.push_back(out.tokens[0]);
      if (margins) {
        std::vector<float> row(logits.begin(), logits.begin() + V);
        std::partial_sort(row.begin(), row.begin() + 2, row.end(), std::greater<float>());
        margins->push_back(row[0] - row[1]);
      }
    }
  }
  return out_tokens;
}

// Tokens must agree up to the first step where the reference's top-2 margin is within what bf16
// can flip (then the continuations may legitimately part).
void ExpectSameGreedy(const std::vector<uint32_t>& want, const std::vector<float>& margins,
                      const std::vector<uint32_t>& got, float flip_margin,
                      const std::string& what) {
  for (size_t t = 0; t < want.size(); ++t) {
    if (margins[t] < flip_margin) {
      std::printf("%s: stopped comparing at token %zu (top-2 margin %.4f)\n", what.c_str(), t,
                  margins[t]);
      return;
    }
    ASSERT_EQ(got[t], want[t]) << what << ": token " << t << " (margin " << margins[t] << ")";
  }
}

TEST_F(GoldenTest, GreedyEqualsTheCpuBackend) {
  CpuBackbone cpu(model_->config, model_->weights, model_->module_ptrs());
  const std::vector<uint32_t> prompt = {5, 17, 33, 2, 90, 41, 41, 8, 60};
  std::vector<float> margins;
  const int d_mem = model_->config.engram.d_mem();
  auto want = Greedy(cpu, d_mem, 2, prompt, 24, 4, 0, &margins);
  auto got = Greedy(*backbone_, d_mem, 2, prompt, 24, 4, 0, nullptr);
  ExpectSameGreedy(want, margins, got, 0.1f, "GPU vs CPU");
}

TEST_F(GoldenTest, GreedyIndependentOfBatchChunkingAndGraphs) {
  const std::vector<uint32_t> prompt = {5, 17, 33, 2, 90, 41, 41, 8, 60, 11, 12};
  const int d_mem = model_->config.engram.d_mem();
  std::vector<float> margins;
  auto alone = Greedy(*backbone_, d_mem, 2, prompt, 24, 64, 0, &margins);
  auto batched = Greedy(*backbone_, d_mem, 2, prompt, 24, 3, 4, nullptr);
  ExpectSameGreedy(alone, margins, batched, 0.05f, "batched + chunked vs alone");
  auto eager = CudaBackbone::Create(model_->config, model_->weights, model_->module_ptrs(),
                                    SmallOptions(/*graphs=*/false));
  ASSERT_TRUE(eager.ok()) << eager.status();
  auto no_graph = Greedy(**eager, d_mem, 2, prompt, 24, 64, 0, nullptr);
  ExpectSameGreedy(alone, margins, no_graph, 0.05f, "graphs vs eager");
  EXPECT_GT(backbone_->graph_replays(), 0u);
}

// A random Llama of head_dim 64 (the tensor-core attention kernels) without Engram: GPU greedy vs
// the CPU backend, batched and chunked.
TEST(RandomModelTest, TensorCorePathMatchesTheCpu) {
  ModelConfig c;
  c.vocab_size = 512;
  c.hidden_size = 256;
  c.intermediate_size = 512;
  c.num_hidden_layers = 3;
  c.num_attention_heads = 8;
  c.num_key_value_heads = 2;
  c.head_dim = 64;
  c.max_position_embeddings = 512;
  c.rms_norm_eps = 1e-5f;
  std::vector<std::vector<float>> keep;
  auto weight = [&](std::vector<int64_t> shape, float std, float mean = 0.0f) {
    size_t n = 1;
    for (int64_t d : shape) n *= d;
    std::vector<float> v(n);
    uint64_t x = keep.size() * 7919 + 1;
    for (auto& f : v) {
      x = x * 6364136223846793005ull + 1442695040888963407ull;
      f = mean + std * (float((x >> 40) & 0xffffff) / float(1 << 24) * 2 - 1) * 1.7f;
    }
    keep.push_back(std::move(v));
    Weight w;
    w.data = keep.back().data();
    w.shape = shape;
    return w;
  };
  keep.reserve(64);
  BackboneWeights w;
  const int64_t H = c.hidden_size, I = c.intermediate_size, Q = c.q_width(), KV = c.kv_width();
  w.embed_tokens = weight({c.vocab_size, H}, 0.5f);
  for (int l = 0; l < c.num_hidden_layers; ++l) {
    LayerWeights lw;
    lw.input_layernorm = weight({H}, 0.05f, 1.0f);
    lw.q_proj = weight({Q, H}, 1 / std::sqrt(float(H)));
    lw.k_proj = weight({KV, H}, 1 / std::sqrt(float(H)));
    lw.v_proj = weight({KV, H}, 1 / std::sqrt(float(H)));
    lw.o_proj = weight({H, Q}, 1 / std::sqrt(float(Q)));
    lw.post_attention_layernorm = weight({H}, 0.05f, 1.0f);
    lw.gate_proj = weight({I, H}, 1 / std::sqrt(float(H)));
    lw.up_proj = weight({I, H}, 1 / std::sqrt(float(H)));
    lw.down_proj = weight({H, I}, 1 / std::sqrt(float(I)));
    w.layers.push_back(lw);
  }
  w.norm = weight({H}, 0.05f, 1.0f);
  w.lm_head = weight({c.vocab_size, H}, 0.5f);
  CpuBackbone cpu(c, w, {});
  auto gpu = CudaBackbone::Create(c, w, {}, SmallOptions());
  ASSERT_TRUE(gpu.ok()) << gpu.status();
  std::vector<uint32_t> prompt;
  for (int i = 0; i < 150; ++i) prompt.push_back((i * 37 + 11) % c.vocab_size);
  std::vector<float> margins;
  auto want = Greedy(cpu, 0, 0, prompt, 32, 64, 0, &margins);
  auto got = Greedy(**gpu, 0, 0, prompt, 32, 64, 0, nullptr);
  ExpectSameGreedy(want, margins, got, 0.1f, "tensor-core GPU vs CPU");
  auto batched = Greedy(**gpu, 0, 0, prompt, 32, 37, 5, nullptr);
  ExpectSameGreedy(want, margins, batched, 0.1f, "batched + chunked GPU vs CPU");
}

}  // namespace
}  // namespace engram
