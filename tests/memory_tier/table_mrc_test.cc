// `engram table mrc` (memory_tier/table_mrc.h): the hit-rate curves of the HBM cache and the DRAM
// tier over a small corpus with the committed demo model (models/demo-cpu). Curves rise with the
// size, the oracles bound the policies, a full-size cache serves everything it can, and the CLI
// writes the CSV and the SVG.
#include "memory_tier/table_mrc.h"

#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gtest/gtest.h"
#include "tests/memory_tier/test_model.h"

namespace engram {
namespace {

std::string DemoModel() { return testing::SourceFile("models/demo-cpu"); }

// A corpus with a Zipf-like shape: a few phrases repeated often, many sentences seen once.
std::string WriteCorpus(const std::string& dir) {
  const std::string path = dir + "/corpus.txt";
  std::ofstream f(path);
  const char* phrases[] = {"In the beginning God created the heaven and the earth.",
                           "The quick brown fox jumps over the lazy dog.",
                           "Four score and seven years ago our fathers brought forth.",
                           "A stitch in time saves nine."};
  for (int i = 0; i < 120; ++i) {
    f << phrases[0] << "\n";
    if (i % 2 == 0) f << phrases[1] << "\n";
    if (i % 5 == 0) f << phrases[2] << "\n";
    if (i % 11 == 0) f << phrases[3] << "\n";
    f << "Line " << i << " mentions item " << (i * 7919) % 1013 << " and place " << (i * 31) % 97
      << ".\n\n";
  }
  return path;
}

TEST(TableMrcTest, ParsesSizes) {
  EXPECT_DOUBLE_EQ(ParseMrcSize("5%")->fraction, 0.05);
  EXPECT_DOUBLE_EQ(ParseMrcSize(" 0.1% ")->fraction, 0.001);
  EXPECT_EQ(ParseMrcSize("4096")->bytes, 4096u);
  EXPECT_EQ(ParseMrcSize("64K")->bytes, 65536u);
  EXPECT_EQ(ParseMrcSize("64MiB")->bytes, uint64_t{64} << 20);
  EXPECT_EQ(ParseMrcSize("2g")->bytes, uint64_t{2} << 30);
  EXPECT_EQ(ParseMrcSize("1.5GB")->bytes, uint64_t{3} << 29);
  for (const char* bad : {"", "0%", "101%", "-1", "x", "12Q", "0"}) {
    EXPECT_FALSE(ParseMrcSize(bad).ok()) << bad;
  }
}

TEST(TableMrcTest, CurvesRiseAreBoundedByTheOraclesAndReachFullAtFullSize) {
  testing::TempDir tmp;
  MrcOptions o;
  o.model_dir = DemoModel();
  o.corpus_path = WriteCorpus(tmp.path());
  for (const char* s : {"0.2%", "1%", "3%", "10%", "30%", "100%"})
    o.sizes.push_back(*ParseMrcSize(s));
  o.step_positions = 8;
  auto r = ComputeMrc(o);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->model, "engram-demo-cpu");
  // Two Engram layers of (3 - 1) orders x 4 heads: 16 lookups per token.
  EXPECT_EQ(r->lookups, r->tokens * 16);
  EXPECT_EQ(r->row_bytes, 33u);  // the model's own tables: 32 FP8 values + one E8M0 scale
  EXPECT_GT(r->distinct_rows, 100u);
  EXPECT_LT(r->distinct_rows, r->lookups / 2);

  std::map<std::string, std::vector<MrcPoint>> curves;
  for (const MrcPoint& p : r->points) curves[p.tier + "/" + p.policy].push_back(p);
  ASSERT_EQ(curves.size(), 5u);
  for (const auto& [name, c] : curves) {
    ASSERT_EQ(c.size(), 6u) << name;
    for (size_t i = 1; i < c.size(); ++i) {
      EXPECT_GE(c[i].rows, c[i - 1].rows) << name;
      // The online policies are not stack algorithms: allow a hair of noise.
      EXPECT_GE(c[i].hit_rate, c[i - 1].hit_rate - 0.005) << name << " at " << c[i].size_fraction;
    }
  }
  const auto& tinylfu = curves["hbm/tinylfu"];
  const auto& belady = curves["hbm/belady"];
  const auto& hbm_static = curves["hbm/static"];
  const auto& dram = curves["dram/tier"];
  const auto& dram_static = curves["dram/static"];
  const double compulsory = 1.0 - static_cast<double>(r->distinct_rows) / r->lookups;
  for (size_t i = 0; i < tinylfu.size(); ++i) {
    SCOPED_TRACE(::testing::Message() << "size " << tinylfu[i].size_fraction);
    EXPECT_GE(belady[i].hit_rate, tinylfu[i].hit_rate - 1e-12);  // MIN is optimal
    EXPECT_GE(hbm_static[i].hit_rate, tinylfu[i].hit_rate);
    EXPECT_GE(dram_static[i].hit_rate, dram[i].hit_rate);
    EXPECT_LE(belady[i].hit_rate, compulsory + 1e-12);  // every first read misses
    EXPECT_GT(tinylfu[i].hit_rate, 0.0);
  }
  // Full size: the static oracle and the resident DRAM tier serve everything; the demand caches
  // miss only first reads (the HBM cache also a row read twice in the step that first reads it).
  EXPECT_DOUBLE_EQ(hbm_static.back().hit_rate, 1.0);
  EXPECT_DOUBLE_EQ(dram.back().hit_rate, 1.0);
  EXPECT_DOUBLE_EQ(dram_static.back().hit_rate, 1.0);
  EXPECT_DOUBLE_EQ(belady.back().hit_rate, compulsory);
  EXPECT_GT(tinylfu.back().hit_rate, compulsory - 0.02);
  EXPECT_EQ(tinylfu.back().rows, r->table_rows);

  // The CSV has a header and one line per point.
  const std::string csv = MrcCsv(*r);
  std::vector<std::string> lines = absl::StrSplit(csv, '\n', absl::SkipEmpty());
  EXPECT_EQ(lines.front(), "tier,policy,size_percent,size_bytes,rows,hit_rate");
  EXPECT_EQ(lines.size(), r->points.size() + 1);
  const std::string svg = MrcSvg(*r);
  EXPECT_EQ(svg.rfind("<svg", 0), 0u);
  size_t polylines = 0;
  for (size_t at = 0; (at = svg.find("<polyline", at)) != std::string::npos; ++at) ++polylines;
  EXPECT_EQ(polylines, 5u);
}

TEST(TableMrcTest, SizesInBytesUseTheTiersGeometry) {
  testing::TempDir tmp;
  MrcOptions o;
  o.model_dir = DemoModel();
  o.corpus_path = WriteCorpus(tmp.path());
  o.sizes = {*ParseMrcSize("64K"), *ParseMrcSize("1G")};
  o.belady = false;
  auto r = ComputeMrc(o);
  ASSERT_TRUE(r.ok()) << r.status();
  for (const MrcPoint& p : r->points) {
    EXPECT_NE(p.policy, "belady");
    if (p.size_bytes == 65536 && p.tier == "hbm") {
      // Pool + map within 64 KiB: 33-byte rows and 16-byte entries at >= 2 per slot.
      EXPECT_LE(p.rows * 33 + 2 * p.rows * 16, 65536u);
      EXPECT_GT(p.rows, 65536u / (33 + 64));
    }
    if (p.size_bytes == (uint64_t{1} << 30)) {
      EXPECT_EQ(p.rows, r->table_rows) << p.tier;  // everything fits
    }
  }
  // Errors name what is wrong.
  o.corpus_path = tmp.path() + "/missing.txt";
  auto missing = ComputeMrc(o);
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("missing.txt"), std::string::npos);
  o.sizes.clear();
  EXPECT_FALSE(ComputeMrc(o).ok());
}

TEST(TableMrcTest, CommandWritesCsvAndSvg) {
  testing::TempDir tmp;
  const std::string corpus = WriteCorpus(tmp.path());
  const std::string svg = tmp.path() + "/mrc.svg";
  auto [code, out] = testing::RunCommand(absl::StrCat(testing::BinaryPath("client/engram"),
                                                      " table mrc ", DemoModel(), " --corpus ",
                                                      corpus, " --sizes 1%,10%,100% --svg ", svg));
  ASSERT_EQ(code, 0) << out;
  // The summary line (stderr) comes first, then the CSV (stdout).
  std::vector<std::string> lines = absl::StrSplit(out, '\n', absl::SkipEmpty());
  ASSERT_FALSE(lines.empty());
  EXPECT_NE(lines[0].find("engram-demo-cpu: 6035 tokens"), std::string::npos) << lines[0];
  lines.erase(lines.begin());
  ASSERT_EQ(lines.size(), 1u + 5 * 3) << out;
  EXPECT_EQ(lines[0], "tier,policy,size_percent,size_bytes,rows,hit_rate");
  EXPECT_EQ(lines.back().rfind("dram,static,100.0000,", 0), 0u) << lines.back();
  std::ifstream f(svg);
  std::stringstream ss;
  ss << f.rdbuf();
  EXPECT_NE(ss.str().find("HBM: HotRowCache"), std::string::npos);
  // A bad size is the caller's fault: exit 2 naming it.
  std::tie(code, out) =
      testing::RunCommand(absl::StrCat(testing::BinaryPath("client/engram"), " table mrc ",
                                       DemoModel(), " --corpus ", corpus, " --sizes 1%,lots"));
  EXPECT_EQ(code, 2) << out;
  EXPECT_NE(out.find("\"lots\""), std::string::npos) << out;
}

}  // namespace
}  // namespace engram
