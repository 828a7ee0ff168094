// KV cache: growth on demand up to the sequence bound, content preserved across growth.
#include "model/kv_cache.h"

#include "gtest/gtest.h"

namespace engram {
namespace {

TEST(KvCacheTest, GrowsOnDemandAndKeepsContent) {
  KvCache cache(/*num_layers=*/2, /*num_kv_heads=*/3, /*head_dim=*/5, /*max_tokens=*/100);
  EXPECT_EQ(cache.width(), 15);
  EXPECT_EQ(cache.capacity(), 0);
  EXPECT_EQ(cache.bytes(), 0u);
  ASSERT_TRUE(cache.Reserve(3).ok());
  EXPECT_GE(cache.capacity(), 3);
  for (int l = 0; l < 2; ++l) {
    for (int p = 0; p < 3; ++p) {
      for (int i = 0; i < 15; ++i) {
        cache.Keys(l, p)[i] = l * 1000 + p * 100 + i;
        cache.Values(l, p)[i] = -(l * 1000 + p * 100 + i);
      }
    }
  }
  ASSERT_TRUE(cache.Reserve(77).ok());
  EXPECT_GE(cache.capacity(), 77);
  EXPECT_LE(cache.capacity(), 100);
  EXPECT_EQ(cache.bytes(), size_t(2) * 2 * cache.capacity() * 15 * sizeof(float));
  for (int l = 0; l < 2; ++l) {
    for (int p = 0; p < 3; ++p) {
      for (int i = 0; i < 15; ++i) {
        EXPECT_EQ(cache.Keys(l, p)[i], l * 1000 + p * 100 + i);
        EXPECT_EQ(cache.Values(l, p)[i], -(l * 1000 + p * 100 + i));
      }
    }
  }
}

TEST(KvCacheTest, RefusesMoreThanMaxTokens) {
  KvCache cache(1, 1, 2, 10);
  EXPECT_TRUE(cache.Reserve(10).ok());
  EXPECT_EQ(cache.capacity(), 10);
  absl::Status st = cache.Reserve(11);
  EXPECT_EQ(st.code(), absl::StatusCode::kOutOfRange);
  EXPECT_NE(st.message().find("at most 10"), absl::string_view::npos) << st;
  EXPECT_EQ(cache.capacity(), 10);
}

}  // namespace
}  // namespace engram
