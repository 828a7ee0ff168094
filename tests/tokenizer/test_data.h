// Locating and loading the tokenizer test data. Missing data is a test failure (never a skip),
// with a message that says how to get it.
#ifndef ENGRAM_TESTS_TOKENIZER_TEST_DATA_H_
#define ENGRAM_TESTS_TOKENIZER_TEST_DATA_H_

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "gtest/gtest.h"
#include "model/tokenizer.h"
#include "model/tokenizer_utf8.h"
#include "nlohmann/json.hpp"
#include "tests/common/test_paths.h"

namespace engram::testing {

// ADD_FAILURE naming the missing test data and how to get it.
inline void AddMissingTestDataFailure(const std::string& path) {
  ADD_FAILURE() << "missing test data " << path
                << " (run scripts/fetch-testdata.sh for .cache/testdata; tests/vectors and "
                   "tests/tokenizer/testdata are part of the checkout)";
}

// Whether `path` is readable; ADD_FAILURE with how to get it when it is not.
inline bool HaveTestData(const std::string& path) {
  if (std::ifstream(path, std::ios::binary)) return true;
  AddMissingTestDataFailure(path);
  return false;
}

// Reads a whole file; ADD_FAILURE with how to get it when it is missing.
inline bool ReadFile(const std::string& path, std::string* out) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    AddMissingTestDataFailure(path);
    return false;
  }
  std::stringstream buffer;
  buffer << in.rdbuf();
  *out = buffer.str();
  return true;
}

inline nlohmann::json ReadJson(const std::string& path) {
  std::string text;
  if (!ReadFile(path, &text)) return nlohmann::json();
  nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) ADD_FAILURE() << "malformed JSON in " << path;
  return j;
}

// The GPT-2 and cl100k tokenizers, loaded once per test binary.
inline const Tokenizer* LoadShared(const std::string& path) {
  static auto* cache = new std::map<std::string, std::unique_ptr<Tokenizer>>();
  auto it = cache->find(path);
  if (it != cache->end()) return it->second.get();
  std::string text;
  if (!ReadFile(path, &text)) return nullptr;
  absl::StatusOr<std::unique_ptr<Tokenizer>> t = Tokenizer::FromJson(text);
  if (!t.ok()) {
    ADD_FAILURE() << path << ": " << t.status();
    return nullptr;
  }
  const Tokenizer* loaded = t->get();
  (*cache)[path] = *std::move(t);
  return loaded;
}
inline const Tokenizer* Gpt2() { return LoadShared(Gpt2Path()); }
inline const Tokenizer* Gpt4() { return LoadShared(Gpt4Path()); }

// "41 2C733" -> UTF-8 of U+0041 U+2C733.
inline std::string FromHexCodepoints(const std::string& hex) {
  std::string out;
  for (absl::string_view part : absl::StrSplit(hex, ' ', absl::SkipEmpty())) {
    uint32_t cp = 0;
    if (!absl::SimpleHexAtoi(part, &cp)) ADD_FAILURE() << "bad hex " << part;
    tokenizer_internal::AppendUtf8(cp, &out);
  }
  return out;
}

// UTF-8 -> "U+0041 U+00E9" for readable failure messages.
inline std::string Codepoints(absl::string_view text) {
  std::string out;
  size_t pos = 0;
  while (pos < text.size()) {
    if (!out.empty()) out += ' ';
    char buf[16];
    std::snprintf(buf, sizeof(buf), "U+%04X",
                  static_cast<unsigned>(tokenizer_internal::NextCodepoint(text, &pos)));
    out += buf;
  }
  return out;
}

// A byte-level piece as the pre-tokenizer returns it -> the bytes of the text it stands for.
inline std::string ByteLevelToText(const std::string& piece) {
  std::string bytes;
  tokenizer_internal::AppendByteLevelDecoded(piece, &bytes);
  return bytes;
}

inline std::vector<uint32_t> Ids(const nlohmann::json& array) {
  std::vector<uint32_t> ids;
  for (const auto& v : array) ids.push_back(v.get<uint32_t>());
  return ids;
}

}  // namespace engram::testing

#endif  // ENGRAM_TESTS_TOKENIZER_TEST_DATA_H_
