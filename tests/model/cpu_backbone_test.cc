// CPU backbone behaviour beyond the golden numbers: chunked prefill == one-shot prefill, a batch ==
// each sequence alone, thread count does not matter, per-item failures stay per item, bad items and
// malformed calls are refused. Uses the golden model (GQA, biases, Engram with conv at layers 0,
// 2).
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/model/test_util.h"

namespace engram {
namespace {

using testing_util::FixedRowSource;
using testing_util::GoldenDir;
using testing_util::SyntheticRows;

std::vector<uint32_t> Tokens(int seq, int n, int vocab) {
  std::vector<uint32_t> t;
  for (int i = 0; i < n; ++i)
    t.push_back(static_cast<uint32_t>((seq * 31 + i * 17 + i * i) % vocab));
  return t;
}

class CpuBackboneTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto m = testing_util::LoadModelDir(GoldenDir() + "/model");
    ASSERT_TRUE(m.ok()) << m.status();
    model_ = *std::move(m);
    V_ = model_->config.vocab_size;
    d_mem_ = model_->config.engram.d_mem();
  }

  std::unique_ptr<CpuBackbone> Backbone(int threads) const {
    return std::make_unique<CpuBackbone>(model_->config, model_->weights, model_->module_ptrs(),
                                         CpuBackboneOptions{.threads = threads});
  }

  // One step. chunk[i] = (sequence id, state, first position, token count) of item i.
  struct Chunk {
    int seq;
    SequenceState* state;
    const std::vector<uint32_t>* tokens;
    int start, n;
  };
  std::vector<std::vector<float>> Step(CpuBackbone& backbone, const std::vector<Chunk>& chunks,
                                       std::vector<absl::Status>* status = nullptr,
                                       FixedRowSource* source = nullptr) {
    FixedRowSource local;
    FixedRowSource& rows = source ? *source : local;
    std::vector<BatchItem> items;
    rows.rows.clear();
    for (const Chunk& c : chunks) {
      rows.rows.push_back({SyntheticRows(c.seq, 0, c.start, c.n, d_mem_),
                           SyntheticRows(c.seq, 1, c.start, c.n, d_mem_)});
      items.push_back({c.state, absl::MakeConstSpan(*c.tokens).subspan(c.start, c.n)});
    }
    std::vector<float> logits(chunks.size() * V_);
    std::vector<absl::Status> local_status;
    std::vector<absl::Status>& st = status ? *status : local_status;
    EXPECT_TRUE(backbone.Forward(items, rows, logits.data(), &st).ok());
    std::vector<std::vector<float>> out;
    for (size_t i = 0; i < chunks.size(); ++i) {
      if (!status) {
        EXPECT_TRUE(st[i].ok()) << st[i];
      }
      out.emplace_back(logits.begin() + i * V_, logits.begin() + (i + 1) * V_);
    }
    return out;
  }

  // Logits after each chunk of `sizes` for sequence `seq`, alone.
  std::vector<std::vector<float>> RunAlone(CpuBackbone& backbone, int seq,
                                           const std::vector<uint32_t>& tokens,
                                           const std::vector<int>& sizes) {
    auto state = backbone.NewSequence(64);
    std::vector<std::vector<float>> out;
    int pos = 0;
    for (int n : sizes) {
      out.push_back(Step(backbone, {{seq, state.get(), &tokens, pos, n}})[0]);
      pos += n;
    }
    return out;
  }

  std::unique_ptr<testing_util::LoadedModel> model_;
  int V_ = 0, d_mem_ = 0;
};

TEST_F(CpuBackboneTest, ChunkedPrefillEqualsOneShotPrefill) {
  auto backbone = Backbone(2);
  const auto tokens = Tokens(1, 40, V_);
  // One shot of 37, then 3 decode steps.
  auto one_shot = RunAlone(*backbone, 1, tokens, {37, 1, 1, 1});
  // The same 37 prompt tokens in uneven chunks, then the same decode steps.
  auto chunked = RunAlone(*backbone, 1, tokens, {5, 1, 13, 18, 1, 1, 1});
  ASSERT_EQ(chunked.size(), 7u);
  EXPECT_EQ(chunked[3], one_shot[0]);  // bit for bit: same operations in the same order
  EXPECT_EQ(chunked[4], one_shot[1]);
  EXPECT_EQ(chunked[6], one_shot[3]);
  // Token by token all the way.
  std::vector<int> ones(40, 1);
  auto decode = RunAlone(*backbone, 1, tokens, ones);
  EXPECT_EQ(decode[36], one_shot[0]);
  EXPECT_EQ(decode[39], one_shot[3]);
}

TEST_F(CpuBackboneTest, BatchEqualsEachSequenceAlone) {
  auto backbone = Backbone(2);
  std::vector<std::vector<uint32_t>> tokens = {Tokens(0, 30, V_), Tokens(1, 30, V_),
                                               Tokens(2, 30, V_)};
  // Schedules: sequence 0 prefills 12 then decodes; 1 joins one step later with 20; 2 prefills in
  // chunks of 4 the whole time: prefill and decode items share steps.
  std::vector<std::vector<int>> sizes = {{12, 1, 1, 1, 1}, {20, 1, 1, 1}, {4, 4, 4, 4, 4}};
  std::vector<std::vector<std::vector<float>>> alone;
  for (int s = 0; s < 3; ++s) alone.push_back(RunAlone(*backbone, s, tokens[s], sizes[s]));

  std::vector<std::unique_ptr<SequenceState>> states;
  for (int s = 0; s < 3; ++s) states.push_back(backbone->NewSequence(64));
  std::vector<int> pos(3, 0), done(3, 0);
  for (int step = 0; step < 5; ++step) {
    std::vector<Chunk> chunks;
    std::vector<int> who;
    for (int s : {2, 0, 1}) {  // not in sequence order either
      if (s == 1 && step == 0) continue;
      if (done[s] == static_cast<int>(sizes[s].size())) continue;
      int n = sizes[s][done[s]];
      chunks.push_back({s, states[s].get(), &tokens[s], pos[s], n});
      who.push_back(s);
    }
    auto logits = Step(*backbone, chunks);
    for (size_t i = 0; i < who.size(); ++i) {
      int s = who[i];
      EXPECT_EQ(logits[i], alone[s][done[s]]) << "sequence " << s << " step " << step;
      pos[s] += sizes[s][done[s]];
      ++done[s];
    }
  }
  for (int s = 0; s < 3; ++s) EXPECT_EQ(states[s]->position(), pos[s]);
}

TEST_F(CpuBackboneTest, ThreadCountDoesNotChangeResults) {
  const auto tokens = Tokens(4, 33, V_);
  auto one = Backbone(1), three = Backbone(3);
  EXPECT_EQ(RunAlone(*one, 4, tokens, {33}), RunAlone(*three, 4, tokens, {33}));
  EXPECT_EQ(RunAlone(*one, 4, tokens, {20, 1, 1}), RunAlone(*three, 4, tokens, {20, 1, 1}));
}

TEST_F(CpuBackboneTest, FailedItemKeepsItsStateAndTheOthersComplete) {
  auto backbone = Backbone(2);
  std::vector<std::vector<uint32_t>> tokens = {Tokens(0, 20, V_), Tokens(1, 20, V_),
                                               Tokens(2, 20, V_)};
  auto alone1 = RunAlone(*backbone, 1, tokens[1], {10, 3});
  auto alone0 = RunAlone(*backbone, 0, tokens[0], {10, 3});
  auto alone2 = RunAlone(*backbone, 2, tokens[2], {10, 3});

  std::vector<std::unique_ptr<SequenceState>> st;
  for (int s = 0; s < 3; ++s) st.push_back(backbone->NewSequence(64));
  std::vector<Chunk> first;
  for (int s = 0; s < 3; ++s) first.push_back({s, st[s].get(), &tokens[s], 0, 10});
  Step(*backbone, first);

  // Second step: item 1's rows for the second Engram layer are unavailable.
  FixedRowSource rows;
  rows.errors[{1, 1}] = absl::UnavailableError("memory tier is gone");
  std::vector<Chunk> second;
  for (int s = 0; s < 3; ++s) second.push_back({s, st[s].get(), &tokens[s], 10, 3});
  std::vector<absl::Status> status;
  auto logits = Step(*backbone, second, &status, &rows);
  EXPECT_TRUE(status[0].ok());
  EXPECT_EQ(status[1].code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(status[1].message(), "memory tier is gone");
  EXPECT_TRUE(status[2].ok());
  EXPECT_EQ(logits[0], alone0[1]);
  EXPECT_EQ(logits[2], alone2[1]);
  EXPECT_EQ(st[1]->position(), 10);  // not advanced
  // Rows were requested in layer order, every live item per layer, none for item 1 after it failed.
  EXPECT_THAT(rows.calls,
              ::testing::ElementsAre(std::pair<size_t, int>{0, 0}, std::pair<size_t, int>{1, 0},
                                     std::pair<size_t, int>{2, 0}, std::pair<size_t, int>{0, 1},
                                     std::pair<size_t, int>{1, 1}, std::pair<size_t, int>{2, 1}));
  // Retried, it gives what it would have given without the failure (its conv history was restored).
  auto retry = Step(*backbone, {{1, st[1].get(), &tokens[1], 10, 3}});
  EXPECT_EQ(retry[0], alone1[1]);
  EXPECT_EQ(st[1]->position(), 13);
}

TEST_F(CpuBackboneTest, BadItemsFailAloneAndMalformedCallsAreRefused) {
  auto backbone = Backbone(2);
  auto good = backbone->NewSequence(64), bad_id = backbone->NewSequence(64),
       empty = backbone->NewSequence(64), full = backbone->NewSequence(4);
  EXPECT_EQ(full->max_tokens(), 4);
  EXPECT_EQ(backbone->NewSequence(100000)->max_tokens(), model_->config.max_position_embeddings);
  EXPECT_EQ(backbone->NewSequence(0)->max_tokens(), 1);
  std::vector<uint32_t> ok_tokens = {1, 2, 3}, bad_tokens = {1, static_cast<uint32_t>(V_)},
                        five = {1, 2, 3, 4, 5};
  FixedRowSource rows;
  rows.rows.assign(4, {SyntheticRows(0, 0, 0, 3, d_mem_), SyntheticRows(0, 1, 0, 3, d_mem_)});
  std::vector<BatchItem> items = {
      {good.get(), ok_tokens}, {bad_id.get(), bad_tokens}, {empty.get(), {}}, {full.get(), five}};
  std::vector<float> logits(4 * V_);
  std::vector<absl::Status> status;
  ASSERT_TRUE(backbone->Forward(items, rows, logits.data(), &status).ok());
  EXPECT_TRUE(status[0].ok()) << status[0];
  EXPECT_EQ(status[1].code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(status[1].message()), ::testing::HasSubstr("outside the vocabulary"));
  EXPECT_EQ(status[2].code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(status[3].code(), absl::StatusCode::kOutOfRange);
  EXPECT_EQ(good->position(), 3);
  EXPECT_EQ(bad_id->position(), 0);
  EXPECT_EQ(full->position(), 0);
  // Rows were asked only for the item that ran.
  for (const auto& call : rows.calls) EXPECT_EQ(call.first, 0u);

  // Wrong-sized rows fail the item.
  FixedRowSource short_rows;
  short_rows.rows = {{std::vector<float>(5), std::vector<float>(5)}};
  ASSERT_TRUE(
      backbone->Forward({{bad_id.get(), ok_tokens}}, short_rows, logits.data(), &status).ok());
  EXPECT_EQ(status[0].code(), absl::StatusCode::kInternal);

  // The same sequence twice, or null outputs: the call is refused and nothing changes.
  EXPECT_FALSE(backbone
                   ->Forward({{good.get(), ok_tokens}, {good.get(), ok_tokens}}, rows,
                             logits.data(), &status)
                   .ok());
  EXPECT_FALSE(backbone->Forward({{good.get(), ok_tokens}}, rows, nullptr, &status).ok());
  EXPECT_FALSE(backbone->Forward({{good.get(), ok_tokens}}, rows, logits.data(), nullptr).ok());
  EXPECT_EQ(good->position(), 3);
}

}  // namespace
}  // namespace engram
