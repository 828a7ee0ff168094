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

namespace engram::testing {

inline std::string EnvDir(const char* name, const char* fallback) {
  const char* v = std::getenv(name);
  return v != nullptr && *v != '\0' ? v : fallback;
}

inline std::string SharedVectors(const std::string& file) {
  return EnvDir("ENGRAM_SHARED_DIR", "../shared") + "/reference/vectors/" + file;
}
inline std::string TestData(const std::string& file) {
  return EnvDir("ENGRAM_TESTDATA_DIR", ".cache/testdata") + "/" + file;
}
inline std::string SourceFile(const std::string& file) {
  return EnvDir("ENGRAM_SOURCE_DIR", ".") + "/" + file;
}
inline std::string Gpt2Path() { return TestData("tokenizer-gpt2/package/models/tokenizer.json"); }
inline std::string Gpt4Path() { return TestData("tokenizer-gpt4/package/models/tokenizer.json"); }

// Reads a whole file; ADD_FAILURE with how to get it when it is missing.
inline bool ReadFile(const std::string& path, std::string* out) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    ADD_FAILURE() << "missing test data " << path
                  << " (run scripts/fetch-testdata.sh for .cache/testdata; ../shared must sit "
                     "beside the checkout)";
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

inline std::vector<uint32_t> Ids(const nlohmann::json& array) {
  std::vector<uint32_t> ids;
  for (const auto& v : array) ids.push_back(v.get<uint32_t>());
  return ids;
}

}  // namespace engram::testing

#endif  // ENGRAM_TESTS_TOKENIZER_TEST_DATA_H_
