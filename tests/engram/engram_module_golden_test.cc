// Golden test: `engram check-module` logic on each committed reference file of
// tests/golden/engram_module/ (written once by generate.py with PyTorch + numpy): compressed ids,
// hash ids (bit-exact), row ids, gather and module output (atol + rtol), for hc_mult 1 and 4,
// with and without the conv, f32 / bf16 / f64 files. Also checks that the comparison is not
// vacuous (a perturbed output is caught) and that bad input is refused with a clear error.
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>

#include "common/safetensors.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "model/engram_module_check.h"
#include "tests/common/rewrite_safetensors.h"
#include "tests/common/temp_dir.h"
#include "tests/common/test_paths.h"

namespace engram {
namespace {

using ::testing::HasSubstr;

using testing::Gpt2Path;
using testing::TempDir;

std::string GoldenDir() { return testing::SourceFile("tests/golden/engram_module"); }

class GoldenFiles : public ::testing::TestWithParam<const char*> {
 protected:
  void SetUp() override {
    ASSERT_TRUE(std::filesystem::exists(Gpt2Path()))
        << Gpt2Path() << " is missing: run scripts/fetch-testdata.sh";
  }
};

TEST_P(GoldenFiles, MatchesTheReference) {
  const std::string path = GoldenDir() + "/" + GetParam() + ".safetensors";
  EngramModuleCheckOptions options;
  options.tokenizer_path = Gpt2Path();
  auto result = CheckEngramModuleFile(path, options);
  ASSERT_TRUE(result.ok()) << result.status();
  SCOPED_TRACE(result->Summary());
  EXPECT_TRUE(result->hash_ids_checked);
  EXPECT_GT(result->columns, 0);
  EXPECT_EQ(result->hash_ids_compared, int64_t{result->batch} * result->length * result->columns);
  EXPECT_EQ(result->hash_id_mismatches, 0) << result->first_hash_mismatch;
  EXPECT_EQ(result->values_compared,
            int64_t{result->batch} * result->length * result->hc_mult * result->hidden_size);
  EXPECT_EQ(result->output_mismatches, 0) << result->first_output_mismatch;
  EXPECT_LT(result->max_abs_error, 1e-4);
  EXPECT_TRUE(result->passed());
}

INSTANTIATE_TEST_SUITE_P(EngramModule, GoldenFiles,
                         ::testing::Values("hc1_conv_bf16", "hc1_noconv_f32", "hc4_conv_f32",
                                           "hc4_noconv_f64"));

// Copies `from` to tmp/name.
std::string CopyToTemp(const TempDir& tmp, const std::string& from, const std::string& name) {
  const std::string to = tmp.path() + "/" + name;
  std::filesystem::copy_file(from, to, std::filesystem::copy_options::overwrite_existing);
  return to;
}

TEST(GoldenCheck, CatchesAPerturbedOutputValue) {
  ASSERT_TRUE(std::filesystem::exists(Gpt2Path()));
  const std::string golden = GoldenDir() + "/hc4_conv_f32.safetensors";
  uint64_t offset = 0;
  float value = 0;
  {
    auto file = SafetensorsFile::Open(golden);
    ASSERT_TRUE(file.ok()) << file.status();
    auto out = (*file)->Get("io.output");
    ASSERT_TRUE(out.ok());
    ASSERT_EQ((*out)->dtype, DType::kF32);
    offset = (*out)->file_offset + 17 * sizeof(float);
    std::memcpy(&value, (*out)->data + 17 * sizeof(float), sizeof(float));
  }
  TempDir tmp;
  const std::string copy = CopyToTemp(tmp, golden, "perturbed.safetensors");
  {
    std::fstream f(copy, std::ios::in | std::ios::out | std::ios::binary);
    const float changed = value + 0.01f;
    f.seekp(static_cast<std::streamoff>(offset));
    f.write(reinterpret_cast<const char*>(&changed), sizeof(changed));
  }
  EngramModuleCheckOptions options;
  options.tokenizer_path = Gpt2Path();
  auto result = CheckEngramModuleFile(copy, options);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->output_mismatches, 1);
  EXPECT_FALSE(result->passed());
  EXPECT_NEAR(result->max_abs_error, 0.01, 1e-4);
  EXPECT_THAT(result->first_output_mismatch, HasSubstr("b 0 t 0 branch 0 channel 17"));
}

TEST(GoldenCheck, RefusesBadInput) {
  EngramModuleCheckOptions options;
  options.tokenizer_path = Gpt2Path();
  auto missing = CheckEngramModuleFile(GoldenDir() + "/no_such_file.safetensors", options);
  EXPECT_FALSE(missing.ok());
  EXPECT_THAT(missing.status().message(), HasSubstr("no_such_file"));

  TempDir tmp;
  const std::string garbage = tmp.path() + "/bad.safetensors";
  std::ofstream(garbage) << "this is not a safetensors file at all";
  EXPECT_FALSE(CheckEngramModuleFile(garbage, options).ok());

  // A tokenizer with a different compressed vocabulary is named as the likely cause.
  EngramModuleCheckOptions gpt4 = options;
  gpt4.tokenizer_path = testing::Gpt4Path();
  auto wrong = CheckEngramModuleFile(GoldenDir() + "/hc1_conv_bf16.safetensors", gpt4);
  ASSERT_FALSE(wrong.ok());
  EXPECT_THAT(wrong.status().message(), HasSubstr("compressed vocabulary"));

  // No tokenizer.json beside the file and none given.
  const std::string alone =
      CopyToTemp(tmp, GoldenDir() + "/hc1_noconv_f32.safetensors", "alone.safetensors");
  auto no_tokenizer = CheckEngramModuleFile(alone, EngramModuleCheckOptions{});
  EXPECT_FALSE(no_tokenizer.ok());
  EXPECT_THAT(no_tokenizer.status().message(), HasSubstr("tokenizer.json"));
}

TEST(GoldenCheck, RefusesBrokenMetadata) {
  // Rewrite a golden file with inconsistent metadata: layer_id not in layer_ids.
  const std::string golden = GoldenDir() + "/hc1_noconv_f32.safetensors";
  ASSERT_TRUE(SafetensorsFile::Open(golden).ok());
  TempDir tmp;
  auto write_with = [&](const std::string& key, const std::string& value) {
    const std::string path = tmp.path() + "/meta.safetensors";
    absl::Status s = testing::RewriteSafetensors(golden, path, [&](auto* metadata, auto*) {
      auto it = metadata->find(key);
      if (it != metadata->end()) it->second = value;
    });
    EXPECT_TRUE(s.ok()) << s;
    return path;
  };
  EngramModuleCheckOptions options;
  options.tokenizer_path = Gpt2Path();
  std::string path = write_with("layer_id", "7");
  EXPECT_THAT(CheckEngramModuleFile(path, options).status().message(),
              HasSubstr("layer_id 7 is not in layer_ids"));
  path = write_with("max_ngram_size", "\"three\"");
  EXPECT_THAT(CheckEngramModuleFile(path, options).status().message(),
              HasSubstr("engram_max_ngram_size"));
  path = write_with("n_head_per_ngram", "5");
  EXPECT_THAT(CheckEngramModuleFile(path, options).status().message(),
              HasSubstr("n_embed_per_ngram"));
  path = write_with("hidden_size", "33");
  EXPECT_THAT(CheckEngramModuleFile(path, options).status().message(),
              HasSubstr("io.hidden_states"));
}

}  // namespace
}  // namespace engram
