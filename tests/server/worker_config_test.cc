// WorkerConfig: defaults validate, the JSON file overlays them with strict keys and types, the
// effective config prints back as the same JSON, and Validate names the offending key.
#include "server/worker_config.h"

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace engram {
namespace {

WorkerConfig Valid() {
  WorkerConfig c;
  c.model.dir = "demo/model";
  c.memory_tier.address = "127.0.0.1:50052";
  return c;
}

std::string Error(const WorkerConfig& c) { return std::string(c.Validate().message()); }

TEST(WorkerConfigTest, DefaultsWithAModelValidate) {
  EXPECT_TRUE(Valid().Validate().ok()) << Valid().Validate();
  WorkerConfig no_model;
  EXPECT_NE(Error(no_model).find("model.dir"), std::string::npos) << Error(no_model);
}

TEST(WorkerConfigTest, JsonOverlaysNestedFields) {
  WorkerConfig c = Valid();
  auto j = nlohmann::json::parse(R"({
      "server": {"listen": "127.0.0.1:6000", "drain_timeout": "2.5s"},
      "memory_tier": {"shared_memory": false, "rows_timeout": "250ms"},
      "scheduler": {"max_running_requests": 8, "max_step_tokens": 64},
      "log_level": "debug"})");
  ASSERT_TRUE(ApplyJsonConfig(j, &c).ok());
  EXPECT_EQ(c.server.listen, "127.0.0.1:6000");
  EXPECT_EQ(c.server.drain_timeout, absl::Milliseconds(2500));
  EXPECT_FALSE(c.memory_tier.shared_memory);
  EXPECT_EQ(c.memory_tier.rows_timeout, absl::Milliseconds(250));
  EXPECT_EQ(c.scheduler.max_running_requests, 8);
  EXPECT_EQ(c.scheduler.max_step_tokens, 64);
  EXPECT_EQ(c.log_level, "debug");
  // Untouched fields keep their defaults.
  EXPECT_EQ(c.scheduler.prefill_chunk_tokens, WorkerConfig().scheduler.prefill_chunk_tokens);
  EXPECT_TRUE(c.Validate().ok()) << c.Validate();
}

TEST(WorkerConfigTest, ToJsonRoundTrips) {
  WorkerConfig c = Valid();
  c.scheduler.max_queued_requests = 3;
  c.memory_tier.reconnect_max_backoff = absl::Seconds(7);
  WorkerConfig d;
  ASSERT_TRUE(ApplyJsonConfig(c.ToJson(), &d).ok());
  EXPECT_EQ(d.ToJson(), c.ToJson());
  EXPECT_EQ(c.ToJson()["memory_tier"]["reconnect_max_backoff"], "7s");
}

TEST(WorkerConfigTest, UnknownKeysAndWrongTypesAreNamed) {
  auto apply = [](const char* text) {
    WorkerConfig c;
    return std::string(ApplyJsonConfig(nlohmann::json::parse(text), &c).message());
  };
  EXPECT_NE(
      apply(R"({"scheduler": {"max_runing_requests": 1}})").find("scheduler.max_runing_requests"),
      std::string::npos);
  EXPECT_NE(apply(R"({"scheduler": {"max_running_requests": "8"}})").find("must be an integer"),
            std::string::npos);
  EXPECT_NE(apply(R"({"memory_tier": {"rows_timeout": 5}})").find("duration"), std::string::npos);
  EXPECT_NE(apply(R"([1, 2])").find("JSON object"), std::string::npos);
  // Integers outside int are refused, not wrapped (4294967297 used to become 1).
  for (const char* text : {R"({"scheduler": {"max_running_requests": 4294967297}})",
                           R"({"scheduler": {"max_running_requests": 18446744073709551615}})",
                           R"({"model": {"threads": -2147483649}})"}) {
    EXPECT_NE(apply(text).find("must be an integer in [-2147483648, 2147483647]"),
              std::string::npos)
        << text;
  }
}

TEST(WorkerConfigTest, ValidateNamesTheKey) {
  WorkerConfig c = Valid();
  c.scheduler.max_step_tokens = 4;
  EXPECT_NE(Error(c).find("scheduler.max_step_tokens"), std::string::npos);
  c = Valid();
  c.server.listen = "nohostport";
  EXPECT_NE(Error(c).find("server.listen"), std::string::npos);
  c = Valid();
  c.memory_tier.reconnect_max_backoff = absl::Milliseconds(1);
  EXPECT_NE(Error(c).find("backoff"), std::string::npos);
  c = Valid();
  c.log_level = "loud";
  EXPECT_NE(Error(c).find("log_level"), std::string::npos);
  c = Valid();
  c.scheduler.max_queued_requests = -1;
  EXPECT_NE(Error(c).find("scheduler.max_queued_requests"), std::string::npos);
  c = Valid();
  c.scheduler.cold_rows = "later";
  EXPECT_NE(Error(c).find("scheduler.cold_rows"), std::string::npos);
  c.scheduler.cold_rows = "wait";
  EXPECT_TRUE(c.Validate().ok()) << c.Validate();
}

TEST(WorkerConfigTest, HttpApiSection) {
  WorkerConfig c = Valid();
  EXPECT_EQ(c.http.port, 8000);
  auto j = nlohmann::json::parse(R"({"http": {"port": 0, "threads": 12,
      "max_pending_connections": 3, "keep_alive_timeout": "2s", "request_timeout": "90s"}})");
  ASSERT_TRUE(ApplyJsonConfig(j, &c).ok());
  EXPECT_EQ(c.http.port, 0);
  EXPECT_EQ(c.http.threads, 12);
  EXPECT_EQ(c.http.max_pending_connections, 3);
  EXPECT_EQ(c.http.keep_alive_timeout, absl::Seconds(2));
  EXPECT_EQ(c.http.request_timeout, absl::Seconds(90));
  EXPECT_TRUE(c.Validate().ok()) << c.Validate();
  c.http.port = -2;
  EXPECT_NE(Error(c).find("http.port"), std::string::npos);
  c = Valid();
  c.http.keep_alive_timeout = absl::Milliseconds(10);
  EXPECT_NE(Error(c).find("http.keep_alive_timeout"), std::string::npos);
  c = Valid();
  c.http.request_timeout = absl::Seconds(-1);
  EXPECT_NE(Error(c).find("http.request_timeout"), std::string::npos);
}

// Reflection and TLS: JSON keys (the flags set the same fields), defaults, and the pairs that must
// be given together.
TEST(WorkerConfigTest, ReflectionAndTlsSection) {
  WorkerConfig c = Valid();
  EXPECT_TRUE(c.server.reflection);
  EXPECT_TRUE(c.server.tls_cert.empty() && c.memory_tier.tls_ca.empty());
  auto j = nlohmann::json::parse(R"({"server": {"reflection": false, "tls_cert": "/tls/s.crt",
      "tls_key": "/tls/s.key", "tls_client_ca": "/tls/ca.crt"},
      "memory_tier": {"tls_ca": "/tls/ca.crt", "tls_cert": "/tls/c.crt", "tls_key": "/tls/c.key"}})");
  ASSERT_TRUE(ApplyJsonConfig(j, &c).ok());
  EXPECT_FALSE(c.server.reflection);
  EXPECT_EQ(c.server.tls_client_ca, "/tls/ca.crt");
  EXPECT_EQ(c.memory_tier.tls_key, "/tls/c.key");
  EXPECT_TRUE(c.Validate().ok()) << c.Validate();
  EXPECT_EQ(c.ToJson()["memory_tier"]["tls_ca"], "/tls/ca.crt");
  c.server.tls_key.clear();
  EXPECT_NE(Error(c).find("--tls-cert and --tls-key"), std::string::npos);
  c = Valid();
  c.server.tls_client_ca = "/tls/ca.crt";
  EXPECT_NE(Error(c).find("--tls-client-ca needs"), std::string::npos);
  c = Valid();
  c.memory_tier.tls_cert = "/tls/c.crt";
  EXPECT_NE(Error(c).find("--memory-tls-cert and --memory-tls-key"), std::string::npos);
  c = Valid();
  c.memory_tier.tls_ca = "/tls/ca.crt";  // one-way TLS to the tier
  EXPECT_TRUE(c.Validate().ok()) << c.Validate();
}

}  // namespace
}  // namespace engram
