#include "common/safetensors.h"

#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "gtest/gtest.h"
#include "tests/common/temp_dir.h"

namespace engram {
namespace {

TEST(SafetensorsTest, RoundTripsTensorsAndMetadata) {
  testing::TempDir tmp;
  const std::string path = tmp.path() + "/rt.safetensors";
  std::vector<float> a = {1.0f, -2.5f, 3.25f, 0.0f, 1e-3f, 65504.0f};
  SafetensorsWriter w;
  w.SetMetadata("hidden_size", "3");
  w.AddF32As("a.f32", DType::kF32, {2, 3}, a);
  w.AddF32As("a.bf16", DType::kBF16, {2, 3}, a);
  w.AddF32As("a.f16", DType::kF16, {6}, a);
  w.AddProduced("big", DType::kU8, {3, 5}, [](uint64_t off, uint8_t* out, size_t n) {
    for (size_t i = 0; i < n; ++i) out[i] = static_cast<uint8_t>(off + i);
    return absl::OkStatus();
  });
  ASSERT_TRUE(w.Write(path).ok());

  auto file = SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ((*file)->metadata().at("hidden_size"), "3");
  auto f32 = (*file)->Get("a.f32");
  ASSERT_TRUE(f32.ok());
  EXPECT_EQ((*f32)->ShapeString(), "[2, 3]");
  auto values = TensorToF32(**f32);
  ASSERT_TRUE(values.ok());
  EXPECT_EQ(*values, a);
  auto bf16 = TensorToF32(*(*file)->Find("a.bf16"));
  ASSERT_TRUE(bf16.ok());
  for (size_t i = 0; i < a.size(); ++i) EXPECT_NEAR((*bf16)[i], a[i], std::fabs(a[i]) / 128 + 1e-6);
  auto f16 = TensorToF32(*(*file)->Find("a.f16"));
  ASSERT_TRUE(f16.ok());
  for (size_t i = 0; i < a.size(); ++i) EXPECT_NEAR((*f16)[i], a[i], std::fabs(a[i]) / 1024 + 1e-6);
  const TensorView* big = (*file)->Find("big");
  ASSERT_NE(big, nullptr);
  for (int i = 0; i < 15; ++i) EXPECT_EQ(big->data[i], i);
  EXPECT_FALSE((*file)->Get("missing").ok());
}

// Found by tests/fuzz/safetensors_fuzz: converting an empty F32 tensor copied 0 bytes to a null
// buffer, which is undefined behaviour (UBSan's nonnull-attribute check fails this test under
// scripts/test-sanitizers.sh). The file is the fuzzer's input, byte for byte.
TEST(SafetensorsTest, EmptyTensorsConvert) {
  testing::TempDir tmp;
  const std::string path = tmp.path() + "/empty.safetensors";
  const std::string header = R"({"e":{"dtype":"F32","shape":[0,4],"data_offsets":[0,0]}})";
  std::string bytes(8, '\0');
  bytes[0] = static_cast<char>(header.size());
  bytes += header;
  std::ofstream(path, std::ios::binary) << bytes;
  auto file = SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  auto values = TensorToF32(*(*file)->Find("e"));
  ASSERT_TRUE(values.ok()) << values.status();
  EXPECT_TRUE(values->empty());
  std::vector<float> none;
  EXPECT_TRUE(ConvertToF32(DType::kF32, nullptr, 0, none.data()).ok());
}

TEST(SafetensorsTest, RejectsTruncatedAndMalformedFiles) {
  testing::TempDir tmp;
  const std::string path = tmp.path() + "/bad.safetensors";
  std::vector<float> a(100, 1.0f);
  SafetensorsWriter w;
  w.AddF32As("a", DType::kF32, {100}, a);
  ASSERT_TRUE(w.Write(path).ok());
  std::filesystem::resize_file(path, std::filesystem::file_size(path) - 10);
  auto truncated = SafetensorsFile::Open(path);
  ASSERT_FALSE(truncated.ok());
  EXPECT_NE(truncated.status().message().find("truncated"), std::string::npos) << truncated.status();

  {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    uint64_t len = 5;
    out.write(reinterpret_cast<const char*>(&len), 8);
    out << "{oops";
  }
  auto garbage = SafetensorsFile::Open(path);
  ASSERT_FALSE(garbage.ok());
  EXPECT_EQ(garbage.status().code(), absl::StatusCode::kInvalidArgument);

  {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    uint64_t len = 1ull << 40;
    out.write(reinterpret_cast<const char*>(&len), 8);
  }
  EXPECT_FALSE(SafetensorsFile::Open(path).ok());
  EXPECT_EQ(SafetensorsFile::Open(path + ".none").status().code(), absl::StatusCode::kNotFound);

  // A shape whose byte size wraps around 2^64 (2^61 F64 elements "need" 0 bytes) is refused,
  // not handed to a reader that would then allocate or read 2^61 elements.
  for (const char* header :
       {R"({"t":{"dtype":"F64","shape":[2305843009213693952],"data_offsets":[0,0]}})",
        R"({"t":{"dtype":"F32","shape":[4611686018427387904],"data_offsets":[0,0]}})"}) {
    {
      std::ofstream out(path, std::ios::binary | std::ios::trunc);
      const std::string text = header;
      uint64_t len = text.size();
      out.write(reinterpret_cast<const char*>(&len), 8);
      out << text;
    }
    auto wrapped = SafetensorsFile::Open(path);
    ASSERT_FALSE(wrapped.ok()) << header;
    EXPECT_EQ(wrapped.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(wrapped.status().message().find("\"t\""), std::string::npos) << wrapped.status();
  }
}

TEST(SafetensorsTest, DirectoryNamesBothFilesOfADuplicateTensor) {
  testing::TempDir tmp;
  const std::string& dir = tmp.path();
  std::vector<float> a = {1.0f, 2.0f};
  for (const char* name : {"/a.safetensors", "/b.safetensors"}) {
    SafetensorsWriter w;
    w.AddF32As("same", DType::kF32, {2}, a);
    w.AddF32As(std::string("only") + name, DType::kF32, {2}, a);
    ASSERT_TRUE(w.Write(dir + name).ok());
  }
  auto opened = SafetensorsDir::Open(dir);
  ASSERT_FALSE(opened.ok());
  EXPECT_NE(opened.status().message().find(dir + "/a.safetensors and " + dir + "/b.safetensors"),
            std::string::npos)
      << opened.status();
  std::filesystem::remove(dir + "/b.safetensors");
  opened = SafetensorsDir::Open(dir);
  ASSERT_TRUE(opened.ok()) << opened.status();
  const TensorView* t = (*opened)->Find("same");
  ASSERT_NE(t, nullptr);
  EXPECT_EQ((*opened)->FileOf(t)->path(), dir + "/a.safetensors");
}

TEST(SafetensorsTest, ConversionsMatchKnownBitPatterns) {
  EXPECT_EQ(F32ToBf16(1.0f), 0x3f80);
  EXPECT_EQ(F32ToBf16(-2.0f), 0xc000);
  EXPECT_EQ(F32ToBf16(1.00390625f), 0x3f80);  // tie rounds to even
  EXPECT_EQ(F32ToF16(1.0f), 0x3c00);
  EXPECT_EQ(F32ToF16(65504.0f), 0x7bff);
  EXPECT_EQ(F32ToF16(1e9f), 0x7c00);
  EXPECT_EQ(F32ToF16(5.960464477539063e-08f), 0x0001);
  EXPECT_FLOAT_EQ(F16ToF32(0x0001), 5.960464477539063e-08f);
  EXPECT_FLOAT_EQ(F8E4M3ToF32(0x7e), 448.0f);
  EXPECT_FLOAT_EQ(F8E4M3ToF32(0x01), 0.001953125f);
  EXPECT_TRUE(std::isnan(F8E4M3ToF32(0x7f)));
  EXPECT_EQ(F32ToF8E4M3(1000.0f), 0x7e);
  EXPECT_EQ(F32ToF8E4M3(-1.0f), 0xb8);
  for (int b = 0; b < 256; ++b) {
    if ((b & 0x7f) == 0x7f) continue;
    EXPECT_EQ(F32ToF8E4M3(F8E4M3ToF32(static_cast<uint8_t>(b))) & 0xff, b == 0x80 ? 0x80 : b);
  }
  EXPECT_FLOAT_EQ(F8E8M0ToF32(127), 1.0f);
  EXPECT_FLOAT_EQ(F8E8M0ToF32(120), 1.0f / 128);
}

}  // namespace
}  // namespace engram
