// The GPT-2 and cl100k tokenizer.json files against every external vector: the reference vectors
// of tests/vectors (tokenizers 0.23.2), the probes that apply to these files, gpt-tokenizer's TestPlans.txt
// (tiktoken's cl100k_base and r50k_base = GPT-2 vocabulary) and the goldens made by
// tests/tokenizer/gen_hf_goldens.py (random texts, decode_stream, every single-id decode).
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_split.h"
#include "common/crc32c.h"
#include "gtest/gtest.h"
#include "model/tokenizer.h"
#include "tests/tokenizer/test_data.h"

namespace engram {
namespace {

using testing::ByteLevelToText;
using testing::Codepoints;
using testing::Ids;
using testing::ReadJson;

void CheckVectorFile(const Tokenizer& t, const std::string& file) {
  nlohmann::json v = ReadJson(testing::VectorFile(file));
  ASSERT_TRUE(v.is_object()) << file;
  ASSERT_FALSE(v["encode"].empty());
  for (const auto& e : v["encode"]) {
    const std::string text = e["text"].get<std::string>();
    absl::StatusOr<std::vector<uint32_t>> ids = t.Encode(text);
    ASSERT_TRUE(ids.ok()) << ids.status();
    EXPECT_EQ(*ids, Ids(e["ids"])) << file << " encode " << Codepoints(text);
    EXPECT_EQ(t.Decode(Ids(e["ids"])), e["decoded"].get<std::string>()) << file << " decode";
  }
  int with_fffd = 0;
  for (const auto& d : v["decode_single"]) {
    const uint32_t id[1] = {d["id"].get<uint32_t>()};
    const std::string text = t.Decode(id);
    EXPECT_EQ(text, d["text"].get<std::string>()) << file << " decode([" << id[0] << "])";
    EXPECT_EQ(absl::StrContains(text, "\xEF\xBF\xBD"), d["has_fffd"].get<bool>()) << id[0];
    with_fffd += d["has_fffd"].get<bool>();
  }
  EXPECT_GT(with_fffd, 0) << "the sample should include partial-UTF-8 tokens";
  for (const auto& d : v["id_to_token"]) {
    const uint32_t id = d["id"].get<uint32_t>();
    if (d["token"].is_null()) {
      EXPECT_FALSE(t.IdToToken(id).has_value()) << id;
      continue;
    }
    EXPECT_EQ(t.IdToToken(id).value_or("<none>"), d["token"].get<std::string>()) << id;
    EXPECT_EQ(t.TokenToId(d["token"].get<std::string>()), id);
  }
}

TEST(TokenizerVectorsTest, Gpt2SharedVectors) {
  const Tokenizer* t = testing::Gpt2();
  ASSERT_NE(t, nullptr);
  CheckVectorFile(*t, "tokenizer_vectors_gpt2.json");
}

TEST(TokenizerVectorsTest, Cl100kSharedVectors) {
  const Tokenizer* t = testing::Gpt4();
  ASSERT_NE(t, nullptr);
  CheckVectorFile(*t, "tokenizer_vectors_gpt4.json");
}

TEST(TokenizerVectorsTest, SizesAndSpecialTokens) {
  const Tokenizer* gpt2 = testing::Gpt2();
  const Tokenizer* gpt4 = testing::Gpt4();
  ASSERT_TRUE(gpt2 != nullptr && gpt4 != nullptr);
  EXPECT_EQ(gpt2->size(), 50257u);
  EXPECT_EQ(gpt2->max_id(), 50256u);
  EXPECT_EQ(gpt2->SpecialTokenId("<|endoftext|>"), 50256u);
  EXPECT_TRUE(gpt2->IsSpecial(50256));
  EXPECT_FALSE(gpt2->IsSpecial(50255));
  EXPECT_FALSE(gpt2->SpecialTokenId("hello").has_value());
  // cl100k: len(tokenizer) counts assigned ids, the largest of which is higher.
  EXPECT_EQ(gpt4->size(), 100263u);
  EXPECT_EQ(gpt4->max_id(), 100276u);
  EXPECT_EQ(gpt4->SpecialTokenId("<|endofprompt|>"), 100276u);
  EXPECT_EQ(gpt4->SpecialTokenId("<|im_start|>"), 100264u);
  EXPECT_FALSE(gpt4->IsValidId(100277));
}

TEST(TokenizerVectorsTest, ProbesThatApplyToTheseFiles) {
  nlohmann::json p = ReadJson(testing::VectorFile("hf_tokenizers_probes.json"));
  ASSERT_TRUE(p.is_object());
  const Tokenizer* gpt2 = testing::Gpt2();
  const Tokenizer* gpt4 = testing::Gpt4();
  ASSERT_TRUE(gpt2 != nullptr && gpt4 != nullptr);
  const std::pair<const char*, const Tokenizer*> pretok[] = {{"gpt2", gpt2},
                                                             {"cl100k_lenml", gpt4}};
  for (const auto& [name, t] : pretok) {
    ASSERT_FALSE(p["pretokenize"][name].empty()) << name;
    for (const auto& [text, pieces] : p["pretokenize"][name].items()) {
      absl::StatusOr<std::vector<std::string>> got = t->PreTokenize(text);
      ASSERT_TRUE(got.ok()) << got.status();
      std::vector<std::string> as_text;
      for (const std::string& piece : *got) as_text.push_back(ByteLevelToText(piece));
      EXPECT_EQ(as_text, pieces.get<std::vector<std::string>>()) << name << " " << Codepoints(text);
    }
  }
  const std::pair<const char*, const Tokenizer*> files[] = {{"gpt2", gpt2}, {"gpt4", gpt4}};
  for (const auto& [name, t] : files) {
    for (const auto& e : p["encode_texts"][name]) {
      const std::string text = e["text"].get<std::string>();
      EXPECT_EQ(t->Encode(text).value(), Ids(e["ids"])) << name << " " << Codepoints(text);
      std::vector<std::string> tokens;
      for (uint32_t id : Ids(e["ids"])) tokens.push_back(t->IdToToken(id).value_or("?"));
      EXPECT_EQ(tokens, e["tokens"].get<std::vector<std::string>>());
    }
    const auto& s = p["encode_with_special"][name];
    const std::vector<uint32_t> ids = t->Encode("hello<|endoftext|>world").value();
    EXPECT_EQ(ids, Ids(s["ids"])) << name;
    EXPECT_EQ(t->Decode(ids, false), s["dec_keep"].get<std::string>());
    EXPECT_EQ(t->Decode(ids, true), s["dec_skip"].get<std::string>());
    // Single-id decodes that contain U+FFFD, over every id up to the largest.
    int with_fffd = 0;
    for (uint32_t id = 0; id <= t->max_id(); ++id) {
      const uint32_t one[1] = {id};
      with_fffd += absl::StrContains(t->Decode(one), "\xEF\xBF\xBD");
    }
    EXPECT_EQ(with_fffd, p["single_id_decode_counts"][name]["with_fffd"].get<int>()) << name;
  }
  // cl100k leaves these ids unassigned; decode drops them.
  for (const auto& v : p["unassigned_ids_cl100k_file"]) {
    const uint32_t id = v.get<uint32_t>();
    EXPECT_FALSE(gpt4->IsValidId(id)) << id;
    EXPECT_FALSE(gpt4->IdToToken(id).has_value()) << id;
    const uint32_t seq[3] = {15339, id, 1917};
    EXPECT_EQ(gpt4->Decode(seq), "hello world");
  }
}

// The added-token and post-processor probes were made on GPT-2's file with tokens added.
std::unique_ptr<Tokenizer> ModifiedGpt2(const std::function<void(nlohmann::json*)>& edit) {
  static const auto* base = new nlohmann::json(ReadJson(testing::Gpt2Path()));
  nlohmann::json j = *base;
  edit(&j);
  absl::StatusOr<std::unique_ptr<Tokenizer>> t = Tokenizer::FromJson(j.dump());
  EXPECT_TRUE(t.ok()) << t.status();
  return t.ok() ? *std::move(t) : nullptr;
}

nlohmann::json Added(uint32_t id, const std::string& content, bool single_word = false,
                     bool strip = false, bool normalized = false) {
  return {{"id", id},        {"content", content}, {"single_word", single_word},
          {"lstrip", strip}, {"rstrip", strip},    {"normalized", normalized},
          {"special", false}};
}

std::vector<std::string> Tokens(const Tokenizer& t, const std::string& text) {
  std::vector<std::string> out;
  const std::vector<uint32_t> ids = t.Encode(text).value();
  for (uint32_t id : ids) out.push_back(t.IdToToken(id).value_or("?"));
  return out;
}

TEST(TokenizerVectorsTest, AddedTokenAndTemplateProbesOnGpt2) {
  nlohmann::json p = ReadJson(testing::VectorFile("hf_tokenizers_probes.json"));
  const auto& a = p["added_tokens"];
  ASSERT_TRUE(a.is_object());
  auto strings = [](const nlohmann::json& j) { return j.get<std::vector<std::string>>(); };

  auto prefix =
      ModifiedGpt2([](nlohmann::json* j) { (*j)["pre_tokenizer"]["add_prefix_space"] = true; });
  ASSERT_NE(prefix, nullptr);
  EXPECT_EQ(Tokens(*prefix, "Hello<|endoftext|>world"), strings(a["prefix_space_around_special"]));

  auto strip = ModifiedGpt2([](nlohmann::json* j) {
    (*j)["added_tokens"].push_back(Added(50257, "[X]", false, /*strip=*/true));
  });
  ASSERT_NE(strip, nullptr);
  EXPECT_EQ(strip->Encode("a  [X]  b").value(), (std::vector<uint32_t>{64, 50257, 65}));
  EXPECT_EQ(a["lstrip_rstrip"]["tokens"].size(), 3u);

  // "ab" is a GPT-2 vocab token, so the added token takes its id 397.
  auto single = ModifiedGpt2([](nlohmann::json* j) {
    (*j)["added_tokens"].push_back(Added(397, "ab", /*single_word=*/true));
  });
  ASSERT_NE(single, nullptr);
  EXPECT_EQ(Tokens(*single, "ab abc xab ab."), strings(a["single_word"]));

  auto longest = ModifiedGpt2([](nlohmann::json* j) {
    uint32_t next = 50257;
    for (const char* s : {"abc", "bcd", "ab", "abcdx"}) {
      const auto& vocab = (*j)["model"]["vocab"];
      (*j)["added_tokens"].push_back(
          Added(vocab.contains(s) ? vocab[s].get<uint32_t>() : next++, s));
    }
  });
  ASSERT_NE(longest, nullptr);
  for (const auto& [text, tokens] : a["leftmost_longest"].items()) {
    EXPECT_EQ(Tokens(*longest, text), strings(tokens)) << text;
  }

  auto rescan = ModifiedGpt2([](nlohmann::json* j) {
    const auto& vocab = (*j)["model"]["vocab"];
    (*j)["added_tokens"].push_back(Added(vocab["abc"].get<uint32_t>(), "abc", true));
    (*j)["added_tokens"].push_back(Added(vocab["bc"].get<uint32_t>(), "bc"));
  });
  ASSERT_NE(rescan, nullptr);
  EXPECT_EQ(Tokens(*rescan, "zabc"), strings(a["discarded_match_not_rescanned"]));

  auto normalized = ModifiedGpt2([](nlohmann::json* j) {
    (*j)["normalizer"] = {{"type", "Lowercase"}};
    (*j)["added_tokens"].push_back(Added(50257, "HeLLo", false, false, /*normalized=*/true));
  });
  ASSERT_NE(normalized, nullptr);
  EXPECT_EQ(Tokens(*normalized, "aHELLOb"), strings(a["normalized_added"]["tokens"]));
  EXPECT_EQ(normalized->IdToToken(50257), a["normalized_added"]["id_to_token"].get<std::string>());

  auto templ = ModifiedGpt2([](nlohmann::json* j) {
    (*j)["post_processor"] = nlohmann::json::parse(R"({"type": "TemplateProcessing",
        "single": [{"SpecialToken": {"id": "<|endoftext|>", "type_id": 0}},
                   {"Sequence": {"id": "A", "type_id": 0}}],
        "pair": [], "special_tokens": {"<|endoftext|>": {"id": "<|endoftext|>", "ids": [50256],
                                                         "tokens": ["<|endoftext|>"]}}})");
  });
  ASSERT_NE(templ, nullptr);
  EXPECT_EQ(templ->Encode("hi", true).value(), Ids(a["template"]["with"]));
  EXPECT_EQ(templ->Encode("hi", false).value(), Ids(a["template"]["without"]));
}

// gpt-tokenizer's TestPlans.txt: blocks of "EncodingName:", "Sample:" and "Encoded:" lines.
struct TestPlan {
  std::string encoding;
  std::string sample;
  std::vector<uint32_t> ids;
};

std::vector<TestPlan> ReadTestPlans() {
  std::string text;
  if (!testing::ReadFile(testing::TestData("gpt-tokenizer/package/data/TestPlans.txt"), &text)) {
    return {};
  }
  std::vector<TestPlan> plans;
  for (absl::string_view block : absl::StrSplit(text, "\n\n", absl::SkipWhitespace())) {
    TestPlan plan;
    for (absl::string_view line : absl::StrSplit(block, '\n')) {
      if (absl::ConsumePrefix(&line, "EncodingName: ")) plan.encoding = std::string(line);
      if (absl::ConsumePrefix(&line, "Sample: ")) plan.sample = std::string(line);
      if (line == "Sample:") plan.sample.clear();
      if (absl::ConsumePrefix(&line, "Encoded: [")) {
        absl::ConsumeSuffix(&line, "]");
        for (absl::string_view n : absl::StrSplit(line, ", ", absl::SkipEmpty())) {
          uint32_t id = 0;
          EXPECT_TRUE(absl::SimpleAtoi(n, &id)) << n;
          plan.ids.push_back(id);
        }
      }
    }
    plans.push_back(std::move(plan));
  }
  return plans;
}

TEST(TokenizerVectorsTest, TestPlansCl100kAndR50k) {
  const Tokenizer* gpt2 = testing::Gpt2();
  const Tokenizer* gpt4 = testing::Gpt4();
  ASSERT_TRUE(gpt2 != nullptr && gpt4 != nullptr);
  int checked[2] = {0, 0};
  for (const TestPlan& plan : ReadTestPlans()) {
    const Tokenizer* t = plan.encoding == "cl100k_base" ? gpt4
                         : plan.encoding == "r50k_base" ? gpt2
                                                        : nullptr;
    if (t == nullptr) continue;  // p50k/o200k have no tokenizer.json here
    absl::StatusOr<std::vector<uint32_t>> ids = t->Encode(plan.sample);
    ASSERT_TRUE(ids.ok()) << ids.status();
    EXPECT_EQ(*ids, plan.ids) << plan.encoding << ": " << plan.sample;
    EXPECT_EQ(t->Decode(plan.ids), plan.sample) << plan.encoding;
    ++checked[t == gpt4];
  }
  EXPECT_EQ(checked[1], 64) << "cl100k_base entries";
  EXPECT_EQ(checked[0], 64) << "r50k_base entries";
}

// Goldens of gen_hf_goldens.py for the real files.
TEST(TokenizerVectorsTest, HfGoldensOnTheRealFiles) {
  nlohmann::json g = ReadJson(testing::SourceFile("tests/tokenizer/testdata/hf_goldens.json"));
  ASSERT_TRUE(g.is_object());
  const std::pair<const char*, const Tokenizer*> files[] = {{"gpt2", testing::Gpt2()},
                                                            {"gpt4", testing::Gpt4()}};
  for (const auto& [name, t] : files) {
    ASSERT_NE(t, nullptr);
    const auto& f = g["files"][name];
    ASSERT_EQ(f["encode"].size(), 400u);
    for (const auto& e : f["encode"]) {
      const std::string text = e["text"].get<std::string>();
      absl::StatusOr<std::vector<uint32_t>> ids = t->Encode(text);
      ASSERT_TRUE(ids.ok()) << ids.status();
      EXPECT_EQ(*ids, Ids(e["ids"])) << name << " " << Codepoints(text);
      EXPECT_EQ(t->Decode(*ids), text) << name;
    }
    for (const auto& s : f["stream"]) {
      DecodeStream stream(*t, s["skip_special_tokens"].get<bool>());
      std::vector<std::string> got, want;
      for (uint32_t id : Ids(s["ids"])) got.push_back(stream.Step(id));
      for (const auto& w : s["steps"]) want.push_back(w.is_null() ? "" : w.get<std::string>());
      EXPECT_EQ(got, want) << name;
      EXPECT_EQ(stream.Flush(), "");
    }
    // Every single-id decode and id_to_token, with and without skipping specials, as CRC-32C
    // over the NUL-joined strings for ids 0 .. max_id + 2.
    ASSERT_EQ(f["max_id"].get<uint32_t>(), t->max_id());
    for (bool skip : {false, true}) {
      std::string blob;
      for (uint32_t id = 0; id <= t->max_id() + 2; ++id) {
        if (id > 0) blob.push_back('\0');
        const uint32_t one[1] = {id};
        blob += t->Decode(one, skip);
      }
      const std::string key = skip ? "decode_all_skip_True_crc32c" : "decode_all_skip_False_crc32c";
      EXPECT_EQ(Crc32c(0, blob.data(), blob.size()), f[key].get<uint32_t>()) << name << " " << key;
    }
    std::string blob;
    for (uint32_t id = 0; id <= t->max_id() + 2; ++id) {
      if (id > 0) blob.push_back('\0');
      blob += t->IdToToken(id).value_or("<None>");
    }
    EXPECT_EQ(Crc32c(0, blob.data(), blob.size()), f["id_to_token_all_crc32c"].get<uint32_t>())
        << name;
  }
}

TEST(TokenizerVectorsTest, DecodeStreamHoldsBackPartialCharacters) {
  const Tokenizer* t = testing::Gpt4();
  ASSERT_NE(t, nullptr);
  const std::string text = "\xF0\x9F\x91\x8D\xF0\x9F\x8F\xBD caf\xC3\xA9 \xE6\x97\xA5\xE6\x9C\xAC";
  const std::vector<uint32_t> ids = t->Encode(text).value();
  DecodeStream stream(*t, false);
  std::string joined;
  for (uint32_t id : ids) {
    std::string piece = stream.Step(id);
    EXPECT_EQ(tokenizer_internal::FindInvalidUtf8(piece), std::string::npos);
    EXPECT_FALSE(absl::StrContains(piece, "\xEF\xBF\xBD"));
    joined += piece;
  }
  joined += stream.Flush();
  EXPECT_EQ(joined, text);
  // An incomplete character at the end comes out lossily on Flush.
  DecodeStream partial(*t, false);
  const std::vector<uint32_t> emoji = t->Encode("\xF0\x9F\x91\x8D").value();
  ASSERT_GT(emoji.size(), 1u);
  EXPECT_EQ(partial.Step(emoji[0]), "");
  EXPECT_EQ(partial.Flush(), t->Decode(absl::MakeConstSpan(emoji.data(), 1)));
}

TEST(TokenizerVectorsTest, ConcurrentEncodesAgree) {
  const Tokenizer* t = testing::Gpt4();
  ASSERT_NE(t, nullptr);
  nlohmann::json g = ReadJson(testing::SourceFile("tests/tokenizer/testdata/hf_goldens.json"));
  const auto& encodes = g["files"]["gpt4"]["encode"];
  ASSERT_FALSE(encodes.empty());
  std::vector<std::thread> threads;
  std::vector<int> mismatches(4, 0);
  for (int k = 0; k < 4; ++k) {
    threads.emplace_back([&, k] {
      for (size_t i = k; i < encodes.size(); i += 2) {
        absl::StatusOr<std::vector<uint32_t>> ids =
            t->Encode(encodes[i]["text"].get<std::string>());
        if (!ids.ok() || *ids != Ids(encodes[i]["ids"])) ++mismatches[k];
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(mismatches, std::vector<int>(4, 0));
}

TEST(TokenizerVectorsTest, LongInputsAndInvalidUtf8) {
  const Tokenizer* t = testing::Gpt4();
  ASSERT_NE(t, nullptr);
  // A long whitespace run exercises \s+(?!\S) backtracking; the result must match a known shape:
  // the run minus its last space, then " x".
  const std::string spaces(200000, ' ');
  const std::vector<uint32_t> ids = t->Encode(spaces + "x").value();
  EXPECT_EQ(t->Decode(ids), spaces + "x");
  const std::vector<uint32_t> tail = t->Encode(" x").value();
  ASSERT_GE(ids.size(), tail.size());
  EXPECT_TRUE(std::equal(tail.begin(), tail.end(), ids.end() - tail.size()));
  const std::string letters(300000, 'a');
  EXPECT_EQ(t->Decode(t->Encode(letters).value()), letters);
  absl::StatusOr<std::vector<uint32_t>> bad = t->Encode("ok \xC3\x28");
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(bad.status().message(), "UTF-8")) << bad.status();
}

}  // namespace
}  // namespace engram
