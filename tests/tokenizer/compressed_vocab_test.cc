// The compressed token map against the reference CompressedTokenizer, built with Hugging Face
// tokenizers/transformers by tests/tokenizer/gen_hf_goldens.py
// (testdata/compressed_map_reference.json: V', CRC-32C of the int64 lookup over
// range(len(tokenizer)), the first 64 entries and the largest classes), plus the rules on small
// hand-made vocabularies.
#include "model/compressed_vocab.h"

#include <algorithm>
#include <map>
#include <string>
#include <vector>

#include "common/crc32c.h"
#include "gtest/gtest.h"
#include "tests/tokenizer/test_data.h"

namespace engram {
namespace {

const nlohmann::json& Reference() {
  static const auto* r = new nlohmann::json(testing::ReadJson(
      testing::SourceFile("tests/tokenizer/testdata/compressed_map_reference.json")));
  return *r;
}

uint32_t LookupCrc(const std::vector<int64_t>& lookup) {
  // Little-endian int64, as numpy's lookup array is laid out.
  return Crc32c(0, lookup.data(), lookup.size() * sizeof(int64_t));
}

// Class sizes, largest first.
std::vector<int> ClassSizes(const std::vector<int64_t>& lookup) {
  std::map<int64_t, int> count;
  for (int64_t v : lookup) count[v]++;
  std::vector<int> sizes;
  for (const auto& [k, n] : count) sizes.push_back(n);
  std::sort(sizes.rbegin(), sizes.rend());
  return sizes;
}

// Keys are numbered by first appearance: each id is at most one above every id before it.
void ExpectFirstAppearanceNumbering(const std::vector<int64_t>& lookup) {
  int64_t next = 0;
  for (size_t id = 0; id < lookup.size(); ++id) {
    ASSERT_LE(lookup[id], next) << "id " << id;
    if (lookup[id] == next) ++next;
  }
}

TEST(CompressedVocabTest, Gpt2MatchesTheReference) {
  const Tokenizer* t = testing::Gpt2();
  ASSERT_NE(t, nullptr);
  const auto& ref = Reference()["gpt2"];
  ASSERT_TRUE(ref.is_object());
  absl::StatusOr<CompressedTokenMap> map = BuildCompressedTokenMap(*t);
  ASSERT_TRUE(map.ok()) << map.status();
  ASSERT_EQ(ref["len_tokenizer"].get<size_t>(), t->size());
  EXPECT_EQ(map->size, ref["size"].get<int64_t>());
  EXPECT_EQ(map->size, 32962);  // V' of GPT-2, also derived in docs/tokenizer.md
  ASSERT_EQ(map->lookup.size(), 50257u);
  EXPECT_EQ(LookupCrc(map->lookup), ref["lookup_crc32c"].get<uint32_t>());
  EXPECT_EQ(std::vector<int64_t>(map->lookup.begin(), map->lookup.begin() + 64),
            ref["first_64"].get<std::vector<int64_t>>());
  const std::vector<int> sizes = ClassSizes(map->lookup);
  for (size_t i = 0; i < ref["largest_classes"].size(); ++i) {
    EXPECT_EQ(sizes[i], ref["largest_classes"][i]["ids"].get<int>()) << i;
  }
  ExpectFirstAppearanceNumbering(map->lookup);

  // The largest class is the whitespace tokens (key " "): " ", "\n" and "\n\n" share it.
  const std::optional<uint32_t> space_id = t->TokenToId("\xC4\xA0");  // "Ġ"
  const std::optional<uint32_t> newline = t->TokenToId("\xC4\x8A");   // "Ċ"
  const std::optional<uint32_t> newlines = t->TokenToId("\xC4\x8A\xC4\x8A");
  const std::optional<uint32_t> apple = t->TokenToId("Apple");
  const std::optional<uint32_t> space_apple = t->TokenToId(
      "\xC4\xA0"
      "apple");
  ASSERT_TRUE(space_id && newline && newlines && apple && space_apple);
  const int64_t space = map->Map(*space_id);
  EXPECT_EQ(std::count(map->lookup.begin(), map->lookup.end(), space), sizes[0]);
  EXPECT_EQ(map->Map(*newline), space);
  EXPECT_EQ(map->Map(*newlines), space);
  // Case and a leading space do not matter: "Apple" and " apple".
  EXPECT_EQ(map->Map(*apple), map->Map(*space_apple));
  // U+FFFD rule: partial-UTF-8 tokens all decode to "\uFFFD" but keep distinct raw-string keys,
  // as does the token that literally encodes U+FFFD (id 4210).
  const uint32_t one[1] = {94};
  ASSERT_EQ(t->Decode(one), "\xEF\xBF\xBD");
  EXPECT_NE(map->Map(94), map->Map(95));
  EXPECT_NE(map->Map(94), map->Map(4210));
  // The special token is included and is a class of its own.
  EXPECT_EQ(std::count(map->lookup.begin(), map->lookup.end(), map->Map(50256)), 1);
  // Negative ids pass through; ids past the table map to -1.
  EXPECT_EQ(map->Map(-1), -1);
  EXPECT_EQ(map->Map(-7), -7);
  EXPECT_EQ(map->Map(50257), -1);
}

TEST(CompressedVocabTest, Cl100kMatchesTheReference) {
  const Tokenizer* t = testing::Gpt4();
  ASSERT_NE(t, nullptr);
  const auto& ref = Reference()["gpt4"];
  absl::StatusOr<CompressedTokenMap> map = BuildCompressedTokenMap(*t);
  ASSERT_TRUE(map.ok()) << map.status();
  const size_t n = t->size();
  ASSERT_EQ(ref["len_tokenizer"].get<size_t>(), n);
  EXPECT_EQ(map->size, ref["size"].get<int64_t>());
  EXPECT_EQ(map->size, 62330);  // V' of cl100k
  ASSERT_EQ(map->lookup.size(), static_cast<size_t>(t->max_id()) + 1);
  // The reference's table covers range(len(tokenizer)) and gives the unassigned ids in it the key
  // "", first seen at id 100256, i.e. the next new number after every id below it.
  const int64_t empty_key =
      1 + *std::max_element(map->lookup.begin(), map->lookup.begin() + 100256);
  std::vector<int64_t> reference_form(map->lookup.begin(), map->lookup.begin() + n);
  int unassigned = 0;
  for (size_t id = 0; id < n; ++id) {
    if (!t->IsValidId(static_cast<uint32_t>(id))) {
      EXPECT_EQ(map->lookup[id], -1) << id;
      reference_form[id] = empty_key;
      ++unassigned;
    }
  }
  EXPECT_EQ(unassigned, 3);  // 100256, 100261, 100262
  EXPECT_EQ(LookupCrc(reference_form), ref["lookup_crc32c"].get<uint32_t>());
  EXPECT_EQ(std::vector<int64_t>(reference_form.begin(), reference_form.begin() + 64),
            ref["first_64"].get<std::vector<int64_t>>());
  const std::vector<int> sizes = ClassSizes(reference_form);
  for (size_t i = 0; i < ref["largest_classes"].size(); ++i) {
    EXPECT_EQ(sizes[i], ref["largest_classes"][i]["ids"].get<int>()) << i;
  }
  ExpectFirstAppearanceNumbering(reference_form);
  // Specials inside the reference range are classes of their own; the three above it
  // (<|im_start|>, <|im_end|>, <|endofprompt|>) have keys the reference never numbered and share
  // the bucket of the unassigned ids.
  for (uint32_t id : {100257u, 100258u, 100259u, 100260u}) {
    EXPECT_EQ(std::count(map->lookup.begin(), map->lookup.end(), map->Map(id)), 1) << id;
  }
  for (uint32_t id : {100264u, 100265u, 100276u}) EXPECT_EQ(map->Map(id), empty_key) << id;
  for (uint32_t id = 100266; id < 100276; ++id) EXPECT_EQ(map->Map(id), -1) << id;
  for (int64_t v : map->lookup) EXPECT_LT(v, map->size);
}

std::unique_ptr<Tokenizer> Small(const std::string& vocab, const std::string& added = "[]") {
  auto t = Tokenizer::FromJson(R"({"added_tokens": )" + added +
                               R"(, "model": {"type": "BPE", "merges": [], "vocab": )" + vocab +
                               R"(}, "decoder": {"type": "ByteLevel"}})");
  EXPECT_TRUE(t.ok()) << t.status();
  return t.ok() ? *std::move(t) : nullptr;
}

TEST(CompressedVocabTest, RulesOnSmallVocabularies) {
  // Normalisation merges, first appearance numbers; lone space and whitespace runs share " ",
  // a token that normalises to "" keeps its text ("\v" stays "\v"), special tokens count.
  auto t = Small(R"({"B": 0, "b": 1, "\u0120B": 2, "\u0120": 3, "\u0120\u0120": 4, "\u010b": 5,
                     "\u010a": 6, "\u00c3\u00a9": 7, "e": 8, "<s>": 9})",
                 R"([{"id": 9, "content": "<s>", "special": true, "normalized": false}])");
  ASSERT_NE(t, nullptr);
  auto map = BuildCompressedTokenMap(*t);
  ASSERT_TRUE(map.ok()) << map.status();
  EXPECT_EQ(map->lookup, (std::vector<int64_t>{0, 0, 0, 1, 1, 2, 1, 3, 3, 4}));
  EXPECT_EQ(map->size, 5);

  // A hole below len(tokenizer) (id 2) and an id above it (3): the hole takes the key "" (counted
  // in V', -1 in lookup); id 3 takes the class of its key "b".
  auto holes = Small(R"({"a": 0, "b": 1, "B": 3})");
  ASSERT_NE(holes, nullptr);
  map = BuildCompressedTokenMap(*holes);
  ASSERT_TRUE(map.ok()) << map.status();
  EXPECT_EQ(map->lookup, (std::vector<int64_t>{0, 1, -1, 1}));
  EXPECT_EQ(map->size, 3);
  // An id above len(tokenizer) whose key is new shares the bucket of the unassigned ids.
  auto above = Small(R"({"a": 0, "<x>": 2})");
  ASSERT_NE(above, nullptr);
  map = BuildCompressedTokenMap(*above);
  ASSERT_TRUE(map.ok()) << map.status();
  EXPECT_EQ(map->lookup, (std::vector<int64_t>{0, -1, 1}));
  EXPECT_EQ(map->size, 2);
}

}  // namespace
}  // namespace engram
