// Tokenizer throughput and the compressed-map build, on GPT-2 and cl100k (docs/tokenizer.md).
//
//   scripts/fetch-testdata.sh && build/bench/tokenizer_bench
// Baseline in the same run: pre-tokenization alone (the regex split) on the same text, so the
// ratio Encode/PreTokenize shows what BPE and the word cache add. The corpus is gpt-tokenizer's
// TestPlans.txt (about 85 KB in many scripts); "unique words" text defeats the word cache.
#include <benchmark/benchmark.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <random>
#include <sstream>
#include <string>

#include "model/compressed_vocab.h"
#include "model/tokenizer.h"

namespace engram {
namespace {

std::string TestData(const std::string& file) {
  const char* dir = std::getenv("ENGRAM_TESTDATA_DIR");
  return std::string(dir != nullptr ? dir : ".cache/testdata") + "/" + file;
}

const Tokenizer& Load(const char* name) {
  static std::unique_ptr<Tokenizer> tokenizers[2];
  const int i = std::string(name) == "gpt2" ? 0 : 1;
  if (tokenizers[i] == nullptr) {
    auto t = Tokenizer::FromFile(TestData(i == 0 ? "tokenizer-gpt2/package/models/tokenizer.json"
                                                 : "tokenizer-gpt4/package/models/tokenizer.json"));
    if (!t.ok()) {
      std::fprintf(stderr, "%s (run scripts/fetch-testdata.sh)\n", t.status().ToString().c_str());
      std::exit(1);
    }
    tokenizers[i] = *std::move(t);
  }
  return *tokenizers[i];
}

const std::string& Corpus() {
  static const std::string* text = [] {
    std::ifstream in(TestData("gpt-tokenizer/package/data/TestPlans.txt"), std::ios::binary);
    std::stringstream buffer;
    buffer << in.rdbuf();
    return new std::string(buffer.str());
  }();
  return *text;
}

const std::string& UniqueWords() {
  static const std::string* text = [] {
    std::mt19937 rng(7);
    auto* s = new std::string();
    for (int w = 0; w < 20000; ++w) {
      *s += ' ';
      for (int k = 4 + rng() % 6; k > 0; --k) *s += static_cast<char>('a' + rng() % 26);
    }
    return s;
  }();
  return *text;
}

void BM_PreTokenize(benchmark::State& state, const char* name) {
  const Tokenizer& t = Load(name);
  for (auto _ : state) benchmark::DoNotOptimize(t.PreTokenize(Corpus()));
  state.SetBytesProcessed(state.iterations() * Corpus().size());
}

void BM_Encode(benchmark::State& state, const char* name) {
  const Tokenizer& t = Load(name);
  size_t tokens = 0;
  for (auto _ : state) tokens = t.Encode(Corpus())->size();
  state.SetBytesProcessed(state.iterations() * Corpus().size());
  state.counters["tokens/s"] = benchmark::Counter(static_cast<double>(tokens * state.iterations()),
                                                  benchmark::Counter::kIsRate);
}

void BM_EncodeUniqueWords(benchmark::State& state, const char* name) {
  const Tokenizer& t = Load(name);
  for (auto _ : state) benchmark::DoNotOptimize(t.Encode(UniqueWords()));
  state.SetBytesProcessed(state.iterations() * UniqueWords().size());
}

void BM_Decode(benchmark::State& state, const char* name) {
  const Tokenizer& t = Load(name);
  const std::vector<uint32_t> ids = t.Encode(Corpus()).value();
  for (auto _ : state) benchmark::DoNotOptimize(t.Decode(ids));
  state.SetItemsProcessed(state.iterations() * ids.size());
}

void BM_BuildCompressedTokenMap(benchmark::State& state, const char* name) {
  const Tokenizer& t = Load(name);
  for (auto _ : state) benchmark::DoNotOptimize(BuildCompressedTokenMap(t));
  state.SetItemsProcessed(state.iterations() * t.size());
}

void BM_Load(benchmark::State& state, const char* name) {
  const std::string path =
      TestData(std::string(name) == "gpt2" ? "tokenizer-gpt2/package/models/tokenizer.json"
                                           : "tokenizer-gpt4/package/models/tokenizer.json");
  for (auto _ : state) benchmark::DoNotOptimize(Tokenizer::FromFile(path));
}

BENCHMARK_CAPTURE(BM_PreTokenize, gpt2, "gpt2");
BENCHMARK_CAPTURE(BM_PreTokenize, cl100k, "cl100k");
BENCHMARK_CAPTURE(BM_Encode, gpt2, "gpt2");
BENCHMARK_CAPTURE(BM_Encode, cl100k, "cl100k");
BENCHMARK_CAPTURE(BM_EncodeUniqueWords, cl100k, "cl100k");
BENCHMARK_CAPTURE(BM_Decode, cl100k, "cl100k");
BENCHMARK_CAPTURE(BM_BuildCompressedTokenMap, gpt2, "gpt2")->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_BuildCompressedTokenMap, cl100k, "cl100k")->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_Load, gpt2, "gpt2")->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_Load, cl100k, "cl100k")->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace engram

BENCHMARK_MAIN();
