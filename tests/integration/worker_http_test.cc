// The worker's OpenAI-compatible HTTP API over loopback, driven by real HTTP clients: curl
// (Debian's /usr/bin/curl) and Python's http.client (tests/integration/openai_client.py), against
// real engram-memory + engram-worker processes. Greedy completions equal the in-process reference;
// server-sent events stream and end with [DONE]; chat completions render the model's ChatML
// template; stop strings; bad input -> 400 JSON; a full scheduler -> 429; a full connection pool ->
// 429; the memory tier away -> 503 (and /health 503); a deadline -> 504; a client that disconnects
// has its request cancelled (it leaves the running gauge); Abort by X-Request-Id; 64 concurrent
// streams; a model without a chat template -> 400; a drain; the new metrics (finish reasons,
// limits, model_name, build info, process metrics, 600 s buckets).
#include <signal.h>
#include <sys/wait.h>

#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gtest/gtest.h"
#include "model/local_generate.h"
#include "model/tokenizer.h"
#include "nlohmann/json.hpp"
#include "tests/common/test_paths.h"
#include "tests/integration/worker_cluster.h"

namespace engram {
namespace {

using nlohmann::json;
using testing::ClusterOptions;
using testing::HttpGet;
using testing::MetricValue;
using testing::Process;
using testing::WaitUntil;
using testing::WorkerCluster;

constexpr int kContext = 4096;

constexpr char kChatMl[] =
    R"({% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %})";

// Runs argv to completion (at most `timeout`); its stdout and stderr.
std::string Run(const std::vector<std::string>& argv, const std::string& log,
                absl::Duration timeout = absl::Seconds(120)) {
  std::filesystem::remove(log);
  auto p = Process::Start(argv, log);
  EXPECT_TRUE(p.ok()) << p.status();
  if (!p.ok()) return "";
  auto status = (*p)->Wait(timeout);
  EXPECT_TRUE(status.ok()) << argv[0] << " did not finish: " << status.status();
  EXPECT_TRUE(status.ok() && WIFEXITED(*status) && WEXITSTATUS(*status) == 0)
      << argv[0] << " failed:\n"
      << (*p)->LogTail(1 << 16);
  return (*p)->LogTail(1 << 22);
}

std::string Repeat(const std::string& s, int n) {
  std::string out;
  for (int i = 0; i < n; ++i) out += s;
  return out;
}

// The last line of `output` as JSON.
json LastJson(const std::string& output) {
  std::vector<std::string> lines = absl::StrSplit(output, '\n', absl::SkipWhitespace());
  if (lines.empty()) return json();
  json j = json::parse(lines.back(), nullptr, false);
  EXPECT_FALSE(j.is_discarded()) << output;
  return j;
}

class HttpApi {
 public:
  explicit HttpApi(WorkerCluster* cluster) : c_(cluster) {}

  // python3 openai_client.py PORT args...
  json Python(const std::vector<std::string>& args) {
    std::vector<std::string> argv = {"/usr/bin/python3",
                                     testing::SourceFile("tests/integration/openai_client.py"),
                                     absl::StrCat(c_->worker_http_port())};
    argv.insert(argv.end(), args.begin(), args.end());
    return LastJson(Run(argv, c_->dir() + "/python.log"));
  }
  json Request(const std::string& method, const std::string& path, const json& body = nullptr,
               const json& headers = json::object()) {
    std::vector<std::string> args = {"request", method, path};
    if (!body.is_null()) {
      args.push_back(body.dump());
      args.push_back(headers.dump());
    }
    return Python(args);
  }
  json Stream(const std::string& path, const json& body, const json& headers = json::object()) {
    return Python({"stream", path, body.dump(), headers.dump()});
  }
  // curl -sS [extra...] URL; stdout followed by "\n<http code>".
  std::string Curl(const std::string& path, const std::vector<std::string>& extra) {
    std::vector<std::string> argv = {"/usr/bin/curl", "-sS", "-w", "\n%{http_code}"};
    argv.insert(argv.end(), extra.begin(), extra.end());
    argv.push_back(absl::StrCat("http://127.0.0.1:", c_->worker_http_port(), path));
    return Run(argv, c_->dir() + "/curl.log");
  }
  std::string Metrics() {
    auto m = HttpGet(c_->worker_metrics_port(), "/metrics");
    EXPECT_TRUE(m.ok()) << m.status();
    return m.ok() ? *m : "";
  }
  double Metric(const std::string& name) { return MetricValue(Metrics(), name); }

 private:
  WorkerCluster* c_;
};

// The text of a stream's events, and the finish reason of its last choice.
std::pair<std::string, std::string> TextOf(const json& events, bool chat = false) {
  std::string text, reason;
  for (const json& e : events) {
    for (const json& c : e["choices"]) {
      if (chat) {
        if (c["delta"].contains("content")) text += c["delta"]["content"].get<std::string>();
      } else {
        text += c["text"].get<std::string>();
      }
      if (!c["finish_reason"].is_null()) reason = c["finish_reason"].get<std::string>();
    }
  }
  return {text, reason};
}

// ---- The main cluster: a ChatML template, small limits (2 running, 1 queued, 6 HTTP threads) ---

class WorkerHttpTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    ClusterOptions o;
    o.chat_template = kChatMl;
    // A long context: the requests that must still run while the test looks (429, disconnect,
    // abort) generate up to 4000 tokens, ample time even on a fast machine.
    o.max_position_embeddings = kContext;
    o.worker_flags = {"--max-running-requests", "2", "--max-queued-requests", "1",
                      "--http-threads", "6",
                      "--http-max-pending-connections", "0"};
    auto cluster = WorkerCluster::Start(o);
    ASSERT_TRUE(cluster.ok()) << cluster.status();
    cluster_ = cluster->release();
  }
  static void TearDownTestSuite() {
    delete cluster_;
    cluster_ = nullptr;
  }
  void SetUp() override { ASSERT_NE(cluster_, nullptr); }

  // Greedy in-process reference of `prompt_ids`.
  static LocalGenerateResult Reference(const std::vector<uint32_t>& prompt_ids, int max_tokens,
                                       std::vector<std::string> stop = {}) {
    const Model& model = cluster_->model();
    LocalGenerateOptions o;
    o.sampling.temperature = 0;
    o.stop.max_tokens = max_tokens;
    o.stop.eos_token_ids = model.config().eos_token_ids;
    o.stop.stop_strings = std::move(stop);
    o.threads = 1;
    auto result = LocalGenerate(model, prompt_ids, o);
    EXPECT_TRUE(result.ok()) << result.status();
    return result.ok() ? *result : LocalGenerateResult{};
  }
  static LocalGenerateResult Reference(const std::string& prompt, int max_tokens,
                                       std::vector<std::string> stop = {}) {
    auto ids = cluster_->model().tokenizer().Encode(prompt);
    EXPECT_TRUE(ids.ok());
    return Reference(*ids, max_tokens, std::move(stop));
  }

  static WorkerCluster* cluster_;
  HttpApi api_{cluster_};
};

WorkerCluster* WorkerHttpTest::cluster_ = nullptr;

TEST_F(WorkerHttpTest, CurlCompletionEqualsTheInProcessReference) {
  const std::string prompt = "The memory tier serves rows";
  const json body = {{"model", cluster_->model().name()},
                     {"prompt", prompt},
                     {"max_tokens", 20},
                     {"temperature", 0}};
  const std::string out = api_.Curl("/v1/completions", {"-H", "Content-Type: application/json",
                                                        "-d", body.dump()});
  ASSERT_TRUE(absl::EndsWith(out, "\n200")) << out << cluster_->Logs();
  const json r = json::parse(out.substr(0, out.rfind('\n')));
  const LocalGenerateResult want = Reference(prompt, 20);
  EXPECT_EQ(r["object"], "text_completion");
  EXPECT_EQ(r["model"], cluster_->model().name());
  EXPECT_TRUE(absl::StartsWith(r["id"].get<std::string>(), "cmpl-")) << r;
  ASSERT_EQ(r["choices"].size(), 1u);
  EXPECT_EQ(r["choices"][0]["text"], want.text);
  EXPECT_EQ(r["choices"][0]["index"], 0);
  EXPECT_EQ(r["choices"][0]["finish_reason"], want.tokens.size() == 20 ? "length" : "stop");
  EXPECT_EQ(r["usage"]["completion_tokens"], want.tokens.size());
  EXPECT_EQ(r["usage"]["prompt_tokens"], cluster_->model().tokenizer().Encode(prompt)->size());
  EXPECT_EQ(r["usage"]["total_tokens"],
            r["usage"]["prompt_tokens"].get<int>() + r["usage"]["completion_tokens"].get<int>());

  // Token ids as the prompt give the same answer.
  const std::vector<uint32_t> ids = *cluster_->model().tokenizer().Encode(prompt);
  const json by_ids = api_.Request("POST", "/v1/completions",
                                   {{"prompt", ids}, {"max_tokens", 20}, {"temperature", 0}});
  ASSERT_EQ(by_ids["status"], 200) << by_ids;
  EXPECT_EQ(by_ids["body"]["choices"][0]["text"], want.text);
}

TEST_F(WorkerHttpTest, CurlStreamsServerSentEventsEndingInDone) {
  const json body = {{"prompt", "Once upon a time"}, {"max_tokens", 16}, {"temperature", 0},
                     {"stream", true}};
  const std::string out = api_.Curl(
      "/v1/completions", {"-N", "-H", "Content-Type: application/json", "-d", body.dump()});
  ASSERT_TRUE(absl::EndsWith(out, "\n200")) << out;
  std::string text;
  int events = 0;
  std::string last_data;
  for (absl::string_view line : absl::StrSplit(out.substr(0, out.rfind('\n')), '\n')) {
    if (!absl::StartsWith(line, "data: ")) continue;
    last_data = std::string(line.substr(6));
    if (last_data == "[DONE]") continue;
    const json e = json::parse(last_data);
    EXPECT_EQ(e["object"], "text_completion");
    text += e["choices"][0]["text"].get<std::string>();
    ++events;
  }
  EXPECT_EQ(last_data, "[DONE]") << out;
  EXPECT_GT(events, 1) << "tokens were not streamed: " << out;
  EXPECT_EQ(text, Reference("Once upon a time", 16).text);
}

TEST_F(WorkerHttpTest, PythonStreamingWithUsageAndStopString) {
  const std::string prompt = "1 2 3 4 5 6 7 8";
  const LocalGenerateResult plain = Reference(prompt, 24);
  ASSERT_GT(plain.text.size(), 4u);
  // A stop string from the middle of the greedy text cuts it there.
  const std::string stop = plain.text.substr(plain.text.size() / 2, 2);
  const LocalGenerateResult want = Reference(prompt, 24, {stop});
  const json r = api_.Stream("/v1/completions", {{"prompt", prompt},
                                                 {"max_tokens", 24},
                                                 {"temperature", 0},
                                                 {"stop", stop},
                                                 {"stream", true},
                                                 {"stream_options", {{"include_usage", true}}}});
  ASSERT_EQ(r["status"], 200) << r;
  EXPECT_TRUE(absl::StartsWith(r["content_type"].get<std::string>(), "text/event-stream"));
  EXPECT_TRUE(r["done"].get<bool>()) << r;
  EXPECT_TRUE(r["after_done"].empty());
  const json& events = r["events"];
  ASSERT_GE(events.size(), 2u);
  // The last chunk before [DONE] carries the usage and no choices.
  const json& usage = events.back();
  EXPECT_TRUE(usage["choices"].empty()) << usage;
  EXPECT_EQ(usage["usage"]["completion_tokens"], want.tokens.size());
  auto [text, reason] = TextOf(events);
  EXPECT_EQ(text, want.text);
  EXPECT_EQ(text.find(stop), std::string::npos);
  EXPECT_EQ(reason, "stop");
}

TEST_F(WorkerHttpTest, ChatCompletionRendersTheChatMlTemplate) {
  const json messages = json::array({{{"role", "system"}, {"content", "You are terse."}},
                                     {{"role", "user"}, {"content", "Name a colour."}}});
  const std::string rendered =
      "<|im_start|>system\nYou are terse.<|im_end|>\n<|im_start|>user\nName a colour."
      "<|im_end|>\n<|im_start|>assistant\n";
  // GPT-2's vocabulary has no <|im_end|> token: it stops as a stop string.
  const LocalGenerateResult want = Reference(rendered, 12, {"<|im_end|>"});
  const json r = api_.Request("POST", "/v1/chat/completions",
                              {{"messages", messages}, {"max_tokens", 12}, {"temperature", 0}});
  ASSERT_EQ(r["status"], 200) << r << cluster_->Logs();
  EXPECT_EQ(r["body"]["object"], "chat.completion");
  EXPECT_EQ(r["body"]["choices"][0]["message"]["role"], "assistant");
  EXPECT_EQ(r["body"]["choices"][0]["message"]["content"], want.text);
  EXPECT_EQ(r["body"]["usage"]["prompt_tokens"],
            cluster_->model().tokenizer().Encode(rendered)->size());

  const json s = api_.Stream("/v1/chat/completions", {{"messages", messages},
                                                      {"max_tokens", 12},
                                                      {"temperature", 0},
                                                      {"stream", true}});
  ASSERT_EQ(s["status"], 200) << s;
  EXPECT_TRUE(s["done"].get<bool>());
  EXPECT_EQ(s["events"][0]["object"], "chat.completion.chunk");
  EXPECT_EQ(s["events"][0]["choices"][0]["delta"]["role"], "assistant");
  EXPECT_EQ(TextOf(s["events"], /*chat=*/true).first, want.text);
}

TEST_F(WorkerHttpTest, BadInputIs400WithAnOpenAiError) {
  struct Case {
    json body;
    std::string message_part;
  };
  const std::vector<Case> cases = {
      {{{"prompt", ""}}, "prompt is empty"},
      {{{"prompt", "x"}, {"temperature", -1}}, "temperature"},
      {{{"prompt", "x"}, {"top_p", 1.5}}, "top_p"},
      {{{"prompt", "x"}, {"n", 2}}, "n must be 1"},
      {{{"prompt", "x"}, {"max_tokens", 0}}, "max_tokens"},
      {{{"prompt", "x"}, {"stop", {""}}}, "stop[0] is empty"},
      {{{"prompt", "x"}, {"logprobs", 3}}, "logprobs"},
      {{{"prompt", {"a", "b"}}}, "one prompt per request"},
      {{{"prompt", {1, 2, 99999999}}}, "out of range"},
      {{{"prompt", Repeat(" hello", kContext + 100)}}, "context window"},
      {{{"max_tokens", 3}}, "prompt is required"},
  };
  for (const Case& c : cases) {
    const json r = api_.Request("POST", "/v1/completions", c.body);
    EXPECT_EQ(r["status"], 400) << c.body << " -> " << r;
    EXPECT_EQ(r["body"]["error"]["type"], "invalid_request_error") << r;
    EXPECT_NE(r["body"]["error"]["message"].get<std::string>().find(c.message_part),
              std::string::npos)
        << c.body << " -> " << r;
  }
  // Not JSON at all (curl), an unknown model, an unknown route.
  std::string out = api_.Curl("/v1/completions", {"-d", "{not json"});
  EXPECT_TRUE(absl::EndsWith(out, "\n400")) << out;
  EXPECT_NE(out.find("not valid JSON"), std::string::npos) << out;
  json r = api_.Request("POST", "/v1/completions", {{"model", "gpt-4"}, {"prompt", "x"}});
  EXPECT_EQ(r["status"], 404) << r;
  EXPECT_NE(r["body"]["error"]["message"].get<std::string>().find("gpt-4"), std::string::npos);
  r = api_.Request("GET", "/v1/nothing");
  EXPECT_EQ(r["status"], 404) << r;
  EXPECT_TRUE(r["body"].contains("error")) << r;
  // A bad deadline header.
  r = api_.Request("POST", "/v1/completions", {{"prompt", "x"}}, {{"X-Request-Timeout", "soon"}});
  EXPECT_EQ(r["status"], 400) << r;
}

TEST_F(WorkerHttpTest, ModelsAndHealth) {
  const json models = api_.Request("GET", "/v1/models");
  ASSERT_EQ(models["status"], 200) << models;
  EXPECT_EQ(models["body"]["object"], "list");
  EXPECT_EQ(models["body"]["data"][0]["id"], cluster_->model().name());
  EXPECT_EQ(models["body"]["data"][0]["max_model_len"], kContext);
  const std::string out = api_.Curl("/health", {});
  EXPECT_TRUE(absl::EndsWith(out, "\n200")) << out;
}

TEST_F(WorkerHttpTest, DeadlineIs504) {
  const json r = api_.Request(
      "POST", "/v1/completions",
      {{"prompt", "A long story"}, {"max_tokens", 4000}, {"ignore_eos", true}, {"temperature", 0}},
      {{"X-Request-Timeout", "0.05"}});
  EXPECT_EQ(r["status"], 504) << r;
  EXPECT_EQ(r["body"]["error"]["code"], "DEADLINE_EXCEEDED") << r;
}

// Two requests run, one waits, the fourth gets 429; then the clients vanish and their requests
// are cancelled: they leave the running and queued gauges.
TEST_F(WorkerHttpTest, FullSchedulerIs429AndDisconnectCancels) {
  const double cancelled_before = api_.Metric("engram_worker_requests_total{code=\"CANCELLED\"}");
  const double abort_before =
      api_.Metric("engram_worker_requests_finished_total{finish_reason=\"abort\"}");
  const std::string release = cluster_->dir() + "/release-hold";
  const std::string queued_seen = cluster_->dir() + "/queued-seen";
  const json body = {{"prompt", "Tell me everything"}, {"max_tokens", 4000},
                     {"ignore_eos", true},             {"temperature", 0},
                     {"stream", true}};
  auto p = Process::Start(
      {"/usr/bin/python3", testing::SourceFile("tests/integration/openai_client.py"),
       absl::StrCat(cluster_->worker_http_port()), "hold", release, body.dump(), queued_seen},
      cluster_->dir() + "/hold.log");
  ASSERT_TRUE(p.ok()) << p.status();
  // Two streams run and the third is sent; the fourth goes out once the worker has queued the
  // third (not after a fixed sleep, which a slow machine can outlast).
  ASSERT_FALSE((*p)->WaitForLogLine("\"queued_sent\"", absl::Seconds(60)).empty())
      << (*p)->LogTail() << cluster_->Logs();
  EXPECT_TRUE(WaitUntil(
      [&] { return MetricValue(api_.Metrics(), "engram_worker_queue_length") == 1; },
      absl::Seconds(30)))
      << api_.Metrics();
  std::ofstream(queued_seen).put('x');
  const std::string line = (*p)->WaitForLogLine("\"overload\"", absl::Seconds(60));
  ASSERT_FALSE(line.empty()) << (*p)->LogTail() << cluster_->Logs();
  const json overload = json::parse(line)["overload"];
  EXPECT_EQ(overload["status"], 429) << overload;
  EXPECT_EQ(overload["body"]["error"]["code"], "RESOURCE_EXHAUSTED") << overload;
  EXPECT_EQ(overload["headers"]["retry-after"], "1") << overload;
  // While they run: the gauges, and the KV cache holds their reservations.
  const std::string m = api_.Metrics();
  EXPECT_EQ(MetricValue(m, "engram_worker_running_requests"), 2) << m;
  EXPECT_EQ(MetricValue(m, "engram_worker_queue_length"), 1) << m;
  EXPECT_GT(MetricValue(m, "engram_worker_kv_cache_usage_ratio"), 0) << m;
  EXPECT_LE(MetricValue(m, "engram_worker_kv_cache_usage_ratio"), 1) << m;

  std::ofstream(release).put('x');
  ASSERT_FALSE((*p)->WaitForLogLine("\"released\"", absl::Seconds(30)).empty()) << (*p)->LogTail();
  EXPECT_TRUE(WaitUntil(
      [&] {
        const std::string now = api_.Metrics();
        return MetricValue(now, "engram_worker_running_requests") == 0 &&
               MetricValue(now, "engram_worker_queue_length") == 0;
      },
      absl::Seconds(20)))
      << api_.Metrics() << cluster_->Logs();
  const std::string after = api_.Metrics();
  EXPECT_GE(MetricValue(after, "engram_worker_requests_total{code=\"CANCELLED\"}"),
            cancelled_before + 3)
      << after;
  EXPECT_GE(MetricValue(after, "engram_worker_requests_finished_total{finish_reason=\"abort\"}"),
            abort_before + 3);
}

TEST_F(WorkerHttpTest, FullConnectionPoolIs429) {
  const std::string release = cluster_->dir() + "/release-connections";
  auto p = Process::Start(
      {"/usr/bin/python3", testing::SourceFile("tests/integration/openai_client.py"),
       absl::StrCat(cluster_->worker_http_port()), "connections", "6", release},
      cluster_->dir() + "/connections.log");
  ASSERT_TRUE(p.ok()) << p.status();
  const std::string line = (*p)->WaitForLogLine("\"overflow\"", absl::Seconds(60));
  std::ofstream(release).put('x');
  ASSERT_FALSE(line.empty()) << (*p)->LogTail();
  const json overflow = json::parse(line)["overflow"];
  EXPECT_EQ(overflow["status"], 429) << overflow;
  EXPECT_NE(overflow["body"]["error"]["message"].get<std::string>().find("HTTP connections"),
            std::string::npos);
  ASSERT_FALSE((*p)->WaitForLogLine("\"released\"", absl::Seconds(30)).empty());
  // The threads are free again.
  EXPECT_TRUE(WaitUntil([&] { return api_.Request("GET", "/v1/models")["status"] == 200; },
                        absl::Seconds(20)));
}

// Abort (gRPC) of an HTTP request named by X-Request-Id ends its stream with finish_reason abort.
TEST_F(WorkerHttpTest, AbortByRequestIdEndsTheStream) {
  const json body = {{"prompt", "Keep going"}, {"max_tokens", 4000}, {"ignore_eos", true},
                     {"temperature", 0},       {"stream", true}};
  auto p = Process::Start(
      {"/usr/bin/python3", testing::SourceFile("tests/integration/openai_client.py"),
       absl::StrCat(cluster_->worker_http_port()), "stream", "/v1/completions", body.dump(),
       json{{"X-Request-Id", "http-abort-1"}}.dump()},
      cluster_->dir() + "/abort.log");
  ASSERT_TRUE(p.ok()) << p.status();
  auto client = cluster_->Client();
  bool found = false;
  ASSERT_TRUE(WaitUntil(
      [&] {
        auto r = client->Abort("http-abort-1");
        found = r.ok() && *r;
        return found;
      },
      absl::Seconds(30)));
  auto status = (*p)->Wait(absl::Seconds(30));
  ASSERT_TRUE(status.ok());
  const json r = LastJson((*p)->LogTail(1 << 22));
  ASSERT_EQ(r["status"], 200) << r;
  EXPECT_TRUE(r["done"].get<bool>());
  EXPECT_EQ(TextOf(r["events"]).second, "abort") << r;
}

// Section 2's metrics, after the requests above.
TEST_F(WorkerHttpTest, MetricsForGatewaysAndAutoscalers) {
  ASSERT_EQ(api_.Request("POST", "/v1/completions",
                         {{"prompt", "count"}, {"max_tokens", 3}, {"ignore_eos", true}})["status"],
            200);
  const std::string m = api_.Metrics();
  const std::string model = absl::StrCat("model_name=\"", cluster_->model().name(), "\"");
  EXPECT_EQ(MetricValue(m, "engram_worker_max_running_requests"), 2) << m;
  EXPECT_EQ(MetricValue(m, "engram_worker_max_queued_requests"), 1);
  EXPECT_EQ(MetricValue(m, "engram_worker_max_context_tokens"), kContext);
  EXPECT_GT(MetricValue(m, absl::StrCat("engram_worker_requests_total{code=\"OK\",", model, "}")),
            0)
      << m;
  EXPECT_GT(MetricValue(m, "engram_worker_requests_finished_total{finish_reason=\"length\"}"), 0);
  EXPECT_GE(MetricValue(m, "engram_worker_requests_finished_total{finish_reason=\"stop\"}"), 0);
  EXPECT_GE(MetricValue(m, "engram_worker_requests_finished_total{finish_reason=\"error\"}"), 1)
      << "the 504 above";
  EXPECT_GT(MetricValue(m, "engram_worker_request_prefill_time_seconds_count"), 0);
  EXPECT_GT(MetricValue(m, "engram_worker_request_decode_time_seconds_count"), 0);
  EXPECT_GT(MetricValue(m, "engram_worker_e2e_request_latency_seconds_bucket{le=\"600\"}"), 0)
      << "latency buckets reach 600 s";
  EXPECT_EQ(MetricValue(m, "engram_build_info{component=\"worker\"}"), 1) << m;
  EXPECT_GT(MetricValue(m, "process_cpu_seconds_total"), 0);
  EXPECT_GT(MetricValue(m, "process_resident_memory_bytes"), 1e6);
  EXPECT_GT(MetricValue(m, "process_open_fds"), 3);
  EXPECT_GT(MetricValue(m, "process_max_fds"), 0);
  EXPECT_GT(MetricValue(m, "process_start_time_seconds"), 1.6e9);
}

// Last: the memory tier goes away and comes back.
TEST_F(WorkerHttpTest, ZzMemoryTierAwayIs503) {
  ASSERT_TRUE(cluster_->KillMemory().ok());
  ASSERT_TRUE(WaitUntil([&] { return api_.Request("GET", "/health")["status"] == 503; },
                        absl::Seconds(30)));
  const json health = api_.Request("GET", "/health");
  EXPECT_EQ(health["body"]["error"]["code"], "UNAVAILABLE") << health;
  const json r = api_.Request("POST", "/v1/completions", {{"prompt", "hello"}, {"max_tokens", 4}});
  EXPECT_EQ(r["status"], 503) << r;
  EXPECT_EQ(r["body"]["error"]["type"], "service_unavailable_error") << r;
  EXPECT_EQ(r["headers"]["retry-after"], "1");
  ASSERT_TRUE(cluster_->StartMemory().ok());
  EXPECT_TRUE(WaitUntil([&] { return api_.Request("GET", "/health")["status"] == 200; },
                        absl::Seconds(60)))
      << cluster_->Logs();
}

// ---- A second cluster: no chat template, default limits ----------------------------------------

class WorkerHttpNoTemplateTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    ClusterOptions o;
    o.worker_flags = {"--drain_timeout=600s"};  // ZzDrainFinishesStreamsAndRefusesNewRequests
    auto cluster = WorkerCluster::Start(o);
    ASSERT_TRUE(cluster.ok()) << cluster.status();
    cluster_ = cluster->release();
  }
  static void TearDownTestSuite() {
    delete cluster_;
    cluster_ = nullptr;
  }
  void SetUp() override { ASSERT_NE(cluster_, nullptr); }
  static WorkerCluster* cluster_;
  HttpApi api_{cluster_};
};

WorkerCluster* WorkerHttpNoTemplateTest::cluster_ = nullptr;

TEST_F(WorkerHttpNoTemplateTest, ChatWithoutATemplateIs400NamingTheReason) {
  const json r = api_.Request(
      "POST", "/v1/chat/completions",
      {{"messages", json::array({{{"role", "user"}, {"content", "hi"}}})}, {"max_tokens", 4}});
  EXPECT_EQ(r["status"], 400) << r;
  EXPECT_NE(r["body"]["error"]["message"].get<std::string>().find("no chat template"),
            std::string::npos)
      << r;
}

TEST_F(WorkerHttpNoTemplateTest, SixtyFourConcurrentStreamsAllComplete) {
  constexpr int kStreams = 64;
  const json body = {{"prompt", "Stream number {i} says"}, {"max_tokens", 12},
                     {"temperature", 0}, {"stream", true}};
  const json r = api_.Python({"concurrent", absl::StrCat(kStreams), body.dump()});
  ASSERT_EQ(r["results"].size(), static_cast<size_t>(kStreams)) << r;
  for (int i = 0; i < kStreams; ++i) {
    const json& s = r["results"][i];
    ASSERT_EQ(s["status"], 200) << i << ": " << s;
    EXPECT_TRUE(s["done"].get<bool>()) << i;
    auto ids = cluster_->model().tokenizer().Encode(absl::StrCat("Stream number ", i, " says"));
    LocalGenerateOptions o;
    o.sampling.temperature = 0;
    o.stop.max_tokens = 12;
    o.stop.eos_token_ids = cluster_->model().config().eos_token_ids;
    o.threads = 1;
    auto want = LocalGenerate(cluster_->model(), *ids, o);
    ASSERT_TRUE(want.ok());
    EXPECT_EQ(s["text"], want->text) << "stream " << i;
  }
}

// SIGTERM: running streams finish, new requests get 503 meanwhile, then the worker exits 0.
TEST_F(WorkerHttpNoTemplateTest, ZzDrainFinishesStreamsAndRefusesNewRequests) {
  // Eight long streams share each step, so the drain lasts long enough to be seen. The
  // instrumented servers are ~10x slower: fewer tokens last as long there.
  constexpr int kStreams = 8;
#ifdef ENGRAM_SANITIZED
  constexpr int kTokens = 100;
#else
  constexpr int kTokens = 1000;
#endif
  const json body = {{"prompt", "Drain number {i}"},
                     {"max_tokens", kTokens},
                     {"ignore_eos", true},
                     {"temperature", 0},
                     {"stream", true}};
  auto p = Process::Start(
      {"/usr/bin/python3", testing::SourceFile("tests/integration/openai_client.py"),
       absl::StrCat(cluster_->worker_http_port()), "concurrent", absl::StrCat(kStreams),
       body.dump()},
      cluster_->dir() + "/drain.log");
  ASSERT_TRUE(p.ok());
  ASSERT_TRUE(WaitUntil([&] { return api_.Metric("engram_worker_running_requests") == kStreams; },
                        absl::Seconds(30)))
      << (*p)->LogTail();
  cluster_->SignalWorker(SIGTERM);
  json late;
  EXPECT_TRUE(WaitUntil(
      [&] {
        late = api_.Request("POST", "/v1/completions", {{"prompt", "late"}});
        return late["status"] != 200;
      },
      absl::Seconds(20)));
  EXPECT_EQ(late["status"], 503) << late;
  EXPECT_EQ(late["body"]["error"]["code"], "UNAVAILABLE") << late;
  // The fixture's worker drains for up to 10 minutes (--drain_timeout): a slow build (sanitizers
  // on two busy cores) must not hit the limit and end the streams early.
  auto status = (*p)->Wait(absl::Seconds(300));
  ASSERT_TRUE(status.ok());
  const json r = LastJson((*p)->LogTail(1 << 22));
  ASSERT_EQ(r["results"].size(), static_cast<size_t>(kStreams)) << r;
  for (const json& s : r["results"]) {
    EXPECT_EQ(s["status"], 200) << s;
    EXPECT_TRUE(s["done"].get<bool>()) << s;
    EXPECT_FALSE(s.contains("error")) << s;
    EXPECT_EQ(s["finish_reason"], "length") << s;
  }
  auto exit = cluster_->WaitWorker(absl::Seconds(60));
  ASSERT_TRUE(exit.ok());
  EXPECT_EQ(testing::ExitCode(*exit), 0) << cluster_->Logs();
}

}  // namespace
}  // namespace engram
