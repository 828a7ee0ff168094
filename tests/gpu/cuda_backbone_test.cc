// The CUDA backbone at model level, on the golden model of tests/golden/backbone (3 layers, Engram
// modules with conv at layers 0 and 2, GQA 4/2, head_dim 8: the generic attention path) and on a
// random model with head_dim 64 (the tensor-core attention path):
//   - logits against the PyTorch goldens with this backbone's bf16 roundings emulated
//     (make_golden.py's logits_bf16), token by token and chunked batched prefill;
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
#include "absl/strings/str_join.h"
#include "common/safetensors.h"
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

// The reference is make_golden.py's logits_bf16: the float64 forward with this backbone's bf16
// roundings emulated (bf16 matrices, bf16 inputs to every matrix product, bf16 q and K/V cache).
// Against the plain float64 logits a correct bf16 implementation is off by up to 0.122 (|logits|
// up to 6.3), which is what the H100 measured (2026-12-07); against the emulation only the order
// of f32 sums and an activation rounded across a bf16 boundary remain, a few 1e-3. A wrong kernel
// (a transposed weight, a lost residual, a bad mask) moves logits by O(1).
constexpr double kAtol = 0.03;
constexpr double kRtol = 0.01;

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
      worst = std::max(worst, ExpectClose(logits.data(), golden_.LogitsBf16(b, t), golden_.V,
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
      worst = std::max(worst, ExpectClose(&logits[b * V], golden_.LogitsBf16(b, pos[b] - 1), V,
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

// A row source that hands the backbone either row ids into a bf16 table (EngramRows::kRowIds) or
// the same rows decoded to f32 (the values of bf16 rows are exact in f32).
class TableIdSource : public EngramRowSource {
 public:
  TableIdSource(const uint16_t* table, int head_dim, bool by_id)
      : table_(table), head_dim_(head_dim), by_id_(by_id) {}
  // ids[item][layer]: (tokens, columns).
  std::vector<std::vector<std::vector<uint64_t>>> ids;

  absl::StatusOr<absl::Span<const float>> Rows(size_t item, int layer) override {
    const std::vector<uint64_t>& r = ids.at(item).at(layer);
    rows_.resize(r.size() * head_dim_);
    for (size_t k = 0; k < r.size(); ++k) {
      for (int j = 0; j < head_dim_; ++j) {
        rows_[k * head_dim_ + j] = Bf16ToF32(table_[r[k] * head_dim_ + j]);
      }
    }
    return absl::MakeConstSpan(rows_);
  }
  absl::StatusOr<EngramRows> Locate(size_t item, int layer) override {
    if (!by_id_) return EngramRowSource::Locate(item, layer);
    EngramRows out;
    out.where = EngramRows::Where::kRowIds;
    out.row_ids = ids.at(item).at(layer).data();
    out.ids = ids.at(item).at(layer).size();
    return out;
  }

 private:
  const uint16_t* table_;
  int head_dim_;
  bool by_id_;
  std::vector<float> rows_;
};

// Rows by id (CudaBackboneOptions::engram_tables): a bf16 table in pinned host memory read in
// place over PCIe, copied whole into HBM, and behind an HBM cache holding a third of its rows, all
// give the logits of the same rows handed over as f32 host rows (the module sees the same bf16
// input) through a prefill step and eager decode steps, then the same greedy tokens through
// graph-replayed decode steps (which return no logits). The per-source counters add up.
TEST_F(GoldenTest, RowsByIdEqualRowsByValueFromEveryTableSource) {
  const EngramConfig& ec = model_->config.engram;
  const int D = ec.head_dim, columns = ec.columns(), layers = int(ec.layer_ids.size());
  const uint64_t R = 997;
  uint16_t* table = nullptr;
  ASSERT_EQ(cudaHostAlloc(&table, R * D * 2, cudaHostAllocMapped), cudaSuccess);
  for (uint64_t k = 0; k < R * D; ++k) {
    table[k] = F32ToBf16(std::sin(0.7 * double(k)) * 0.9);
  }
  auto make = [&](bool whole_in_hbm, size_t cache_rows) {
    CudaBackboneOptions o = SmallOptions();
    for (int l = 0; l < layers; ++l) {
      EngramDeviceTable t;
      t.dtype = RowDType::kBF16;
      t.head_dim = D;
      t.rows = R;
      t.host = reinterpret_cast<const uint8_t*>(table);
      t.stride = uint64_t(D) * 2;
      t.whole_in_hbm = whole_in_hbm;
      t.hbm_cache_bytes = cache_rows * D * 2;
      for (uint64_t r = 0; r < R; r += 3) t.hot_rows.push_back(r);
      o.engram_tables.push_back(t);
    }
    return CudaBackbone::Create(model_->config, model_->weights, model_->module_ptrs(), o);
  };
  struct Variant {
    std::string name;
    std::unique_ptr<CudaBackbone> backbone;
    bool by_id;
  };
  std::vector<Variant> variants;
  variants.push_back({"f32 host rows", std::move(backbone_), false});
  for (auto [name, whole, cache] :
       {std::tuple<const char*, bool, size_t>{"mapped host table", false, 0},
        {"table in HBM", true, 0},
        {"HBM cache + mapped table", false, R / 3}}) {
    auto b = make(whole, cache);
    ASSERT_TRUE(b.ok()) << name << ": " << b.status();
    variants.push_back({name, *std::move(b), true});
  }
  EXPECT_EQ(variants[3].backbone->hbm_cache_rows(0), R / 3);

  const int V = model_->config.vocab_size;
  const std::vector<std::vector<uint32_t>> prompts = {{5, 17, 33, 2, 90, 41, 41, 8, 60},
                                                      {7, 7, 1, 64}};
  std::vector<std::vector<std::unique_ptr<SequenceState>>> seqs(variants.size());
  for (size_t v = 0; v < variants.size(); ++v) {
    for (size_t i = 0; i < prompts.size(); ++i)
      seqs[v].push_back(variants[v].backbone->NewSequence(64));
  }
  std::vector<uint32_t> next(prompts.size(), 0);
  std::vector<int> pos(prompts.size(), 0);
  SamplingParams greedy;
  Sampler sampler(greedy);
  size_t total_ids = 0;
  constexpr int kEagerSteps = 6, kSteps = 10;  // logits (eager) for 6 steps, then graphs
  for (int step = 0; step < kSteps; ++step) {
    const bool eager = step < kEagerSteps;
    std::vector<std::vector<uint32_t>> tokens(prompts.size());
    std::vector<std::vector<std::vector<uint64_t>>> ids(prompts.size());
    for (size_t i = 0; i < prompts.size(); ++i) {
      tokens[i] = step == 0 ? prompts[i] : std::vector<uint32_t>{next[i]};
      for (int l = 0; l < layers; ++l) {
        std::vector<uint64_t> r;
        for (size_t t = 0; t < tokens[i].size(); ++t) {
          for (int c = 0; c < columns; ++c) {
            r.push_back((uint64_t(pos[i] + t) * 131 + c * 17 + l * 7 + i * 3 + tokens[i][t]) % R);
          }
        }
        total_ids += r.size();
        ids[i].push_back(std::move(r));
      }
    }
    std::vector<std::vector<float>> logits(variants.size(), std::vector<float>(prompts.size() * V));
    for (size_t v = 0; v < variants.size(); ++v) {
      TableIdSource source(table, D, variants[v].by_id);
      source.ids = ids;
      std::vector<BatchItem> items;
      std::vector<Sampler> samplers(prompts.size(), sampler);
      for (size_t i = 0; i < prompts.size(); ++i) {
        items.push_back({seqs[v][i].get(), tokens[i], &samplers[i]});
      }
      StepOutput out;
      out.logits = eager ? logits[v].data() : nullptr;
      ASSERT_TRUE(variants[v].backbone->Step(items, source, &out).ok()) << variants[v].name;
      for (size_t i = 0; i < prompts.size(); ++i) {
        ASSERT_TRUE(out.status[i].ok()) << variants[v].name << ": " << out.status[i];
        if (v == 0) {
          next[i] = out.tokens[i];
        } else if (!eager) {
          EXPECT_EQ(out.tokens[i], next[i])
              << variants[v].name << " step " << step << " item " << i;
        }
      }
    }
    for (size_t i = 0; i < prompts.size(); ++i) pos[i] += int(tokens[i].size());
    for (size_t v = 1; eager && v < variants.size(); ++v) {
      int bad = 0;
      for (size_t k = 0; k < logits[0].size(); ++k) {
        if (!(std::fabs(logits[v][k] - logits[0][k]) <= 1e-4f + 1e-4f * std::fabs(logits[0][k])) &&
            ++bad <= 5) {
          ADD_FAILURE() << variants[v].name << " step " << step << " logit " << k << ": got "
                        << logits[v][k] << ", want " << logits[0][k];
        }
      }
    }
  }
  total_ids /= layers;  // per layer
  for (size_t v = 1; v < variants.size(); ++v) {
    for (int l = 0; l < layers; ++l) {
      const EngramRowCounts c = variants[v].backbone->engram_row_counts(l);
      EXPECT_EQ(c.hbm + c.table, total_ids) << variants[v].name << " layer " << l;
      EXPECT_EQ(c.missing, 0u);
      EXPECT_EQ(c.staging, 0u);
      if (v == 3) {
        EXPECT_GT(c.hbm, 0u) << "the cache holds every third row";
      } else {
        EXPECT_EQ(c.hbm, 0u);
      }
    }
  }
  for (size_t v = 0; v < variants.size(); ++v) {
    EXPECT_GT(variants[v].backbone->graph_replays(), 0u) << variants[v].name;
  }
  seqs.clear();  // sequences hand their KV blocks back to their backbone: before the backbones
  variants.clear();
  cudaFreeHost(table);
}

// A random Llama without Engram: head_dim 64 takes the tensor-core attention kernels, 16 the
// generic one. `keep` owns the weights' floats.
// The largest |got - want| over a step's logits, and the largest |want| (the logits' scale).
struct LogitGap {
  double err = 0, scale = 0;
};
LogitGap Gap(const std::vector<float>& got, const std::vector<float>& want) {
  LogitGap g;
  for (size_t k = 0; k < want.size(); ++k) {
    g.err = std::max(g.err, double(std::fabs(got[k] - want[k])));
    g.scale = std::max(g.scale, double(std::fabs(want[k])));
  }
  return g;
}

// The random Llama's bf16 GPU logits against the CPU's f32: with every layer switched off (only the
// bf16 embedding, norm and head) they already differ by 0.08 on logits of 24 (H100, 2026-12-07);
// the multi-row fault gave errors of 26-39.
double Bf16Bound(const LogitGap& g) { return 0.02 * g.scale + 0.05; }

struct RandomLlama {
  ModelConfig config;
  BackboneWeights weights;
  std::vector<std::vector<float>> keep;
};

// Knobs that switch parts of the model off, to tell which part of a step goes wrong: a zero
// o_proj makes attention add nothing to the residual, a zero down_proj the MLP.
struct RandomLlamaShape {
  int layers = 3;
  bool zero_attention = false;
  bool zero_mlp = false;
};

std::unique_ptr<RandomLlama> MakeRandomLlama(int head_dim, RandomLlamaShape shape = {}) {
  auto m = std::make_unique<RandomLlama>();
  ModelConfig& c = m->config;
  c.vocab_size = 512;
  c.hidden_size = 256;
  c.intermediate_size = 512;
  c.num_hidden_layers = shape.layers;
  c.num_attention_heads = 256 / head_dim * 2;
  c.num_key_value_heads = 2;
  c.head_dim = head_dim;
  c.max_position_embeddings = 512;
  c.rms_norm_eps = 1e-5f;
  auto& keep = m->keep;
  keep.reserve(64);
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
  BackboneWeights& w = m->weights;
  const int64_t H = c.hidden_size, I = c.intermediate_size, Q = c.q_width(), KV = c.kv_width();
  w.embed_tokens = weight({c.vocab_size, H}, 0.5f);
  for (int l = 0; l < c.num_hidden_layers; ++l) {
    LayerWeights lw;
    lw.input_layernorm = weight({H}, 0.05f, 1.0f);
    lw.q_proj = weight({Q, H}, 1 / std::sqrt(float(H)));
    lw.k_proj = weight({KV, H}, 1 / std::sqrt(float(H)));
    lw.v_proj = weight({KV, H}, 1 / std::sqrt(float(H)));
    lw.o_proj = weight({H, Q}, shape.zero_attention ? 0.0f : 1 / std::sqrt(float(Q)));
    lw.post_attention_layernorm = weight({H}, 0.05f, 1.0f);
    lw.gate_proj = weight({I, H}, 1 / std::sqrt(float(H)));
    lw.up_proj = weight({I, H}, 1 / std::sqrt(float(H)));
    lw.down_proj = weight({H, I}, shape.zero_mlp ? 0.0f : 1 / std::sqrt(float(I)));
    w.layers.push_back(lw);
  }
  w.norm = weight({H}, 0.05f, 1.0f);
  w.lm_head = weight({c.vocab_size, H}, 0.5f);
  return m;
}

// GPU greedy vs the CPU backend, batched and chunked (tensor-core attention).
TEST(RandomModelTest, TensorCorePathMatchesTheCpu) {
  auto m = MakeRandomLlama(64);
  const ModelConfig& c = m->config;
  CpuBackbone cpu(c, m->weights, {});
  auto gpu = CudaBackbone::Create(c, m->weights, {}, SmallOptions());
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

// The logits after a prompt prefilled in one step equal those after the same prompt in two
// chunks (the second reads the first's keys and values from the paged cache), on the GPU and on
// the CPU, for both attention paths and a split on and off a KV block boundary (blocks of 16).
// Prints every case before failing, so one run tells which part is wrong.
TEST(RandomModelTest, SecondChunkEqualsOneStep) {
  for (int head_dim : {16, 64}) {
    auto m = MakeRandomLlama(head_dim);
    const ModelConfig& c = m->config;
    CpuBackbone cpu(c, m->weights, {});
    auto gpu = CudaBackbone::Create(c, m->weights, {}, SmallOptions(/*graphs=*/false));
    ASSERT_TRUE(gpu.ok()) << gpu.status();
    std::vector<uint32_t> prompt;
    for (int i = 0; i < 40; ++i) prompt.push_back((i * 37 + 11) % c.vocab_size);
    const int V = c.vocab_size;
    auto last_logits = [&](Backbone& b, std::vector<int> chunks) {
      auto seq = b.NewSequence(64);
      std::vector<float> logits(V);
      int pos = 0;
      for (int n : chunks) {
        FixedRowSource rows;
        rows.rows.push_back({});
        StepOutput out;
        out.logits = logits.data();
        BatchItem item{seq.get(), absl::MakeConstSpan(prompt).subspan(pos, n)};
        EXPECT_TRUE(b.Step({item}, rows, &out).ok());
        EXPECT_TRUE(out.status[0].ok()) << out.status[0];
        pos += n;
      }
      return logits;
    };
    const std::vector<float> cpu_one = last_logits(cpu, {40});
    for (const std::vector<int>& chunks :
         std::vector<std::vector<int>>{{40}, {16, 24}, {20, 20}, {1, 39}, {39, 1}}) {
      const std::vector<float> cpu_got = last_logits(cpu, chunks);
      const std::vector<float> gpu_got = last_logits(**gpu, chunks);
      const LogitGap cpu_gap = Gap(cpu_got, cpu_one), gpu_gap = Gap(gpu_got, cpu_one);
      const std::string what =
          absl::StrCat("head_dim ", head_dim, ", chunks ", absl::StrJoin(chunks, "+"));
      std::printf("%s: largest |logit - CPU one step| CPU %.4f, GPU %.4f\n", what.c_str(),
                  cpu_gap.err, gpu_gap.err);
      EXPECT_LT(cpu_gap.err, 1e-3) << what;
      EXPECT_LT(gpu_gap.err, Bf16Bound(gpu_gap)) << what;
    }
  }
}

// Last-token logits of one step against the CPU backbone, for models with parts switched off
// and for two kinds of multi-row step: one 40-token prefill, and 8 sequences decoding one token
// each (8 rows, no prefill). Which variants fail tells whether the fault is in the GEMMs (every
// multi-row step), in the prefill bookkeeping (only the 40-token step) or in one part of a layer.
TEST(RandomModelTest, MultiRowStepsEqualTheCpuWithPartsSwitchedOff) {
  struct Variant {
    const char* name;
    RandomLlamaShape shape;
  };
  const std::vector<Variant> variants = {
      {"1 layer, attention and MLP off", {1, true, true}},
      {"1 layer, MLP off", {1, false, true}},
      {"1 layer, attention off", {1, true, false}},
      {"1 layer", {1, false, false}},
      {"3 layers", {3, false, false}},
  };
  for (int head_dim : {16, 64}) {
    for (const Variant& v : variants) {
      auto m = MakeRandomLlama(head_dim, v.shape);
      const ModelConfig& c = m->config;
      const int V = c.vocab_size;
      CpuBackbone cpu(c, m->weights, {});
      auto gpu = CudaBackbone::Create(c, m->weights, {}, SmallOptions(/*graphs=*/false));
      ASSERT_TRUE(gpu.ok()) << gpu.status();
      // Each item's last-token logits after one step over `prompts` (one item per prompt).
      auto step = [&](Backbone& b, const std::vector<std::vector<uint32_t>>& prompts) {
        std::vector<std::unique_ptr<SequenceState>> seqs;
        std::vector<BatchItem> items;
        FixedRowSource rows;
        for (const auto& p : prompts) {
          seqs.push_back(b.NewSequence(64));
          items.push_back({seqs.back().get(), absl::MakeConstSpan(p)});
          rows.rows.push_back({});
        }
        std::vector<float> logits(prompts.size() * V);
        StepOutput out;
        out.logits = logits.data();
        EXPECT_TRUE(b.Step(items, rows, &out).ok());
        for (const auto& st : out.status) EXPECT_TRUE(st.ok()) << st;
        return logits;
      };
      std::vector<uint32_t> prompt;
      for (int i = 0; i < 40; ++i) prompt.push_back((i * 37 + 11) % V);
      std::vector<std::vector<uint32_t>> singles;
      for (int i = 0; i < 8; ++i) singles.push_back({uint32_t((i * 101 + 7) % V)});
      for (const auto& prompts : {std::vector<std::vector<uint32_t>>{prompt}, singles}) {
        const std::vector<float> want = step(cpu, prompts);
        const std::vector<float> got = step(**gpu, prompts);
        const LogitGap gap = Gap(got, want);
        const std::string what =
            absl::StrCat("head_dim ", head_dim, ", ", v.name, ", ",
                         prompts.size() == 1 ? "one 40-token prefill" : "8 one-token decodes");
        std::printf("%s: largest |logit error| %.4f (logits up to %.1f)\n", what.c_str(), gap.err,
                    gap.scale);
        EXPECT_LT(gap.err, Bf16Bound(gap)) << what;
      }
    }
  }
}

}  // namespace
}  // namespace engram
