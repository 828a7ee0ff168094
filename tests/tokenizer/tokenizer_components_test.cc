// The tokenizer pipeline piece by piece: hand-built tokenizers against Hugging Face's outputs
// (testdata/hf_goldens.json), the Oniguruma-compatible regexes against the library's own class
// membership (testdata/oniguruma_classes.json) and the probes of tests/vectors, lossy UTF-8, and
// the errors malformed tokenizer.json files get.
#include <set>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "model/tokenizer.h"
#include "model/tokenizer_pipeline.h"
#include "model/tokenizer_regex.h"
#include "model/tokenizer_utf8.h"
#include "tests/tokenizer/test_data.h"

namespace engram {
namespace {

using testing::ByteLevelToText;
using testing::Codepoints;
using testing::FromHexCodepoints;
using testing::Ids;
using testing::ReadJson;
using tokenizer_internal::OnigRegex;

const nlohmann::json& Goldens() {
  static const auto* g =
      new nlohmann::json(ReadJson(testing::SourceFile("tests/tokenizer/testdata/hf_goldens.json")));
  return *g;
}

const nlohmann::json& Probes() {
  static const auto* p =
      new nlohmann::json(ReadJson(testing::VectorFile("hf_tokenizers_probes.json")));
  return *p;
}

std::unique_ptr<Tokenizer> GoldenTokenizer(const std::string& name) {
  for (const auto& c : Goldens()["small"]) {
    if (c["name"] != name) continue;
    absl::StatusOr<std::unique_ptr<Tokenizer>> t =
        Tokenizer::FromJson(c["json"].get<std::string>());
    EXPECT_TRUE(t.ok()) << name << ": " << t.status();
    return t.ok() ? *std::move(t) : nullptr;
  }
  ADD_FAILURE() << "no golden case " << name;
  return nullptr;
}

// Every hand-built case: BPE options, added tokens, normalizers, post-processors, splits.
TEST(TokenizerComponentsTest, HandBuiltTokenizersMatchTheLibrary) {
  ASSERT_TRUE(Goldens().is_object());
  int cases = 0;
  for (const auto& c : Goldens()["small"]) {
    const std::string name = c["name"].get<std::string>();
    SCOPED_TRACE(name);
    ASSERT_FALSE(c.contains("error")) << c["error"];
    absl::StatusOr<std::unique_ptr<Tokenizer>> loaded =
        Tokenizer::FromJson(c["json"].get<std::string>());
    ASSERT_TRUE(loaded.ok()) << loaded.status();
    const Tokenizer& t = **loaded;
    EXPECT_EQ(t.size(), c["size"].get<size_t>());
    for (const auto& e : c["encode"]) {
      const std::string text = e["text"].get<std::string>();
      absl::StatusOr<std::vector<uint32_t>> ids =
          t.Encode(text, e["add_special_tokens"].get<bool>());
      ASSERT_TRUE(ids.ok()) << ids.status();
      EXPECT_EQ(*ids, Ids(e["ids"])) << Codepoints(text);
    }
    for (const auto& d : c["decode"]) {
      EXPECT_EQ(t.Decode(Ids(d["ids"]), d["skip_special_tokens"].get<bool>()),
                d["text"].get<std::string>());
    }
    for (const auto& n : c["normalize"]) {
      absl::StatusOr<std::string> out = t.Normalize(n["text"].get<std::string>());
      ASSERT_TRUE(out.ok()) << out.status();
      EXPECT_EQ(*out, n["out"].get<std::string>()) << Codepoints(n["text"].get<std::string>());
    }
    for (const auto& p : c["pretokenize"]) {
      absl::StatusOr<std::vector<std::string>> pieces = t.PreTokenize(p["text"].get<std::string>());
      ASSERT_TRUE(pieces.ok()) << pieces.status();
      EXPECT_EQ(*pieces, p["pieces"].get<std::vector<std::string>>()) << p["text"];
    }
    for (const auto& i : c["id_to_token"]) {
      EXPECT_EQ(t.IdToToken(i["id"].get<uint32_t>()).value_or("<none>"),
                i["token"].get<std::string>());
    }
    ++cases;
  }
  EXPECT_GE(cases, 40);
}

TEST(TokenizerComponentsTest, SplitBehaviourProbes) {
  const auto& probe = Probes()["split_behaviours_on_the-final--countdown"];
  ASSERT_EQ(probe.size(), 10u);
  const std::pair<const char*, const char*> behaviours[] = {
      {"removed", "Removed"},
      {"isolated", "Isolated"},
      {"merged_with_previous", "MergedWithPrevious"},
      {"merged_with_next", "MergedWithNext"},
      {"contiguous", "Contiguous"}};
  for (const auto& [key, behavior] : behaviours) {
    for (bool invert : {false, true}) {
      const std::string json = absl::StrCat(
          R"({"pre_tokenizer": {"type": "Split", "pattern": {"String": "-"}, "behavior": ")",
          behavior, R"(", "invert": )", invert ? "true" : "false",
          R"(}, "model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}})");
      absl::StatusOr<std::unique_ptr<Tokenizer>> t = Tokenizer::FromJson(json);
      ASSERT_TRUE(t.ok()) << t.status();
      const std::string probe_key = absl::StrCat(key, invert ? "_invert" : "");
      EXPECT_EQ((*t)->PreTokenize("the-final--countdown").value(),
                probe[probe_key].get<std::vector<std::string>>())
          << probe_key;
    }
  }
}

TEST(TokenizerComponentsTest, DeepSeekV3PreTokenizerProbes) {
  std::unique_ptr<Tokenizer> t = GoldenTokenizer("pretok_deepseek_v3");
  ASSERT_NE(t, nullptr);
  const auto& probe = Probes()["pretokenize"]["deepseek_v3_pattern_on_cl100k_file"];
  ASSERT_GT(probe.size(), 30u);
  for (const auto& [text, pieces] : probe.items()) {
    std::vector<std::string> got;
    const std::vector<std::string> pieces_got = t->PreTokenize(text).value();
    for (const std::string& piece : pieces_got) got.push_back(ByteLevelToText(piece));
    EXPECT_EQ(got, pieces.get<std::vector<std::string>>()) << Codepoints(text);
  }
}

// All code points but surrogates, in order, as one UTF-8 string, with each one's byte offset.
struct AllCodepoints {
  std::string text;
  std::vector<uint32_t> at;  // code point starting at each byte offset (or kNone)
};
const AllCodepoints& Everything() {
  static const AllCodepoints* all = [] {
    auto* a = new AllCodepoints();
    for (char32_t c = 0; c < 0x110000; ++c) {
      if (c >= 0xD800 && c <= 0xDFFF) continue;
      a->at.resize(a->text.size(), UINT32_MAX);
      a->at.push_back(c);
      tokenizer_internal::AppendUtf8(c, &a->text);
    }
    a->at.resize(a->text.size(), UINT32_MAX);
    return a;
  }();
  return *all;
}

// Code points matched by `pattern` (which matches runs of single characters) over Everything().
std::vector<bool> Members(const std::string& pattern) {
  std::vector<bool> in(0x110000, false);
  absl::StatusOr<std::unique_ptr<OnigRegex>> re = OnigRegex::Compile(pattern);
  EXPECT_TRUE(re.ok()) << pattern << ": " << re.status();
  if (!re.ok()) return in;
  const AllCodepoints& all = Everything();
  const std::vector<tokenizer_internal::MatchRange> matches = (*re)->FindAll(all.text).value();
  for (const auto& [begin, end] : matches) {
    for (size_t i = begin; i < end; ++i) {
      if (all.at[i] != UINT32_MAX) in[all.at[i]] = true;
    }
  }
  return in;
}

std::vector<bool> Expected(const nlohmann::json& ranges) {
  std::vector<bool> in(0x110000, false);
  for (const auto& r : ranges) {
    for (uint32_t c = r[0].get<uint32_t>(); c <= r[1].get<uint32_t>(); ++c) in[c] = true;
  }
  return in;
}

int Mismatches(const std::vector<bool>& got, const std::vector<bool>& want, bool complement,
               std::string* first) {
  int n = 0;
  for (uint32_t c = 0; c < 0x110000; ++c) {
    if (c >= 0xD800 && c <= 0xDFFF) continue;
    if (got[c] != (want[c] != complement)) {
      if (n++ < 5) absl::StrAppend(first, " U+", absl::Hex(c));
    }
  }
  return n;
}

// The translated classes match exactly the code points the library's Oniguruma matches, inside
// and outside brackets and negated; only classes PCRE2 has surplus members for are inexact.
TEST(TokenizerRegexTest, UnicodeClassesMatchOniguruma) {
  nlohmann::json dump =
      ReadJson(testing::SourceFile("tests/tokenizer/testdata/oniguruma_classes.json"));
  ASSERT_TRUE(dump.is_object());
  const std::set<std::string> inexact = {"Mn", "C", "Cn"};
  int checked = 0;
  for (const auto& [name, ranges] : dump["classes"].items()) {
    const std::vector<bool> want = Expected(ranges);
    std::string first;
    if (name == "s" || name == "w") {
      EXPECT_EQ(Mismatches(Members(absl::StrCat("\\", name, "+")), want, false, &first), 0)
          << "\\" << name << first;
      EXPECT_EQ(Mismatches(Members(absl::StrCat("[\\", name, "]+")), want, false, &first), 0)
          << "[\\" << name << "]" << first;
      const std::string upper = name == "s" ? "S" : "W";
      EXPECT_EQ(Mismatches(Members(absl::StrCat("\\", upper, "+")), want, true, &first), 0)
          << "\\" << upper << first;
      ++checked;
      continue;
    }
    const int outside = Mismatches(Members(absl::StrCat("\\p{", name, "}+")), want, false, &first);
    const int inside =
        Mismatches(Members(absl::StrCat("[x\\p{", name, "}]+")), want, false, &first);
    const int negated = Mismatches(Members(absl::StrCat("\\P{", name, "}+")), want, true, &first);
    if (inexact.count(name)) {
      EXPECT_GT(outside, 0) << name << " became exact: update the inexact list";
      continue;
    }
    // "[x\p{..}]" adds x; discount it.
    EXPECT_EQ(outside, 0) << "\\p{" << name << "}" << first;
    EXPECT_EQ(inside - (want['x'] ? 0 : 1), 0) << "[\\p{" << name << "}]" << first;
    EXPECT_EQ(negated, 0) << "\\P{" << name << "}" << first;
    ++checked;
  }
  EXPECT_GE(checked, 35);
}

TEST(TokenizerRegexTest, OnigurumaProbes) {
  const auto& o = Probes()["oniguruma"];
  auto whole_match = [](const std::string& pattern, const std::string& text) {
    auto re = OnigRegex::Compile(pattern);
    EXPECT_TRUE(re.ok()) << re.status();
    auto m = (*re)->FindAll(text).value();
    return m.size() == 1 && m[0].first == 0 && m[0].second == text.size();
  };
  for (const auto& [hex, expected] : o["onig_backslash_s"].items()) {
    EXPECT_EQ(whole_match("\\s", FromHexCodepoints(hex)), expected.get<bool>()) << hex;
  }
  for (const auto& [key, expected] : o["onig_pL"].items()) {
    const std::string hex = key.substr(0, key.find('_'));
    EXPECT_EQ(whole_match("\\p{L}", FromHexCodepoints(hex)), expected.get<bool>()) << key;
  }
  // Case-insensitive contractions fold like Oniguruma: 'ſ (long s) and the Kelvin sign.
  const std::string contractions = "(?i:'s|'t|'re|'ve|'m|'ll|'d)";
  EXPECT_TRUE(whole_match(contractions, "'\xC5\xBF"));
  EXPECT_TRUE(whole_match(contractions, "'S"));
  EXPECT_TRUE(whole_match("(?i:k)", "\xE2\x84\xAA"));
  // ^ and $ are line anchors (LF only).
  for (const auto& [text, expected] : o["anchors"].items()) {
    auto re = OnigRegex::Compile("^ $");
    std::string out;
    size_t last = 0;
    const std::vector<tokenizer_internal::MatchRange> matches = (*re)->FindAll(text).value();
    for (const auto& [b, e] : matches) {
      out += text.substr(last, b - last) + "X";
      last = e;
    }
    out += text.substr(last);
    EXPECT_EQ(out, expected.get<std::string>()) << Codepoints(text);
  }
}

TEST(TokenizerRegexTest, TranslationRules) {
  std::vector<std::string> warnings;
  EXPECT_EQ(tokenizer_internal::TranslateOnigPattern(R"(\s+(?!\S))", &warnings).value(),
            R"([\p{White_Space}]+(?![^\p{White_Space}]))");
  EXPECT_EQ(tokenizer_internal::TranslateOnigPattern(R"([^\s\h])", &warnings).value(),
            R"([^\p{White_Space}0-9a-fA-F])");
  EXPECT_EQ(tokenizer_internal::TranslateOnigPattern(R"((?m:.)\u00e9)", &warnings).value(),
            R"((?s:.)\x{00e9})");
  EXPECT_TRUE(warnings.empty());
  EXPECT_FALSE(tokenizer_internal::TranslateOnigPattern("[a[b]]", &warnings).ok());
  EXPECT_FALSE(tokenizer_internal::TranslateOnigPattern("[a-z&&[^c]]", &warnings).ok());
  EXPECT_FALSE(tokenizer_internal::TranslateOnigPattern("[^\\W]", &warnings).ok());
  // \P{L} inside a class cannot take the newer letters out: kept, with a warning.
  EXPECT_TRUE(tokenizer_internal::TranslateOnigPattern("[\\P{L}]", &warnings).ok());
  EXPECT_EQ(warnings.size(), 1u);
  // Literal patterns escape every metacharacter.
  auto literal = OnigRegex::Literal("a.*(b)[c]$^|?+{2}\\");
  ASSERT_TRUE(literal.ok()) << literal.status();
  auto m = (*literal)->FindAll("xa.*(b)[c]$^|?+{2}\\y").value();
  ASSERT_EQ(m.size(), 1u);
  EXPECT_EQ(m[0], tokenizer_internal::MatchRange(1, 19));
}

TEST(TokenizerUtf8Test, LossyDecodeCases) {
  const auto& cases = Probes()["bytelevel_decode_cases"];
  ASSERT_GT(cases.size(), 10u);
  for (const auto& c : cases) {
    std::string bytes;
    for (const auto& chunk : c["bytes"]) {
      const std::string hex = chunk.get<std::string>();
      for (size_t i = 0; i + 1 < hex.size(); i += 2) {
        int b = 0;
        ASSERT_TRUE(absl::SimpleHexAtoi(hex.substr(i, 2), &b));
        bytes.push_back(static_cast<char>(b));
      }
    }
    EXPECT_EQ(Codepoints(tokenizer_internal::Utf8Lossy(bytes)),
              Codepoints(FromHexCodepoints(c["got"].get<std::string>())))
        << c["bytes"];
  }
}

TEST(TokenizerUtf8Test, ByteLevelAlphabet) {
  const auto& a = tokenizer_internal::ByteLevelAlphabet();
  EXPECT_EQ(a[0x00], "\xC4\x80");  // U+0100
  EXPECT_EQ(a[0x0A], "\xC4\x8A");  // Ċ
  EXPECT_EQ(a[0x20], "\xC4\xA0");  // Ġ
  EXPECT_EQ(a[0x7F], "\xC4\xA1");  // U+0121
  EXPECT_EQ(a[0xA0], "\xC5\x82");  // U+0142
  EXPECT_EQ(a[0xAD], "\xC5\x83");  // U+0143
  EXPECT_EQ(a['a'], "a");
  for (int b = 0; b < 256; ++b) {
    size_t pos = 0;
    EXPECT_EQ(tokenizer_internal::ByteLevelByte(tokenizer_internal::NextCodepoint(a[b], &pos)), b);
  }
}

TEST(TokenizerComponentsTest, ByteLevelDecoderMixedTokens) {
  const auto& probe = Probes()["bytelevel_decode_mixed_tokens"];
  nlohmann::json vocab = nlohmann::json::object();
  std::vector<uint32_t> ids;
  for (const auto& token : probe["tokens"]) {
    ids.push_back(static_cast<uint32_t>(vocab.size()));
    vocab[token.get<std::string>()] = vocab.size();
  }
  nlohmann::json file = {
      {"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", nlohmann::json::array()}}},
      {"decoder", {{"type", "ByteLevel"}}}};
  auto t = Tokenizer::FromJson(file.dump());
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ((*t)->Decode(ids), probe["decoded"].get<std::string>());
}

TEST(TokenizerComponentsTest, AddedTokenIdsFollowTheLibraryRule) {
  const std::string json_7_9 = R"({"added_tokens": [
      {"id": 7, "content": "<x>", "special": true, "normalized": false},
      {"id": 9, "content": "<y>", "special": true, "normalized": false}],
    "model": {"type": "BPE", "vocab": {"a": 0, "b": 1}, "merges": []}})";
  absl::StatusOr<std::unique_ptr<Tokenizer>> bad = Tokenizer::FromJson(json_7_9);
  ASSERT_FALSE(bad.ok());
  // The library would have loaded them as 2 and 3 (probe json_ids_7_9_became).
  const auto became = Probes()["added_tokens"]["json_ids_7_9_became"];
  EXPECT_TRUE(absl::StrContains(bad.status().message(),
                                absl::StrCat("assigns it id ", became[0].get<int>())))
      << bad.status();
  std::string fixed = json_7_9;
  fixed.replace(fixed.find("\"id\": 7"), 7, absl::StrCat("\"id\": ", became[0].get<int>()));
  fixed.replace(fixed.find("\"id\": 9"), 7, absl::StrCat("\"id\": ", became[1].get<int>()));
  absl::StatusOr<std::unique_ptr<Tokenizer>> good = Tokenizer::FromJson(fixed);
  ASSERT_TRUE(good.ok()) << good.status();
  EXPECT_EQ((*good)->Encode("a<y>b<x>").value(), (std::vector<uint32_t>{0, 3, 1, 2}));
  EXPECT_EQ((*good)->size(), 4u);
  EXPECT_EQ((*good)->SpecialTokenId("<y>"), 3u);
}

TEST(TokenizerComponentsTest, MalformedFilesGetClearErrors) {
  const std::string model =
      R"("model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": ["a b"]})";
  const std::pair<std::string, std::string> cases[] = {
      {"{", "malformed tokenizer.json"},
      {"[1, 2]", "must be an object"},
      {"{}", "model: missing"},
      {absl::StrCat(R"({"version": "2.0", )", model, "}"), "unknown version"},
      {R"({"model": {"type": "WordPiece", "vocab": {}}})", "unsupported model"},
      {R"({"model": {"type": "BPE", "vocab": [1], "merges": []}})", "model.vocab"},
      {R"({"model": {"type": "BPE", "vocab": {"a": -1}, "merges": []}})", "token id"},
      {R"({"model": {"type": "BPE", "vocab": {"a": "x"}, "merges": []}})", "token id"},
      {R"({"model": {"type": "BPE", "vocab": {"a": 0, "b": 0}, "merges": []}})", "used by both"},
      // Found by tokenizer_json_fuzz: a 3.5 KB file naming id 64,444,445 took 2 GB and 30 s.
      {R"({"model": {"type": "BPE", "vocab": {"a": 0, "b": 64444445}, "merges": []}})",
       "id 64444445 is above the supported 4194303"},
      {R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": ["a c"]}})",
       "\"c\" is not in the vocab"},
      {R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": ["a a a"]}})",
       "exactly one space"},
      {R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": [1]}})", "model.merges[0]"},
      {R"({"model": {"type": "BPE", "dropout": 0.1, "vocab": {"a": 0}, "merges": []}})", "dropout"},
      {R"({"model": {"type": "BPE", "vocab": {}, "merges": []}})", "empty"},
      {absl::StrCat(R"({"pre_tokenizer": {"type": "Whitespace"}, )", model, "}"),
       "unsupported pre-tokenizer"},
      {absl::StrCat(
           R"({"pre_tokenizer": {"type": "Split", "pattern": {"Regex": "("}, "behavior": "Isolated", "invert": false}, )",
           model, "}"),
       "does not compile"},
      {absl::StrCat(
           R"({"pre_tokenizer": {"type": "Split", "pattern": {"Regex": "a"}, "behavior": "Sideways", "invert": false}, )",
           model, "}"),
       "unknown behavior"},
      {absl::StrCat(
           R"({"pre_tokenizer": {"type": "Split", "pattern": "a", "behavior": "Isolated"}, )",
           model, "}"),
       "pre_tokenizer.pattern"},
      {absl::StrCat(R"({"normalizer": {"type": "BertNormalizer"}, )", model, "}"),
       "unsupported normalizer"},
      {absl::StrCat(
           R"({"normalizer": {"type": "Sequence", "normalizers": [{"type": "Replace", "pattern": {"String": "a"}}]}, )",
           model, "}"),
       "normalizer.normalizers[0].content"},
      {absl::StrCat(R"({"decoder": {"type": "WordPiece"}, )", model, "}"), "unsupported decoder"},
      {absl::StrCat(
           R"({"post_processor": {"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<s>"}}], "special_tokens": {}}, )",
           model, "}"),
       "\"<s>\" has no ids"},
      {absl::StrCat(R"({"added_tokens": [{"id": 3}], )", model, "}"), "added_tokens[0].content"},
      {absl::StrCat(R"({"added_tokens": [{"id": 5, "content": "<s>"}], )", model, "}"),
       "assigns it id 3"},
      {absl::StrCat(R"({"added_tokens": [{"id": 3, "content": "<s>", "special": "yes"}], )", model,
                    "}"),
       "added_tokens[0].special"},
  };
  for (const auto& [json, needle] : cases) {
    absl::StatusOr<std::unique_ptr<Tokenizer>> t = Tokenizer::FromJson(json);
    ASSERT_FALSE(t.ok()) << json;
    EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument) << json;
    EXPECT_TRUE(absl::StrContains(t.status().message(), needle))
        << "want \"" << needle << "\" in: " << t.status().message();
  }
  absl::StatusOr<std::unique_ptr<Tokenizer>> missing =
      Tokenizer::FromFile("/nonexistent/tokenizer.json");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(absl::StrContains(missing.status().message(), "/nonexistent/tokenizer.json"));
}

// Vocab ids may leave gaps; memory follows the entries, and decode and max_id see the sparse id.
TEST(TokenizerComponentsTest, SparseVocabIdsLoadAndDecode) {
  absl::StatusOr<std::unique_ptr<Tokenizer>> t = Tokenizer::FromJson(
      R"({"model": {"type": "BPE", "vocab": {"a": 0, "b": 4194303, "ab": 7}, "merges": ["a b"]}})");
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ((*t)->max_id(), 4194303u);
  absl::StatusOr<std::vector<uint32_t>> ids = (*t)->Encode("ab");
  ASSERT_TRUE(ids.ok()) << ids.status();
  EXPECT_EQ(*ids, std::vector<uint32_t>{7});
  EXPECT_EQ((*t)->Decode({7, 4194303, 0}), "ab b a");  // no decoder: tokens joined by spaces
}

TEST(TokenizerComponentsTest, UnkTokenOutsideTheVocabFailsOnlyWhenNeeded) {
  auto t = Tokenizer::FromJson(
      R"({"model": {"type": "BPE", "unk_token": "<unk>", "vocab": {"a": 0}, "merges": []}})");
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ((*t)->Encode("aa").value(), (std::vector<uint32_t>{0, 0}));
  absl::StatusOr<std::vector<uint32_t>> unknown = (*t)->Encode("ab");
  EXPECT_FALSE(unknown.ok());
  EXPECT_TRUE(absl::StrContains(unknown.status().message(), "<unk>")) << unknown.status();
}

}  // namespace
}  // namespace engram
