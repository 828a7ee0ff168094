// EngramNormalize against the library's own outputs: the hand-picked pairs and, exhaustively, every
// code point (the file lists the ones that change) plus 3,000 random mark-heavy strings.
#include "model/engram_normalizer.h"

#include <string>

#include "absl/strings/numbers.h"
#include "gtest/gtest.h"
#include "tests/tokenizer/test_data.h"

namespace engram {
namespace {

using testing::Codepoints;
using testing::FromHexCodepoints;

TEST(EngramNormalizerTest, Vectors) {
  nlohmann::json v = testing::ReadJson(testing::VectorFile("engram_normalizer_vectors.json"));
  ASSERT_TRUE(v.is_array());
  ASSERT_GT(v.size(), 40u);
  for (const auto& c : v) {
    const std::string in = c["in"].get<std::string>();
    EXPECT_EQ(Codepoints(EngramNormalize(in)), Codepoints(c["out"].get<std::string>()))
        << Codepoints(in);
  }
}

TEST(EngramNormalizerTest, EveryCodepointAndRandomStrings) {
  nlohmann::json v = testing::ReadJson(testing::VectorFile("engram_normalizer_codepoints.json"));
  ASSERT_TRUE(v.is_object());
  const auto& changed = v["single_codepoints_non_identity"];
  ASSERT_GT(changed.size(), 19000u);
  int mismatches = 0;
  for (char32_t c = 0; c < 0x110000; ++c) {
    if (c >= 0xD800 && c <= 0xDFFF) continue;
    char hex[16];
    std::snprintf(hex, sizeof(hex), "%X", static_cast<unsigned>(c));
    std::string in;
    tokenizer_internal::AppendUtf8(c, &in);
    auto it = changed.find(hex);
    const std::string want = it == changed.end() ? in : FromHexCodepoints(it->get<std::string>());
    const std::string got = EngramNormalize(in);
    if (got != want && ++mismatches <= 20) {
      ADD_FAILURE() << "U+" << hex << ": got " << Codepoints(got) << ", want " << Codepoints(want);
    }
  }
  EXPECT_EQ(mismatches, 0);
  const auto& random = v["random_strings"];
  ASSERT_EQ(random.size(), 3000u);
  for (const auto& pair : random) {
    const std::string in = FromHexCodepoints(pair[0].get<std::string>());
    EXPECT_EQ(Codepoints(EngramNormalize(in)),
              Codepoints(FromHexCodepoints(pair[1].get<std::string>())))
        << pair[0];
  }
}

TEST(EngramNormalizerTest, StepsOnTheirOwn) {
  EXPECT_EQ(HfLowercase("\xCE\xA3\xCE\x91\xCE\xA3"), "\xCF\x83\xCE\xB1\xCF\x83");  // no final sigma
  EXPECT_EQ(HfLowercase("\xE1\xBA\x9E"), "\xC3\x9F");                              // ẞ -> ß
  EXPECT_EQ(HfLowercase("\xC3\x9F"), "\xC3\x9F");                                  // ß stays
  EXPECT_EQ(
      HfStripAccents("\xE0\xA4\xB9\xE0\xA4\xBF\xE0\xA4\xA8\xE0\xA5\x8D\xE0\xA4\xA6\xE0\xA5\x80"),
      "\xE0\xA4\xB9\xE0\xA4\xA8\xE0\xA4\xA6");  // Mc vowel signs go too: हिन्दी -> हनद
  EXPECT_EQ(HfStrip(" \xE3\x80\x80x\xE2\x80\xA8 ", true, false), "x\xE2\x80\xA8 ");
  EXPECT_EQ(HfNormalize(NormalForm::kNfkc, "\xEF\xAC\x81"), "fi");
  // Post-9.0 compatibility characters are left alone (U+A7F2 would become C under Unicode 15).
  EXPECT_EQ(HfNormalize(NormalForm::kNfkc, "\xEA\x9F\xB2"), "\xEA\x9F\xB2");
  EXPECT_TRUE(IsUnicodeWhiteSpace(0x85));
  EXPECT_FALSE(IsUnicodeWhiteSpace(0x180E));
  EXPECT_FALSE(IsUnicodeWhiteSpace(0x200B));
  // Invalid UTF-8 is decoded lossily first, never rejected.
  EXPECT_EQ(EngramNormalize("A\xFF"), "a\xEF\xBF\xBD");
}

}  // namespace
}  // namespace engram
