// `engram table profile`: a corpus hashed with the model's tokenizer and Engram constants seeds
// the catalog's statistics, and a server started afterwards has the profiled hot rows in DRAM.
#include "memory_tier/table_profile.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "common/engram_config.h"
#include "common/ngram_hash.h"
#include "gtest/gtest.h"
#include "memory_tier/catalog.h"
#include "memory_tier/importer.h"
#include "memory_tier/tier_client.h"
#include "memory_tier/tier_server.h"
#include "model/engram_constants.h"
#include "model/tokenizer.h"
#include "nlohmann/json.hpp"
#include "tests/memory_tier/test_model.h"
#include "tests/tokenizer/test_data.h"

namespace engram {
namespace {

constexpr char kPhrase[] = "the quick brown fox jumps over the lazy dog\n";

TEST(TableProfileTest, ProfiledHotRowsAreStoredAndServedFromDramAtStart) {
  const std::string tokenizer_json = testing::Gpt2Path();
  ASSERT_TRUE(testing::HaveTestData(tokenizer_json));
  testing::TempDir tmp;
  const std::string model = tmp.path() + "/model", store = tmp.path() + "/store";
  testing::TestModelSpec spec;
  ASSERT_TRUE(testing::WriteTestModel(model, spec).ok());
  std::filesystem::copy_file(tokenizer_json, model + "/tokenizer.json");
  {
    auto catalog = Catalog::Open(store, Catalog::Mode::kReadWrite);
    ASSERT_TRUE(catalog.ok());
    ASSERT_TRUE(ImportModel(**catalog, {.model_dir = model}).ok());
  }
  const std::string corpus = tmp.path() + "/corpus.txt";
  {
    std::ofstream f(corpus);
    for (int i = 0; i < 200; ++i) {
      f << kPhrase << "\n";
      f << "document " << i << " talks about item " << (i * 7919) % 1000 << " and more\n\n";
    }
  }
  auto catalog = Catalog::Open(store, Catalog::Mode::kReadWrite);
  ASSERT_TRUE(catalog.ok());
  auto result = ProfileTables(**catalog, {.model_dir = model, .corpus_path = corpus});
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->model, "testmodel");
  EXPECT_GT(result->tokens, 200u * 9);
  ASSERT_EQ(result->layers.size(), 2u);

  // The phrase's row ids, computed independently of the profiler, each occur >= 200 times.
  auto tokenizer = Tokenizer::FromFile(tokenizer_json);
  ASSERT_TRUE(tokenizer.ok());
  auto config = ParseEngramConfig(*ReadJsonFile(model + "/config.json"));
  ASSERT_TRUE(config.ok());
  auto constants = ComputeEngramConstants(*config, **tokenizer);
  ASSERT_TRUE(constants.ok()) << constants.status();
  auto tokens = (*tokenizer)->Encode(kPhrase);
  ASSERT_TRUE(tokens.ok());
  auto ids = constants->Compress(*tokens);
  ASSERT_TRUE(ids.ok());
  const int columns = constants->hash.columns();
  std::vector<int64_t> rows(ids->size() * columns);
  ASSERT_TRUE(ComputeNgramRowIds(constants->hash, 1, {}, *ids, absl::MakeSpan(rows)).ok());
  auto saved = (*catalog)->LoadStats("testmodel", 3);
  ASSERT_TRUE(saved.ok());
  ASSERT_FALSE(saved->empty());
  std::map<uint64_t, double> by_row;
  for (const RowCount& rc : *saved) by_row[rc.row] = rc.count;
  for (int64_t r : rows) EXPECT_GE(by_row[static_cast<uint64_t>(r)], 200.0) << "row " << r;
  catalog->reset();

  // A server with a small DRAM cache for layer 3 starts with exactly these rows in DRAM.
  TierConfig c;
  c.store.dir = store;
  c.server.listen = "127.0.0.1:0";
  c.server.metrics_port = -1;
  c.dram.bytes = 48 * 1024;  // no table fits whole: two caches
  c.dram.lock = false;
  c.dram.shm_prefix = absl::StrCat("engram-prof-", getpid());
  auto server = TierServer::Start(c);
  ASSERT_TRUE(server.ok()) << server.status();
  auto client = TierClient::Connect({.address = absl::StrCat("127.0.0.1:", (*server)->port())});
  ASSERT_TRUE(client.ok());
  std::vector<uint64_t> hot(rows.begin(), rows.end());
  auto r = (*client)->Lookup({"testmodel", 3, 0}, hot);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->served_by.dram, hot.size());

  // The CLI reports a missing corpus clearly.
  (*server)->Shutdown();
  auto [code, out] = testing::RunCommand(
      absl::StrCat(testing::BinaryPath("client/engram"), " table profile ", model, " --store ",
                   tmp.path(), "/store2 --corpus ", tmp.path(), "/missing.txt"));
  EXPECT_NE(code, 0) << out;
  EXPECT_NE(out.find("missing.txt"), std::string::npos) << out;
  // Text that is not UTF-8: the message names the corpus and where the bad document starts.
  {
    std::ofstream f(tmp.path() + "/bad.txt", std::ios::binary);
    f << kPhrase << "\n"
      << "caf\xe9 au lait\n";
  }
  std::tie(code, out) = testing::RunCommand(
      absl::StrCat(testing::BinaryPath("client/engram"), " table profile ", model, " --store ",
                   tmp.path(), "/store2 --corpus ", tmp.path(), "/bad.txt"));
  EXPECT_NE(code, 0) << out;
  EXPECT_NE(out.find("bad.txt, document at byte 45"), std::string::npos) << out;
  EXPECT_NE(out.find("UTF-8"), std::string::npos) << out;
}

}  // namespace
}  // namespace engram
