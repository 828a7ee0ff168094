// In-process generation on a small demo model: determinism across chunking, threads and batch
// composition, seeded sampling, every finish reason, the rows it reads, and refusals.
#include "model/local_generate.h"

#include <algorithm>
#include <cstring>
#include <filesystem>

#include "common/ngram_hash.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "model/demo_model.h"
#include "model/engram_constants.h"
#include "model/tokenizer.h"

namespace engram {
namespace {

namespace fs = std::filesystem;

class LocalGenerateTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    ASSERT_TRUE(fs::exists(DefaultDemoTokenizerPath()))
        << DefaultDemoTokenizerPath() << " is missing: run scripts/fetch-testdata.sh";
    DemoModelOptions o;
    o.tokenizer_path = DefaultDemoTokenizerPath();
    o.hidden_size = 48;
    o.intermediate_size = 96;
    o.num_hidden_layers = 3;
    o.num_attention_heads = 4;
    o.num_key_value_heads = 2;
    o.max_position_embeddings = 128;
    o.engram_layer_ids = {1, 2};
    o.engram_n_heads = 2;
    o.engram_head_dim = 16;
    o.engram_vocab_size = 3000;
    const std::string dir = testing::TempDir() + "/local_generate_demo";
    absl::Status st = WriteDemoModel(dir, o);
    ASSERT_TRUE(st.ok()) << st;
    auto model = Model::Load(dir);
    ASSERT_TRUE(model.ok()) << model.status();
    model_ = model->release();
  }
  static void TearDownTestSuite() { delete model_; }

  std::vector<uint32_t> Encode(const std::string& text) {
    auto ids = model_->tokenizer().Encode(text);
    EXPECT_TRUE(ids.ok());
    return *ids;
  }
  LocalGenerateOptions Greedy(int max_tokens) {
    LocalGenerateOptions o;
    o.stop.max_tokens = max_tokens;
    o.stop.eos_token_ids = model_->config().eos_token_ids;
    o.stop.ignore_eos = true;
    return o;
  }
  LocalGenerateResult Run(const std::vector<uint32_t>& prompt, const LocalGenerateOptions& o) {
    auto r = LocalGenerate(*model_, prompt, o);
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? *r : LocalGenerateResult{};
  }

  static const Model* model_;
};
const Model* LocalGenerateTest::model_ = nullptr;

TEST_F(LocalGenerateTest, GreedyIsTheSameWhateverTheChunkingAndThreads) {
  auto prompt = Encode("The memory tier serves Engram rows to the worker");
  auto o = Greedy(12);
  LocalGenerateResult base = Run(prompt, o);
  EXPECT_EQ(base.tokens.size(), 12u);
  EXPECT_EQ(base.finish_reason, FinishReason::kLength);
  EXPECT_EQ(base.text, model_->tokenizer().Decode(base.tokens));
  for (int chunk : {1, 3, 5}) {
    o.prefill_chunk = chunk;
    EXPECT_EQ(Run(prompt, o).tokens, base.tokens) << "prefill chunk " << chunk;
  }
  o.prefill_chunk = 0;
  o.threads = 1;
  EXPECT_EQ(Run(prompt, o).tokens, base.tokens);
}

TEST_F(LocalGenerateTest, SampledGenerationIsReproducibleBySeed) {
  auto prompt = Encode("Once upon a time");
  auto o = Greedy(16);
  o.sampling = {.temperature = 1.0f, .top_k = 50, .top_p = 0.95f, .seed = 1234};
  auto a = Run(prompt, o), b = Run(prompt, o);
  EXPECT_EQ(a.tokens, b.tokens);
  EXPECT_EQ(a.text, b.text);
  o.sampling.seed = 4321;
  EXPECT_NE(Run(prompt, o).tokens, a.tokens);
}

TEST_F(LocalGenerateTest, FinishReasons) {
  auto prompt = Encode("Hello there, how are you");
  LocalGenerateResult base = Run(prompt, Greedy(10));
  ASSERT_EQ(base.tokens.size(), 10u);

  auto o = Greedy(10);
  o.stop.ignore_eos = false;
  o.stop.eos_token_ids = {base.tokens[0]};
  LocalGenerateResult eos = Run(prompt, o);
  EXPECT_EQ(eos.finish_reason, FinishReason::kEos);
  EXPECT_TRUE(eos.tokens.empty());  // the eos token is not part of the output

  o = Greedy(10);
  o.stop.stop_token_ids = {base.tokens[3]};
  LocalGenerateResult stop = Run(prompt, o);
  EXPECT_EQ(stop.finish_reason, FinishReason::kStop);
  auto first = std::find(base.tokens.begin(), base.tokens.end(), base.tokens[3]);
  EXPECT_EQ(stop.tokens, std::vector<uint32_t>(base.tokens.begin(), first));

  // A stop string inside the text: the text is cut before it.
  ASSERT_GE(base.text.size(), 4u);
  const std::string needle = base.text.substr(base.text.size() / 2, 2);
  o = Greedy(10);
  o.stop.stop_strings = {needle};
  LocalGenerateResult stop_text = Run(prompt, o);
  EXPECT_EQ(stop_text.finish_reason, FinishReason::kStop);
  EXPECT_EQ(stop_text.text, base.text.substr(0, base.text.find(needle)));

  o = Greedy(10);
  o.max_context = static_cast<int>(prompt.size()) + 4;
  LocalGenerateResult context = Run(prompt, o);
  EXPECT_EQ(context.finish_reason, FinishReason::kContext);
  EXPECT_EQ(context.tokens, std::vector<uint32_t>(base.tokens.begin(), base.tokens.begin() + 4));
}

TEST_F(LocalGenerateTest, RowsAreTheTableRowsOfTheHashedIds) {
  auto prompt = Encode("n-gram rows, fetched ahead");
  CpuBackbone backbone(*model_);
  auto seq = backbone.NewSequence(64);
  auto source = TableRowSource::Create(*model_);
  ASSERT_TRUE(source.ok()) << source.status();
  auto history = (*source)->NewHistory();
  const EngramConstants& c = model_->engram_constants();
  const int columns = c.hash.columns(), head_dim = model_->config().engram.head_dim;
  // Two chunks through the source; an independent NgramState token by token as the reference.
  NgramState state(c.hash);
  size_t split = 3;
  for (auto [begin, end] : {std::pair<size_t, size_t>{0, split}, {split, prompt.size()}}) {
    std::vector<uint32_t> chunk(prompt.begin() + begin, prompt.begin() + end);
    BatchItem item{seq.get(), chunk};
    auto* h = history.get();
    ASSERT_TRUE((*source)->Prepare({item}, {&h, 1}).ok());
    for (int li = 0; li < 2; ++li) {
      auto rows = (*source)->Rows(0, li);
      ASSERT_TRUE(rows.ok());
      ASSERT_EQ(rows->size(), chunk.size() * columns * head_dim);
    }
    for (size_t t = 0; t < chunk.size(); ++t) {
      ASSERT_TRUE(state.Push(*c.Compress(chunk[t])).ok());
      for (int li = 0; li < 2; ++li) {
        std::vector<int64_t> ids(columns);
        state.RowIds(c.hash, li, ids.data());
        const TensorView* table = model_->tensors().Find(model_->EngramTableName(li));
        auto rows = *(*source)->Rows(0, li);
        for (int col = 0; col < columns; ++col) {
          for (int j = 0; j < head_dim; ++j) {
            uint16_t bits;
            std::memcpy(&bits, table->data + (size_t(ids[col]) * head_dim + j) * 2, 2);
            ASSERT_EQ(rows[(t * columns + col) * head_dim + j], Bf16ToF32(bits))
                << "layer " << li << " position " << begin + t << " column " << col;
          }
        }
      }
    }
  }
}

TEST_F(LocalGenerateTest, BatchedGreedyEqualsEachAlone) {
  std::vector<std::vector<uint32_t>> prompts = {
      Encode("First prompt"), Encode("A second, longer prompt with more words"), Encode("3")};
  const int steps = 6;
  std::vector<std::vector<uint32_t>> alone;
  for (const auto& p : prompts) alone.push_back(Run(p, Greedy(steps)).tokens);

  CpuBackbone backbone(*model_, CpuBackboneOptions{.threads = 2});
  auto source = *TableRowSource::Create(*model_);
  std::vector<std::unique_ptr<SequenceState>> seqs;
  std::vector<std::unique_ptr<TableRowSource::History>> histories;
  std::vector<TableRowSource::History*> h;
  for (size_t i = 0; i < prompts.size(); ++i) {
    seqs.push_back(backbone.NewSequence(64));
    histories.push_back(source->NewHistory());
    h.push_back(histories.back().get());
  }
  std::vector<std::vector<uint32_t>> out(prompts.size()), feed = prompts;
  const int V = model_->config().vocab_size;
  for (int step = 0; step < steps; ++step) {
    std::vector<BatchItem> items;
    for (size_t i = 0; i < prompts.size(); ++i) items.push_back({seqs[i].get(), feed[i]});
    ASSERT_TRUE(source->Prepare(items, h).ok());
    std::vector<float> logits(items.size() * V);
    std::vector<absl::Status> status;
    ASSERT_TRUE(backbone.Forward(items, *source, logits.data(), &status).ok());
    for (size_t i = 0; i < prompts.size(); ++i) {
      ASSERT_TRUE(status[i].ok()) << status[i];
      uint32_t token = ArgMax(absl::MakeConstSpan(&logits[i * V], V));
      out[i].push_back(token);
      feed[i] = {token};
    }
  }
  EXPECT_EQ(out, alone);
}

TEST_F(LocalGenerateTest, BadRequestsAreRefused) {
  auto code = [&](const std::vector<uint32_t>& prompt, const LocalGenerateOptions& o) {
    return LocalGenerate(*model_, prompt, o).status().code();
  };
  auto o = Greedy(4);
  EXPECT_EQ(code({}, o), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(code({1, 50257}, o), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(code(std::vector<uint32_t>(128, 5), o), absl::StatusCode::kInvalidArgument);
  o.sampling.temperature = -1;
  EXPECT_EQ(code({1, 2}, o), absl::StatusCode::kInvalidArgument);
  o = Greedy(4);
  o.sampling.top_p = 1.5f;
  EXPECT_EQ(code({1, 2}, o), absl::StatusCode::kInvalidArgument);
  o = Greedy(0);
  EXPECT_EQ(code({1, 2}, o), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace engram
