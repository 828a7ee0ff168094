// engram.v1.MemoryTier end to end over loopback gRPC with an in-process server on 127.0.0.1:0:
// rows byte-exact against the source safetensors through Lookup, Prefetch and the shared-memory
// arena, from both tiers; concurrent clients; bad input; a refused corrupt table; drain; a restart
// that comes back warm from the persisted statistics.
#include <fcntl.h>
#include <unistd.h>

#include <filesystem>
#include <random>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "common/row_format.h"
#include "engram/v1/memory_tier.grpc.pb.h"
#include "engram/v1/memory_tier.pb.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "memory_tier/catalog.h"
#include "memory_tier/importer.h"
#include "memory_tier/memory_tier_service.h"
#include "memory_tier/table_set.h"
#include "memory_tier/tier_client.h"
#include "memory_tier/tier_server.h"
#include "tests/common/process.h"
#include "tests/common/raw_call.h"
#include "tests/common/test_pki.h"
#include "tests/memory_tier/test_model.h"

namespace engram {
namespace {

using testing::ScrapeMetric;
using testing::SourceRows;
using testing::TempDir;
using testing::TestModelSpec;

class TierServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    spec_.dtype = "bf16";
    spec_.layer_ids = {1, 3};
    ASSERT_TRUE(testing::WriteTestModel(model_dir(), spec_).ok());
    auto catalog = Catalog::Open(store_dir(), Catalog::Mode::kReadWrite);
    ASSERT_TRUE(catalog.ok());
    ImportOptions io;
    io.model_dir = model_dir();
    io.chunk_bytes = 8192;
    ASSERT_TRUE(ImportModel(**catalog, io).ok());
    for (uint32_t layer : {1u, 3u}) {
      size_t rb = 0;
      auto rows = SourceRows(model_dir(), layer, &rb);
      ASSERT_TRUE(rows.ok());
      source_[layer] = std::move(*rows);
      row_bytes_ = rb;
    }
    rows_ = testing::TestModelRows(spec_)[0];
    layer_rows_[1] = testing::TestModelRows(spec_)[0];
    layer_rows_[3] = testing::TestModelRows(spec_)[1];
  }

  std::string model_dir() const { return tmp_.path() + "/model"; }
  std::string store_dir() const { return tmp_.path() + "/store"; }

  // Layer 1 fits the DRAM budget whole (resident); layer 3 gets a small cache.
  TierConfig Config() const {
    TierConfig c;
    c.store.dir = store_dir();
    c.server.listen = "127.0.0.1:0";
    c.server.metrics_host = "127.0.0.1";
    c.server.metrics_port = 0;
    c.server.max_batch_rows = 5000;
    c.server.lookup_threads = 2;
    c.server.drain_timeout_s = 5;
    c.dram.bytes = 4096 + rows_ * row_bytes_ + 40 * 1024;
    c.dram.ways = 4;
    c.dram.lock = false;
    c.dram.shm_prefix = absl::StrCat("engram-test-", getpid());
    c.nvme.io_depth = 16;
    c.placement.stats_flush_interval_s = 3600;  // flushed explicitly
    return c;
  }

  void StartServer() { StartServer(Config()); }
  void StartServer(const TierConfig& config) {
    auto server = TierServer::Start(config);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(*server);
    auto client = TierClient::Connect({.address = absl::StrCat("127.0.0.1:", server_->port())});
    ASSERT_TRUE(client.ok()) << client.status();
    client_ = std::move(*client);
  }

  void ExpectRows(uint32_t layer, const std::vector<uint64_t>& ids, const std::string& rows) {
    ASSERT_EQ(rows.size(), ids.size() * row_bytes_);
    for (size_t i = 0; i < ids.size(); ++i) {
      ASSERT_EQ(0, std::memcmp(rows.data() + i * row_bytes_,
                               source_[layer].data() + ids[i] * row_bytes_, row_bytes_))
          << "layer " << layer << " row " << ids[i] << " at " << i;
    }
  }

  std::vector<uint64_t> RandomIds(std::mt19937_64& rng, size_t n) {
    std::vector<uint64_t> ids(n);
    for (auto& id : ids) id = rng() % rows_;
    return ids;
  }

  TempDir tmp_;
  TestModelSpec spec_;
  std::map<uint32_t, std::vector<uint8_t>> source_;
  size_t row_bytes_ = 0;
  uint64_t rows_ = 0;  // of layer 1, the smaller table: random ids stay below both
  std::map<uint32_t, uint64_t> layer_rows_;
  std::unique_ptr<TierServer> server_;
  std::unique_ptr<TierClient> client_;
};

TEST_F(TierServiceTest, TableInfoDescribesBothTablesAndTheirArenas) {
  StartServer();
  ASSERT_TRUE(client_->CheckHealth().ok());
  auto tables = client_->TableInfo();
  ASSERT_TRUE(tables.ok()) << tables.status();
  ASSERT_EQ(tables->size(), 2u);
  for (const TableDescription& t : *tables) {
    EXPECT_TRUE(t.serving) << t.unavailable_reason;
    EXPECT_EQ(t.key.model, "testmodel");
    EXPECT_EQ(t.key.version, 1u);
    EXPECT_EQ(t.rows, layer_rows_[t.key.layer]);
    EXPECT_EQ(t.row_bytes, row_bytes_);
    EXPECT_EQ(t.dtype, RowDType::kBF16);
    EXPECT_EQ(t.head_dim, spec_.head_dim);
    EXPECT_EQ(t.rows_per_page, 4096 / row_bytes_);
    EXPECT_EQ(t.versions, std::vector<uint64_t>{1});
    EXPECT_EQ(t.arena.host_id, LocalHostId());
    EXPECT_FALSE(t.arena.shm_name.empty());
    EXPECT_EQ(t.arena.layout, t.key.layer == 1 ? "resident" : "cache");
  }
  EXPECT_EQ(client_->FindTable("testmodel", 2).status().code(), absl::StatusCode::kNotFound);
}

TEST_F(TierServiceTest, LookupAndPrefetchAreByteExactFromBothTiers) {
  StartServer();
  std::mt19937_64 rng(1);
  TierCounts total;
  for (uint32_t layer : {1u, 3u}) {
    for (size_t n : {1, 48, 768}) {
      auto ids = RandomIds(rng, n);
      auto r = client_->Lookup({"testmodel", layer, 0}, ids);
      ASSERT_TRUE(r.ok()) << r.status();
      EXPECT_EQ(r->version, 1u);
      EXPECT_EQ(r->served_by.dram + r->served_by.nvme, n);
      ExpectRows(layer, ids, r->rows);
      total.dram += r->served_by.dram;
      total.nvme += r->served_by.nvme;
    }
  }
  EXPECT_GT(total.dram, 0u);
  EXPECT_GT(total.nvme, 0u);

  // Prefetch: many batches in flight on one stream, answered by batch id.
  auto stream = client_->OpenPrefetchStream({});
  ASSERT_TRUE(stream.ok());
  std::vector<std::future<PrefetchResult>> futures;
  std::vector<std::pair<uint32_t, std::vector<uint64_t>>> sent;
  for (uint64_t b = 0; b < 40; ++b) {
    const uint32_t layer = b % 2 ? 3 : 1;
    PrefetchBatch batch{.batch_id = 100 + b,
                        .table = {"testmodel", layer, 0},
                        .sequence_id = b,
                        .step = b,
                        .row_ids = RandomIds(rng, 1 + b * 20)};
    sent.emplace_back(layer, batch.row_ids);
    futures.push_back((*stream)->SendAsync(std::move(batch)));
  }
  TierCounts prefetched;
  for (size_t b = 0; b < futures.size(); ++b) {
    PrefetchResult r = futures[b].get();
    ASSERT_TRUE(r.status.ok()) << r.status;
    EXPECT_EQ(r.batch_id, 100 + b);
    ExpectRows(sent[b].first, sent[b].second, r.rows);
    EXPECT_GE(r.server_latency_us, r.queue_us);
    prefetched.dram += r.served_by.dram;
    prefetched.nvme += r.served_by.nvme;
  }
  EXPECT_GT(prefetched.dram, 0u);
  EXPECT_GT(prefetched.nvme, 0u);
  EXPECT_TRUE((*stream)->Finish().ok());
}

TEST_F(TierServiceTest, ConcurrentClientsGetTheirOwnRows) {
  StartServer();
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([this, t] {
      auto client = TierClient::Connect({.address = absl::StrCat("127.0.0.1:", server_->port())});
      ASSERT_TRUE(client.ok());
      std::mt19937_64 rng(50 + t);
      absl::Mutex mu;
      int answered = 0;
      std::vector<std::pair<uint32_t, std::vector<uint64_t>>> sent(30);
      auto stream = (*client)->OpenPrefetchStream({.on_result = [&](PrefetchResult r) {
        EXPECT_TRUE(r.status.ok()) << r.status;
        absl::MutexLock lock(&mu);
        ExpectRows(sent[r.batch_id].first, sent[r.batch_id].second, r.rows);
        ++answered;
      }});
      ASSERT_TRUE(stream.ok());
      for (uint64_t b = 0; b < 30; ++b) {
        const uint32_t layer = (b + t) % 2 ? 3 : 1;
        {
          absl::MutexLock lock(&mu);
          sent[b] = {layer, RandomIds(rng, 200)};
        }
        ASSERT_TRUE(
            (*stream)
                ->Send({.batch_id = b, .table = {"testmodel", layer, 0}, .row_ids = sent[b].second})
                .ok());
        auto ids = RandomIds(rng, 100);
        auto r = (*client)->Lookup({"testmodel", layer, 1}, ids);
        ASSERT_TRUE(r.ok()) << r.status();
        ExpectRows(layer, ids, r->rows);
      }
      ASSERT_TRUE((*stream)->Finish().ok());
      absl::MutexLock lock(&mu);
      EXPECT_EQ(answered, 30);
    });
  }
  for (auto& th : threads) th.join();
}

TEST_F(TierServiceTest, CoLocatedClientReadsTheArenaAndReportsItsHits) {
  StartServer();
  auto resident = client_->FindTable("testmodel", 1);
  auto cache = client_->FindTable("testmodel", 3);
  ASSERT_TRUE(resident.ok() && cache.ok());
  auto res_reader = ArenaReader::Open(*resident);
  ASSERT_TRUE(res_reader.ok()) << res_reader.status();
  EXPECT_TRUE((*res_reader)->resident());
  std::mt19937_64 rng(3);
  auto ids = RandomIds(rng, 500);
  std::string rows(ids.size() * row_bytes_, '\0');
  std::vector<uint32_t> missing;
  ASSERT_TRUE((*res_reader)->Lookup(ids, reinterpret_cast<uint8_t*>(rows.data()), &missing).ok());
  EXPECT_TRUE(missing.empty());
  ExpectRows(1, ids, rows);

  // The cache arena fills as the server promotes rows the client asked for.
  auto cache_reader = ArenaReader::Open(*cache);
  ASSERT_TRUE(cache_reader.ok()) << cache_reader.status();
  EXPECT_FALSE((*cache_reader)->resident());
  std::vector<uint64_t> hot = {5, 50, 500, 1500};
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(client_->Lookup({"testmodel", 3, 0}, hot).ok());
  for (auto& t : server_->tables()->tables()) t->store->Flush();
  rows.assign(hot.size() * row_bytes_, '\0');
  missing.clear();
  ASSERT_TRUE((*cache_reader)->Lookup(hot, reinterpret_cast<uint8_t*>(rows.data()), &missing).ok());
  EXPECT_TRUE(missing.empty());
  ExpectRows(3, hot, rows);

  // Arena hits reported on the stream count as tier "arena" and feed the statistics.
  auto stream = client_->OpenPrefetchStream({});
  ASSERT_TRUE(stream.ok());
  PrefetchBatch report{.batch_id = 1, .table = {"testmodel", 1, 0}};
  report.arena_hits.assign(200, 77);
  PrefetchResult r = (*stream)->SendAsync(report).get();
  EXPECT_TRUE(r.status.ok()) << r.status;
  EXPECT_TRUE(r.rows.empty());
  ASSERT_TRUE((*stream)->Finish().ok());
  for (auto& t : server_->tables()->tables()) t->store->Flush();
  auto stats = client_->Stats(1);
  ASSERT_TRUE(stats.ok());
  bool found = false;
  for (const auto& t : stats->tables()) {
    if (t.table().layer() == 1) {
      ASSERT_EQ(t.hottest_size(), 1);
      EXPECT_EQ(t.hottest(0).row_id(), 77u);
      found = true;
    }
  }
  EXPECT_TRUE(found);
  auto metrics = testing::HttpGet(server_->metrics_port(), "/metrics");
  ASSERT_TRUE(metrics.ok()) << metrics.status();
  EXPECT_NE(metrics->find("engram_tier_rows_served_total{tier=\"arena\"} 200"), std::string::npos)
      << metrics->substr(0, 2000);
}

// The repro of "the tier is an open door": one Prefetch message reporting 300,000 arena hits of
// row 5 must not make row 5 the hottest row. Hits are validated (a row id out of range is
// INVALID_ARGUMENT naming it) and credited within the stream's budget: a row at most
// kArenaHitsPerRow times per message, no more hits than the stream's credit; the rest are dropped
// and counted.
TEST_F(TierServiceTest, ArenaHitsAreValidatedAndBudgetedPerStream) {
  TierConfig config = Config();
  config.server.max_batch_rows = 400000;  // the 300,000 hits pass the size limit: the budget acts
  StartServer(config);
  // Real traffic: row 50 of layer 1 looked up 1,000 times.
  ASSERT_TRUE(client_->Lookup({"testmodel", 1, 0}, std::vector<uint64_t>(1000, 50)).ok());
  auto stream = client_->OpenPrefetchStream({});
  ASSERT_TRUE(stream.ok());
  PrefetchBatch flood{.batch_id = 1, .table = {"testmodel", 1, 0}};
  flood.arena_hits.assign(300000, 5);
  PrefetchResult r = (*stream)->SendAsync(flood).get();
  EXPECT_TRUE(r.status.ok()) << r.status;  // over budget is dropped, not an error
  // An id out of range for the table is refused, naming it; the stream goes on.
  PrefetchBatch bad{.batch_id = 2, .table = {"testmodel", 1, 0}};
  bad.arena_hits = {7, rows_};
  r = (*stream)->SendAsync(bad).get();
  EXPECT_EQ(r.status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(r.status.message().find(absl::StrCat("arena_hits[1] = ", rows_)), std::string::npos)
      << r.status;
  EXPECT_NE(r.status.message().find("out of range"), std::string::npos) << r.status;
  // The stream's credit (kArenaHitAllowance, minus the 256 of row 5) caps the next report.
  PrefetchBatch many{.batch_id = 3, .table = {"testmodel", 1, 0}};
  for (uint64_t i = 0; i < 5000; ++i) many.arena_hits.push_back(100 + i % 200);
  r = (*stream)->SendAsync(many).get();
  EXPECT_TRUE(r.status.ok()) << r.status;
  ASSERT_TRUE((*stream)->Finish().ok());
  for (auto& t : server_->tables()->tables()) t->store->Flush();

  auto stats = client_->Stats(3);
  ASSERT_TRUE(stats.ok()) << stats.status();
  bool found = false;
  for (const auto& t : stats->tables()) {
    if (t.table().layer() != 1) continue;
    found = true;
    ASSERT_GE(t.hottest_size(), 1);
    EXPECT_EQ(t.hottest(0).row_id(), 50u) << "the flood made row " << t.hottest(0).row_id()
                                          << " the hottest";
    for (const auto& h : t.hottest()) {
      if (h.row_id() == 5) {
        EXPECT_LE(h.count(), MemoryTierService::kArenaHitsPerRow + 0.5);
      }
    }
  }
  EXPECT_TRUE(found);
  const double credited_second = MemoryTierService::kArenaHitAllowance -
                                 MemoryTierService::kArenaHitsPerRow;
  auto metrics = testing::HttpGet(server_->metrics_port(), "/metrics");
  ASSERT_TRUE(metrics.ok()) << metrics.status();
  EXPECT_EQ(testing::MetricValue(*metrics, "engram_arena_hits_dropped_total"),
            (300000 - MemoryTierService::kArenaHitsPerRow) + (5000 - credited_second));
  EXPECT_EQ(testing::MetricValue(*metrics, "engram_tier_rows_served_total{tier=\"arena\"}"),
            MemoryTierService::kArenaHitAllowance);
}

// TLS with gRPC's credentials, over loopback with a CA and certificates made by openssl here:
// a worker-like client with the CA and a client certificate of that CA works; a plaintext client,
// a TLS client without a client certificate and one whose certificate another CA signed are all
// refused by the mutual-TLS tier.
TEST_F(TierServiceTest, MutualTlsAdmitsOnlyClientsWithTheRightCertificates) {
  testing::TestPki pki;
  ASSERT_TRUE(testing::MakeTestPki(tmp_.path(), &pki)) << "see " << tmp_.path() << "/openssl.log";
  TierConfig config = Config();
  config.server.tls_cert = pki.server_cert;
  config.server.tls_key = pki.server_key;
  config.server.tls_client_ca = pki.ca;
  auto server = TierServer::Start(config);
  ASSERT_TRUE(server.ok()) << server.status();
  const std::string address = absl::StrCat("localhost:", (*server)->port());
  TierClientOptions good{.address = address, .connect_timeout = absl::Seconds(5)};
  good.tls = {pki.ca, pki.client_cert, pki.client_key};
  auto client = TierClient::Connect(good);
  ASSERT_TRUE(client.ok()) << client.status();
  auto tables = (*client)->TableInfo();
  ASSERT_TRUE(tables.ok()) << tables.status();
  EXPECT_EQ(tables->size(), 2u);
  auto rows = (*client)->Lookup({"testmodel", 1, 0}, {1, 2, 3});
  EXPECT_TRUE(rows.ok()) << rows.status();

  auto refused = [&](TierClientOptions o, const char* what) {
    o.address = address;
    o.connect_timeout = absl::Seconds(2);
    auto c = TierClient::Connect(o);
    if (c.ok()) {
      EXPECT_FALSE((*c)->TableInfo().ok()) << what << " was served";
    } else {
      EXPECT_EQ(c.status().code(), absl::StatusCode::kUnavailable) << what << ": " << c.status();
    }
  };
  refused({}, "a plaintext client");
  TierClientOptions no_cert;
  no_cert.tls.ca = pki.ca;
  refused(no_cert, "a TLS client without a client certificate");
  TierClientOptions rogue;
  rogue.tls = {pki.ca, pki.rogue_cert, pki.rogue_key};
  refused(rogue, "a client certificate of another CA");
  // The raw plaintext call of a debugging tool gets nothing either.
  testing::RawCallResult raw = testing::RawCall(address, "/engram.v1.MemoryTier/TableInfo", {""});
  EXPECT_FALSE(raw.status.ok());

  // TLS without --tls-client-ca: any TLS client is served, plaintext still refused.
  (*server)->Shutdown();
  config.server.tls_client_ca.clear();
  auto one_way = TierServer::Start(config);
  ASSERT_TRUE(one_way.ok()) << one_way.status();
  TierClientOptions ca_only{.address = absl::StrCat("localhost:", (*one_way)->port())};
  ca_only.tls.ca = pki.ca;
  auto c = TierClient::Connect(ca_only);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_TRUE((*c)->TableInfo().ok());
  TierClientOptions plain{.address = ca_only.address, .connect_timeout = absl::Seconds(2)};
  EXPECT_FALSE(TierClient::Connect(plain).ok());

  // A key without a certificate, or an unreadable file, is a configuration error naming it.
  TierConfig half = Config();
  half.server.tls_key = pki.server_key;
  EXPECT_NE(half.Validate().message().find("--tls-cert and --tls-key"), std::string::npos);
  TierConfig missing = Config();
  missing.server.tls_cert = tmp_.path() + "/nope.pem";
  missing.server.tls_key = pki.server_key;
  auto failed = TierServer::Start(missing);
  ASSERT_FALSE(failed.ok());
  EXPECT_NE(failed.status().message().find("nope.pem"), std::string::npos) << failed.status();
}

// Reflection (grpcurl's listing) is served by default and absent with server.reflection = false.
TEST_F(TierServiceTest, ReflectionCanBeTurnedOff) {
  const std::string list_services("\x3a\x00", 2);
  const char* method = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo";
  StartServer();
  testing::RawCallResult on = testing::RawCall(absl::StrCat("127.0.0.1:", server_->port()), method, {list_services});
  EXPECT_TRUE(on.status.ok()) << on.status.error_message();
  ASSERT_EQ(on.responses.size(), 1u);
  EXPECT_NE(on.responses[0].find("engram.v1.MemoryTier"), std::string::npos);
  server_->Shutdown();
  TierConfig config = Config();
  config.server.reflection = false;
  auto off = TierServer::Start(config);
  ASSERT_TRUE(off.ok()) << off.status();
  testing::RawCallResult r = testing::RawCall(absl::StrCat("127.0.0.1:", (*off)->port()), method, {list_services});
  EXPECT_EQ(r.status.error_code(), grpc::StatusCode::UNIMPLEMENTED) << r.status.error_message();
}

TEST_F(TierServiceTest, BadInputGetsClearErrorsAndTheStreamGoesOn) {
  StartServer();
  auto unknown = client_->Lookup({"nosuchmodel", 1, 0}, std::vector<uint64_t>{1});
  EXPECT_EQ(unknown.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(unknown.status().message().find("unknown table nosuchmodel layer 1"),
            absl::string_view::npos)
      << unknown.status();
  auto version = client_->Lookup({"testmodel", 1, 9}, std::vector<uint64_t>{1});
  EXPECT_EQ(version.status().code(), absl::StatusCode::kFailedPrecondition) << version.status();
  auto range = client_->Lookup({"testmodel", 1, 0}, std::vector<uint64_t>{1, rows_ + 5});
  EXPECT_EQ(range.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(range.status().message().find(absl::StrCat(rows_ + 5)), absl::string_view::npos);
  auto big = client_->Lookup({"testmodel", 1, 0}, std::vector<uint64_t>(5001, 1));
  EXPECT_EQ(big.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(big.status().message().find("5001"), absl::string_view::npos) << big.status();

  auto stream = client_->OpenPrefetchStream({});
  ASSERT_TRUE(stream.ok());
  auto bad = (*stream)->SendAsync(
      {.batch_id = 1, .table = {"testmodel", 3, 0}, .row_ids = {layer_rows_[3]}});
  auto good =
      (*stream)->SendAsync({.batch_id = 2, .table = {"testmodel", 3, 0}, .row_ids = {4, 3}});
  PrefetchResult b = bad.get(), g = good.get();
  EXPECT_EQ(b.status.code(), absl::StatusCode::kInvalidArgument);
  ASSERT_TRUE(g.status.ok()) << g.status;
  ExpectRows(3, {4, 3}, g.rows);
  EXPECT_EQ((*stream)->Send({.batch_id = 3}).code(), absl::StatusCode::kFailedPrecondition)
      << "Send without on_result";
  EXPECT_TRUE((*stream)->Finish().ok());
  EXPECT_TRUE(client_->CheckHealth().ok());
}

// Requests that are not the method's message (garbage, a model name that is not UTF-8) are
// INVALID_ARGUMENT naming the message on every method, where gRPC's own handlers would answer a
// bare UNIMPLEMENTED. On a Prefetch stream the batches before the bad message are answered, then
// the stream ends with the error; the server serves on.
TEST_F(TierServiceTest, UnparsableRequestsAreInvalidArgument) {
  StartServer();
  const std::string address = absl::StrCat("127.0.0.1:", server_->port());
  const std::string garbage = "\xff\xff\xff\xff";
  v1::TableInfoRequest table_info;
  table_info.set_model("testmodel");
  std::string bad_model = table_info.SerializeAsString();
  bad_model.back() = '\xfe';
  const struct {
    const char* method;
    std::string request;
    const char* message;
  } cases[] = {
      {"Lookup", garbage, "engram.v1.LookupRequest"},
      {"TableInfo", bad_model, "engram.v1.TableInfoRequest"},
      {"Stats", garbage, "engram.v1.StatsRequest"},
      {"Prefetch", garbage, "engram.v1.PrefetchRequest"},
  };
  for (const auto& c : cases) {
    testing::RawCallResult r =
        testing::RawCall(address, absl::StrCat("/engram.v1.MemoryTier/", c.method), {c.request});
    EXPECT_EQ(r.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT)
        << c.method << ": " << r.status.error_message();
    EXPECT_NE(r.status.error_message().find(c.message), std::string::npos)
        << r.status.error_message();
    EXPECT_TRUE(r.responses.empty()) << c.method;
  }

  v1::PrefetchRequest batch;
  batch.set_batch_id(7);
  batch.mutable_table()->set_model("testmodel");
  batch.mutable_table()->set_layer(1);
  batch.add_row_ids(5);
  batch.add_row_ids(2);
  testing::RawCallResult stream = testing::RawCall(
      address, "/engram.v1.MemoryTier/Prefetch", {batch.SerializeAsString(), garbage});
  EXPECT_EQ(stream.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT)
      << stream.status.error_message();
  ASSERT_EQ(stream.responses.size(), 1u);
  v1::PrefetchResponse answered;
  ASSERT_TRUE(answered.ParseFromString(stream.responses[0]));
  EXPECT_EQ(answered.batch_id(), 7u);
  EXPECT_EQ(answered.error_code(), 0) << answered.error_message();
  ExpectRows(1, {5, 2}, answered.rows());

  // Well-formed raw requests take the same path; the typed client is unaffected.
  v1::LookupRequest lookup;
  lookup.mutable_table()->set_model("testmodel");
  lookup.mutable_table()->set_layer(3);
  lookup.add_row_ids(4);
  testing::RawCallResult ok =
      testing::RawCall(address, "/engram.v1.MemoryTier/Lookup", {lookup.SerializeAsString()});
  ASSERT_TRUE(ok.status.ok()) << ok.status.error_message();
  ASSERT_EQ(ok.responses.size(), 1u);
  v1::LookupResponse rows;
  ASSERT_TRUE(rows.ParseFromString(ok.responses[0]));
  ExpectRows(3, {4}, rows.rows());
  auto typed = client_->Lookup({"testmodel", 1, 0}, std::vector<uint64_t>{3});
  ASSERT_TRUE(typed.ok()) << typed.status();
  EXPECT_TRUE(client_->CheckHealth().ok());
}

// An unknown table name of 2 MiB is not echoed back whole: the error stays short.
TEST_F(TierServiceTest, ErrorsDoNotEchoLargeInput) {
  StartServer();
  const std::string name(2 << 20, 'm');
  auto r = client_->Lookup({name, 1, 0}, std::vector<uint64_t>{1});
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << r.status().message().size();
  EXPECT_LT(r.status().message().size(), 1024u);
  EXPECT_NE(r.status().message().find("2097152 bytes"), absl::string_view::npos);
}

// A batch_id that is already pending on the stream is refused (INVALID_ARGUMENT), not answered
// twice; the first batch with that id gets its rows and the stream goes on.
//
// Whether the twin finds the big batch still pending is up to the scheduler: the big batch may
// finish before the twin is read (seen about once in 25 tries on a loaded 2-core machine), and
// then both are rightly answered. So every try checks that each response is right under either
// order, and the refusal must be seen within kTries streams.
TEST_F(TierServiceTest, ADuplicatePendingBatchIdIsRefused) {
  StartServer();
  const std::string address = absl::StrCat("127.0.0.1:", server_->port());
  std::mt19937_64 rng(7);
  v1::PrefetchRequest big;  // the largest batch allowed: usually pending when its twin is read
  big.set_batch_id(7);
  big.mutable_table()->set_model("testmodel");
  big.mutable_table()->set_layer(3);
  const std::vector<uint64_t> ids = RandomIds(rng, 5000);
  for (uint64_t id : ids) big.add_row_ids(id);
  v1::PrefetchRequest twin = big;
  twin.clear_row_ids();
  twin.add_row_ids(1);
  v1::PrefetchRequest next;
  next.set_batch_id(8);
  next.mutable_table()->set_model("testmodel");
  next.mutable_table()->set_layer(1);
  next.add_row_ids(2);
  constexpr int kTries = 20;
  int tries = 0;
  bool refused_seen = false;
  while (!refused_seen && tries < kTries) {
    ++tries;
    testing::RawCallResult r = testing::RawCall(
        address, "/engram.v1.MemoryTier/Prefetch",
        {big.SerializeAsString(), twin.SerializeAsString(), next.SerializeAsString()});
    ASSERT_TRUE(r.status.ok()) << r.status.error_message();
    ASSERT_EQ(r.responses.size(), 3u);
    int refused = 0, answered_big = 0, answered_twin = 0;
    for (const std::string& bytes : r.responses) {
      v1::PrefetchResponse resp;
      ASSERT_TRUE(resp.ParseFromString(bytes));
      if (resp.batch_id() == 8) {
        EXPECT_EQ(resp.error_code(), 0) << resp.error_message();
        ExpectRows(1, {2}, resp.rows());
        continue;
      }
      ASSERT_EQ(resp.batch_id(), 7u);
      if (resp.error_code() != 0) {
        ++refused;
        EXPECT_EQ(resp.error_code(), static_cast<int>(absl::StatusCode::kInvalidArgument));
        EXPECT_NE(resp.error_message().find("already pending"), std::string::npos)
            << resp.error_message();
      } else if (resp.rows().size() == row_bytes_) {
        ++answered_twin;  // the big batch had finished before the twin was read
        ExpectRows(3, {1}, resp.rows());
      } else {
        ++answered_big;
        ExpectRows(3, ids, resp.rows());
      }
    }
    EXPECT_EQ(answered_big, 1) << "try " << tries;
    EXPECT_EQ(refused + answered_twin, 1) << "try " << tries;
    refused_seen = refused == 1;
  }
  EXPECT_TRUE(refused_seen) << "the twin never found its batch pending in " << kTries << " tries";
}

// A batch within max_batch_rows whose rows would not fit one response: refused up front with a
// message naming the limit. Sent anyway, the response would fail in gRPC and, on a Prefetch
// stream, end the stream for every other batch.
TEST_F(TierServiceTest, BatchesTooLargeForOneResponseAreRefusedAndTheStreamGoesOn) {
  TierConfig config = Config();
  config.server.max_batch_rows = 100000;
  config.server.max_message_bytes = 1 << 20;
  StartServer(config);
  const size_t too_many = (1 << 20) / row_bytes_ + 1;
  std::vector<uint64_t> ids(too_many, 7);
  auto lookup = client_->Lookup({"testmodel", 1, 0}, ids);
  EXPECT_EQ(lookup.status().code(), absl::StatusCode::kInvalidArgument) << lookup.status();
  EXPECT_NE(lookup.status().message().find("max_message_bytes"), absl::string_view::npos)
      << lookup.status();

  auto stream = client_->OpenPrefetchStream({});
  ASSERT_TRUE(stream.ok());
  auto big = (*stream)->SendAsync({.batch_id = 1, .table = {"testmodel", 1, 0}, .row_ids = ids});
  auto next = (*stream)->SendAsync({.batch_id = 2, .table = {"testmodel", 1, 0}, .row_ids = {9}});
  PrefetchResult b = big.get(), n = next.get();
  EXPECT_EQ(b.status.code(), absl::StatusCode::kInvalidArgument) << b.status;
  ASSERT_TRUE(n.status.ok()) << n.status;
  ExpectRows(1, {9}, n.rows);
  EXPECT_TRUE((*stream)->Finish().ok());
}

// A Prefetch client that writes all its batches and reads no response until told to: a worker
// whose result handling is stuck.
class LaggingPrefetchClient
    : public grpc::ClientBidiReactor<v1::PrefetchRequest, v1::PrefetchResponse> {
 public:
  LaggingPrefetchClient(v1::MemoryTier::Stub* stub, std::vector<v1::PrefetchRequest> requests)
      : requests_(std::move(requests)) {
    stub->async()->Prefetch(&context_, this);
    AddHold();  // the reads start from the test thread
    StartWrite(&requests_[0]);
    StartCall();
  }
  // The call must end before the reactor goes, also when a failed assertion leaves early.
  ~LaggingPrefetchClient() override {
    context_.TryCancel();
    StartReading();
    absl::MutexLock lock(&mu_);
    mu_.Await(absl::Condition(&done_));
  }
  void StartReading() {
    {
      absl::MutexLock lock(&mu_);
      if (reading_) return;
      reading_ = true;
    }
    StartRead(&response_);
    RemoveHold();
  }
  void OnWriteDone(bool ok) override {
    if (!ok) return;
    if (++written_ < requests_.size()) {
      StartWrite(&requests_[written_]);
    } else {
      StartWritesDone();
    }
  }
  void OnReadDone(bool ok) override {
    if (!ok) return;
    {
      absl::MutexLock lock(&mu_);
      responses_.push_back(response_);
    }
    StartRead(&response_);
  }
  void OnDone(const grpc::Status& status) override {
    absl::MutexLock lock(&mu_);
    status_ = status;
    done_ = true;
  }
  std::vector<v1::PrefetchResponse> Await(grpc::Status* status) {
    absl::MutexLock lock(&mu_);
    mu_.Await(absl::Condition(&done_));
    *status = status_;
    return responses_;
  }

 private:
  grpc::ClientContext context_;
  std::vector<v1::PrefetchRequest> requests_;
  size_t written_ = 0;
  v1::PrefetchResponse response_;
  absl::Mutex mu_;
  std::vector<v1::PrefetchResponse> responses_ ABSL_GUARDED_BY(mu_);
  grpc::Status status_ ABSL_GUARDED_BY(mu_);
  bool reading_ ABSL_GUARDED_BY(mu_) = false;
  bool done_ ABSL_GUARDED_BY(mu_) = false;
};

// A client that stops reading its responses must not make the server buffer every answer (a
// stuck worker would otherwise grow engram-memory until the host kills it, taking every other
// worker's rows with it): the stream is capped at max_message_bytes of unsent responses, and the
// server stops reading it until the client catches up. Then every batch is answered exactly.
TEST_F(TierServiceTest, AClientThatStopsReadingIsHeldBackNotBuffered) {
  TierConfig config = Config();
  config.server.max_batch_rows = 100000;
  config.server.max_message_bytes = 1 << 20;  // also the per-stream cap on unsent responses
  StartServer(config);
  const size_t kBatches = 48, kRows = 16000;  // ~1 MB of rows per response, 48 MB in all
  std::mt19937_64 rng(11);
  std::vector<v1::PrefetchRequest> requests(kBatches);
  std::vector<std::vector<uint64_t>> ids(kBatches);
  for (size_t b = 0; b < kBatches; ++b) {
    ids[b] = RandomIds(rng, kRows);
    requests[b].set_batch_id(b);
    requests[b].mutable_table()->set_model("testmodel");
    requests[b].mutable_table()->set_layer(1);
    requests[b].mutable_row_ids()->Assign(ids[b].begin(), ids[b].end());
  }
  // A channel whose receive window stays at 64 KiB (no BDP probing growing it to megabytes), so
  // responses pile up on the server, not inside the client's transport.
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_HTTP2_BDP_PROBE, 0);
  args.SetInt(GRPC_ARG_HTTP2_STREAM_LOOKAHEAD_BYTES, 64 * 1024);
  args.SetMaxReceiveMessageSize(64 << 20);
  auto stub = v1::MemoryTier::NewStub(grpc::CreateCustomChannel(
      absl::StrCat("127.0.0.1:", server_->port()), grpc::InsecureChannelCredentials(), args));
  LaggingPrefetchClient lagging(stub.get(), requests);

  // The server reaches its cap and stops reading this stream. (Polled with a deadline: without
  // the cap this state never comes and the wait fails.)
  const int port = server_->metrics_port();
  testing::WaitUntil([&] { return ScrapeMetric(port, "engram_prefetch_paused_streams") == 1; },
                     absl::Seconds(30));
  ASSERT_EQ(ScrapeMetric(port, "engram_prefetch_paused_streams"), 1);
  // At most the cap plus the one batch that crossed it.
  EXPECT_LE(ScrapeMetric(port, "engram_prefetch_unsent_bytes"), 2.0 * (1 << 20));
  // Other clients are served meanwhile.
  auto other = client_->Lookup({"testmodel", 3, 0}, std::vector<uint64_t>{5, 6});
  ASSERT_TRUE(other.ok()) << other.status();
  ExpectRows(3, {5, 6}, other->rows);

  lagging.StartReading();
  grpc::Status status;
  std::vector<v1::PrefetchResponse> responses = lagging.Await(&status);
  EXPECT_TRUE(status.ok()) << status.error_message();
  ASSERT_EQ(responses.size(), kBatches);
  std::vector<bool> seen(kBatches, false);
  for (const v1::PrefetchResponse& r : responses) {
    ASSERT_EQ(r.error_code(), 0) << r.error_message();
    ASSERT_LT(r.batch_id(), kBatches);
    EXPECT_FALSE(seen[r.batch_id()]);
    seen[r.batch_id()] = true;
    ExpectRows(1, ids[r.batch_id()], r.rows());
  }
}

TEST_F(TierServiceTest, ACorruptRowFileIsRefusedAndTheOtherTableServed) {
  {
    auto catalog = Catalog::Open(store_dir(), Catalog::Mode::kReadOnly);
    ASSERT_TRUE(catalog.ok());
    auto m = (*catalog)->GetManifest("testmodel", 3, 1);
    ASSERT_TRUE(m.ok());
    const std::string path = store_dir() + "/" + m->row_file;
    auto f = ReadWholeFile(path);
    ASSERT_TRUE(f.ok());
    (*f)[m->ChunkBegin(1) + 10] ^= 0x40;
    ASSERT_TRUE(WriteFileAtomically(path, *f).ok());
  }
  StartServer();
  auto t3 = client_->FindTable("testmodel", 3);
  ASSERT_TRUE(t3.ok());
  EXPECT_FALSE(t3->serving);
  EXPECT_NE(t3->unavailable_reason.find("chunk 1 of"), std::string::npos) << t3->unavailable_reason;
  auto r = client_->Lookup({"testmodel", 3, 0}, std::vector<uint64_t>{1});
  EXPECT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(r.status().message().find("checksum mismatch"), absl::string_view::npos) << r.status();
  auto ok = client_->Lookup({"testmodel", 1, 0}, std::vector<uint64_t>{1, 2});
  ASSERT_TRUE(ok.ok()) << ok.status();
  ExpectRows(1, {1, 2}, ok->rows);
  // Health tells the truth per table: the refused one is NOT_SERVING under its own name.
  auto health = grpc::health::v1::Health::NewStub(
      grpc::CreateChannel(absl::StrCat("127.0.0.1:", server_->port()),
                          grpc::InsecureChannelCredentials()));
  auto check = [&](const std::string& service) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
    grpc::health::v1::HealthCheckRequest req;
    req.set_service(service);
    grpc::health::v1::HealthCheckResponse resp;
    grpc::Status st = health->Check(&ctx, req, &resp);
    return st.ok() ? static_cast<int>(resp.status()) : -static_cast<int>(st.error_code());
  };
  EXPECT_EQ(check("engram.v1.MemoryTier/testmodel/3"),
            grpc::health::v1::HealthCheckResponse::NOT_SERVING);
  EXPECT_EQ(check("engram.v1.MemoryTier/testmodel/1"),
            grpc::health::v1::HealthCheckResponse::SERVING);
  EXPECT_EQ(check(TableHealthServiceName("testmodel", 1)),
            grpc::health::v1::HealthCheckResponse::SERVING);
}

// A live version whose catalog manifest cannot be read (damaged, or written by a build with
// other rules) is refused like a corrupt row file; clients still list every table and use the
// others.
TEST_F(TierServiceTest, AnUnreadableManifestIsRefusedAndTableInfoStillWorks) {
  {
    auto catalog = Catalog::Open(store_dir(), Catalog::Mode::kReadWrite);
    ASSERT_TRUE(catalog.ok());
    auto m = (*catalog)->GetManifest("testmodel", 3, 1);
    ASSERT_TRUE(m.ok());
    m->version = 2;
    m->chunk_crc32c.clear();  // no longer matches the layout: FromJson refuses it
    ASSERT_TRUE((*catalog)->CommitVersions({*m}).ok());
  }
  StartServer();
  auto tables = client_->TableInfo();
  ASSERT_TRUE(tables.ok()) << tables.status();
  ASSERT_EQ(tables->size(), 2u);
  auto t3 = client_->FindTable("testmodel", 3);
  ASSERT_TRUE(t3.ok()) << t3.status();
  EXPECT_FALSE(t3->serving);
  EXPECT_NE(t3->unavailable_reason.find("chunk checksums"), std::string::npos)
      << t3->unavailable_reason;
  EXPECT_EQ(client_->Lookup({"testmodel", 3, 0}, std::vector<uint64_t>{1}).status().code(),
            absl::StatusCode::kFailedPrecondition);
  auto t1 = client_->FindTable("testmodel", 1);
  ASSERT_TRUE(t1.ok()) << t1.status();
  EXPECT_TRUE(t1->serving);
  auto ok = client_->Lookup({"testmodel", 1, 0}, std::vector<uint64_t>{3});
  ASSERT_TRUE(ok.ok()) << ok.status();
  ExpectRows(1, {3}, ok->rows);
}

TEST_F(TierServiceTest, DrainEndsStreamsWithUnavailableAndRestartComesBackWarm) {
  StartServer();
  std::vector<uint64_t> hot = {11, 222, 1333, 444};
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(client_->Lookup({"testmodel", 3, 0}, hot).ok());
  absl::Notification broken;
  absl::Status broken_status;
  auto stream = client_->OpenPrefetchStream({.on_result = [](PrefetchResult) {},
                                             .on_broken =
                                                 [&](const absl::Status& s) {
                                                   broken_status = s;
                                                   broken.Notify();
                                                 }});
  ASSERT_TRUE(stream.ok());
  ASSERT_TRUE((*stream)->Send({.batch_id = 1, .table = {"testmodel", 1, 0}, .row_ids = {1}}).ok());
  // The stream is established once its first batch is answered.
  PrefetchResult first =
      (*stream)->SendAsync({.batch_id = 9, .table = {"testmodel", 1, 0}, .row_ids = {2}}).get();
  ASSERT_TRUE(first.status.ok()) << first.status;
  server_->Shutdown();
  broken.WaitForNotification();
  EXPECT_EQ(broken_status.code(), absl::StatusCode::kUnavailable) << broken_status;
  EXPECT_EQ((*stream)->Send({.batch_id = 2, .table = {"testmodel", 1, 0}, .row_ids = {1}}).code(),
            absl::StatusCode::kUnavailable);
  EXPECT_EQ((*stream)->Finish().code(), absl::StatusCode::kUnavailable);
  stream->reset();
  client_.reset();
  server_.reset();

  // The statistics were persisted at drain: the restarted server's cache holds the hot rows.
  {
    auto catalog = Catalog::Open(store_dir(), Catalog::Mode::kReadOnly);
    ASSERT_TRUE(catalog.ok());
    auto saved = (*catalog)->LoadStats("testmodel", 3, 4);
    ASSERT_TRUE(saved.ok());
    ASSERT_EQ(saved->size(), 4u);
    for (const RowCount& rc : *saved) EXPECT_TRUE(std::count(hot.begin(), hot.end(), rc.row));
  }
  StartServer();
  auto r = client_->Lookup({"testmodel", 3, 0}, hot);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->served_by.dram, hot.size()) << "the hot rows should be in DRAM at start";
  ExpectRows(3, hot, r->rows);
}

// ---- Corruption after start (page checksums, docs/memory-tier.md "Integrity") -----------------

// Flips one byte of row `row` of the live version of `layer` in its row file, beside the running
// server (the catalog opens read-only next to it). Returns the row's page.
uint64_t FlipRowByte(const std::string& store, uint32_t layer, uint64_t row) {
  auto catalog = Catalog::Open(store, Catalog::Mode::kReadOnly);
  EXPECT_TRUE(catalog.ok()) << catalog.status();
  if (!catalog.ok()) return 0;
  auto record = (*catalog)->GetTable("testmodel", layer);
  EXPECT_TRUE(record.ok() && record->has_value());
  auto m = (*catalog)->GetManifest("testmodel", layer, (*record)->live_version);
  EXPECT_TRUE(m.ok()) << m.status();
  const std::string path = store + "/" + m->row_file;
  auto fd = OpenFile(path, O_RDWR);
  EXPECT_TRUE(fd.ok()) << fd.status();
  const uint64_t off = m->layout.RowOffset(row) + 1;
  uint8_t b = 0;
  EXPECT_TRUE(PreadAll(fd->get(), &b, 1, off, path).ok());
  b ^= 0x80;
  EXPECT_TRUE(PwriteAll(fd->get(), &b, 1, off, path).ok());
  return m->layout.PageOf(row);
}

TEST_F(TierServiceTest, AByteFlippedWhileServingFailsItsRowsWithDataLossAndMarksTheTable) {
  TierConfig config = Config();
  config.store.scrub_bytes_per_s = 0;  // only the reads find it here
  StartServer(config);
  const int port = server_->metrics_port();
  const std::string metric =
      "engram_row_file_corrupt_pages_total{source=\"read\",table=\"testmodel/3\"}";
  EXPECT_EQ(ScrapeMetric(port, metric), 0);
  // Layer 3 is the cache table: row 1234 is read from NVMe (and would be promoted into DRAM).
  ASSERT_TRUE(client_->Lookup({"testmodel", 3, 0}, std::vector<uint64_t>{1234, 7}).ok());
  const uint64_t bad_row = 1300;  // never read yet: not in the cache
  const uint64_t page = FlipRowByte(store_dir(), 3, bad_row);

  auto r = client_->Lookup({"testmodel", 3, 0}, std::vector<uint64_t>{7, bad_row, 1234});
  ASSERT_EQ(r.status().code(), absl::StatusCode::kDataLoss) << r.status();
  EXPECT_NE(r.status().message().find(absl::StrCat("page ", page, " (rows ")),
            absl::string_view::npos)
      << r.status();
  EXPECT_NE(r.status().message().find("checksum mismatch"), absl::string_view::npos);
  // Over the Prefetch stream: that batch fails with DATA_LOSS, the stream and the others go on.
  auto stream = client_->OpenPrefetchStream({});
  ASSERT_TRUE(stream.ok());
  auto failed = (*stream)->SendAsync(
      {.batch_id = 1, .table = {"testmodel", 3, 0}, .row_ids = {bad_row, 8}});
  auto fine = (*stream)->SendAsync({.batch_id = 2, .table = {"testmodel", 3, 0}, .row_ids = {8, 9}});
  PrefetchResult f = failed.get();
  EXPECT_EQ(f.status.code(), absl::StatusCode::kDataLoss) << f.status;
  PrefetchResult g = fine.get();
  ASSERT_TRUE(g.status.ok()) << g.status;
  ExpectRows(3, {8, 9}, g.rows);
  EXPECT_TRUE((*stream)->Finish().ok());
  // Every other row is served exactly, from both tables.
  auto ok3 = client_->Lookup({"testmodel", 3, 0}, std::vector<uint64_t>{7, 1234, 5, 1500});
  ASSERT_TRUE(ok3.ok()) << ok3.status();
  ExpectRows(3, {7, 1234, 5, 1500}, ok3->rows);
  auto ok1 = client_->Lookup({"testmodel", 1, 0}, std::vector<uint64_t>{bad_row, 3});
  ASSERT_TRUE(ok1.ok()) << ok1.status();
  ExpectRows(1, {bad_row, 3}, ok1->rows);

  // The bad row never entered the DRAM cache (a failed batch promotes nothing), the good ones did.
  for (auto& t : server_->tables()->tables()) t->store->Flush();
  auto cache = client_->FindTable("testmodel", 3);
  ASSERT_TRUE(cache.ok());
  auto reader = ArenaReader::Open(*cache);
  ASSERT_TRUE(reader.ok()) << reader.status();
  std::vector<uint64_t> probe = {1234, bad_row};
  std::string rows(probe.size() * row_bytes_, '\0');
  std::vector<uint32_t> missing;
  ASSERT_TRUE((*reader)->Lookup(probe, reinterpret_cast<uint8_t*>(rows.data()), &missing).ok());
  EXPECT_EQ(missing, std::vector<uint32_t>{1});

  // Counted once (three reads found it), listed, and the table still serves.
  EXPECT_EQ(ScrapeMetric(port, metric), 1);
  EXPECT_EQ(ScrapeMetric(port, "engram_memory_tables_needing_reimport"), 1);
  EXPECT_TRUE(cache->serving);
  EXPECT_TRUE(cache->needs_reimport);
  EXPECT_EQ(cache->corrupt_pages, 1u);
  EXPECT_NE(cache->reimport_reason.find("checksum mismatch"), std::string::npos)
      << cache->reimport_reason;
  auto other = client_->FindTable("testmodel", 1);
  ASSERT_TRUE(other.ok());
  EXPECT_FALSE(other->needs_reimport);
  reader->reset();
  client_.reset();
  server_.reset();

  // The mark is in the catalog: `engram table import` rewrites layer 3 (only), without --force,
  // and the restarted server serves the row again.
  {
    auto catalog = Catalog::Open(store_dir(), Catalog::Mode::kReadWrite);
    ASSERT_TRUE(catalog.ok());
    auto record = (*catalog)->GetTable("testmodel", 3);
    ASSERT_TRUE(record.ok() && record->has_value());
    EXPECT_TRUE((*record)->live_needs_reimport());
    EXPECT_NE((*record)->reimport_reason.find("checksum mismatch"), std::string::npos);
    ImportOptions io;
    io.model_dir = model_dir();
    io.chunk_bytes = 8192;
    auto imported = ImportModel(**catalog, io);
    ASSERT_TRUE(imported.ok()) << imported.status();
    ASSERT_EQ(imported->layers.size(), 2u);
    EXPECT_TRUE(imported->layers[0].unchanged);
    EXPECT_FALSE(imported->layers[1].unchanged);
    EXPECT_EQ(imported->layers[1].version, 2u);
  }
  StartServer(config);
  auto again = client_->Lookup({"testmodel", 3, 0}, std::vector<uint64_t>{bad_row});
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->version, 2u);
  ExpectRows(3, {bad_row}, again->rows);
  auto healed = client_->FindTable("testmodel", 3);
  ASSERT_TRUE(healed.ok());
  EXPECT_FALSE(healed->needs_reimport);
}

TEST_F(TierServiceTest, WithoutDramAFlippedByteIsDataLossFromTheNvmeTier) {
  TierConfig config = Config();
  config.dram.bytes = 0;
  config.store.scrub_bytes_per_s = 0;
  StartServer(config);
  ASSERT_TRUE(client_->Lookup({"testmodel", 1, 0}, std::vector<uint64_t>{40}).ok());
  FlipRowByte(store_dir(), 1, 40);
  auto r = client_->Lookup({"testmodel", 1, 0}, std::vector<uint64_t>{40});
  EXPECT_EQ(r.status().code(), absl::StatusCode::kDataLoss) << r.status();
  // Row 40's page holds rows 0..63 (64-byte rows); the rows of other pages are served.
  auto ok = client_->Lookup({"testmodel", 1, 0}, std::vector<uint64_t>{1000, 64});
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(ok->served_by.nvme, 2u);
  ExpectRows(1, {1000, 64}, ok->rows);
  EXPECT_EQ(client_->Lookup({"testmodel", 1, 0}, std::vector<uint64_t>{63}).status().code(),
            absl::StatusCode::kDataLoss);
  EXPECT_EQ(ScrapeMetric(server_->metrics_port(),
                         "engram_row_file_corrupt_pages_total{source=\"read\",table=\"testmodel/1\"}"),
            1);
}

// Layer 1 is resident: its rows are served from the DRAM copy checked at load, so no lookup
// reads the file again. The scrub does, finds the flipped byte and marks the table.
TEST_F(TierServiceTest, TheScrubFindsABadPageNobodyReads) {
  TierConfig config = Config();
  config.store.scrub_bytes_per_s = 64 << 20;
  StartServer(config);
  const int port = server_->metrics_port();
  ASSERT_TRUE(testing::WaitUntil(
      [&] { return ScrapeMetric(port, "engram_scrub_passes_total") >= 1; }, absl::Seconds(20)));
  EXPECT_EQ(ScrapeMetric(port, "engram_row_file_corrupt_pages_total{source=\"scrub\"}"), 0);
  FlipRowByte(store_dir(), 1, 77);
  const std::string metric =
      "engram_row_file_corrupt_pages_total{source=\"scrub\",table=\"testmodel/1\"}";
  ASSERT_TRUE(testing::WaitUntil([&] { return ScrapeMetric(port, metric) == 1; },
                                 absl::Seconds(20)));
  EXPECT_GT(ScrapeMetric(port, "engram_scrub_bytes_total"), 0);
  ASSERT_TRUE(testing::WaitUntil(
      [&] {
        auto t = client_->FindTable("testmodel", 1);
        return t.ok() && t->needs_reimport;
      },
      absl::Seconds(5)));
  // The resident copy was verified at load: its rows are still right and still served.
  auto r = client_->Lookup({"testmodel", 1, 0}, std::vector<uint64_t>{77});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->served_by.dram, 1u);
  ExpectRows(1, {77}, r->rows);
  // Counted once however many passes see it.
  const double passes = ScrapeMetric(port, "engram_scrub_passes_total");
  ASSERT_TRUE(testing::WaitUntil(
      [&] { return ScrapeMetric(port, "engram_scrub_passes_total") > passes; }, absl::Seconds(20)));
  EXPECT_EQ(ScrapeMetric(port, metric), 1);
  client_.reset();
  server_.reset();
  auto catalog = Catalog::Open(store_dir(), Catalog::Mode::kReadOnly);
  ASSERT_TRUE(catalog.ok());
  auto record = (*catalog)->GetTable("testmodel", 1);
  ASSERT_TRUE(record.ok() && record->has_value());
  EXPECT_TRUE((*record)->live_needs_reimport());
}

// A live version written by an older build (format 1, no page checksums) is refused, naming the
// file and the fix; the other table is served.
TEST_F(TierServiceTest, AFormatOneRowFileIsRefusedWithTheFix) {
  {
    auto catalog = Catalog::Open(store_dir(), Catalog::Mode::kReadWrite);
    ASSERT_TRUE(catalog.ok());
    auto live = (*catalog)->GetManifest("testmodel", 3, 1);
    ASSERT_TRUE(live.ok());
    Manifest old = *live;
    old.version = 2;
    old.layout = *RowLayout::For(live->layout.rows, live->layout.row_bytes, 1);
    old.row_file = std::filesystem::path(live->row_file).parent_path().string() + "/v2.rows";
    auto writer = RowFileWriter::Create(store_dir() + "/" + old.row_file, old);
    ASSERT_TRUE(writer.ok()) << writer.status();
    ASSERT_TRUE((*writer)->Append(source_[3].data(), old.layout.rows).ok());
    ASSERT_TRUE((*writer)->Finish(&old).ok());
    ASSERT_TRUE((*catalog)->CommitVersions({old}).ok());
  }
  StartServer();
  auto t3 = client_->FindTable("testmodel", 3);
  ASSERT_TRUE(t3.ok());
  EXPECT_FALSE(t3->serving);
  EXPECT_NE(t3->unavailable_reason.find("v2.rows: row file format 1 has no page checksums"),
            std::string::npos)
      << t3->unavailable_reason;
  EXPECT_NE(t3->unavailable_reason.find("engram table import"), std::string::npos);
  EXPECT_FALSE(t3->needs_reimport);  // not corrupt: the importer rewrites it anyway
  auto r = client_->Lookup({"testmodel", 3, 0}, std::vector<uint64_t>{1});
  EXPECT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition);
  ASSERT_TRUE(client_->Lookup({"testmodel", 1, 0}, std::vector<uint64_t>{1}).ok());
}

}  // namespace
}  // namespace engram
