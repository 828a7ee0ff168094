// The HTTP API's pieces without a server: chat templates against jinja2's renderings (golden
// file), where the template comes from, the Status -> HTTP mapping, and how OpenAI request bodies
// become GenerateRequests (defaults, every prompt form, unsupported parameters refused by name).
// The HTTP server itself is tested over loopback with real clients in worker_http_test.
#include <fstream>
#include <string>

#include "gtest/gtest.h"
#include "model/tokenizer.h"
#include "nlohmann/json.hpp"
#include "server/chat_template.h"
#include "server/http_server.h"
#include "server/openai_api.h"
#include "tests/common/temp_dir.h"
#include "tests/common/test_paths.h"

namespace engram {
namespace {

using nlohmann::json;

json ReadJson(const std::string& path) {
  std::ifstream in(path);
  EXPECT_TRUE(in) << path;
  return json::parse(in, nullptr, false);
}

void WriteFile(const std::string& path, const std::string& text) {
  std::ofstream out(path);
  out << text;
}

TEST(ChatTemplateTest, RendersLikeJinja2) {
  const json golden = ReadJson(testing::SourceFile("tests/server/testdata/chat_template_golden.json"));
  ASSERT_FALSE(golden.is_discarded());
  ASSERT_GE(golden["cases"].size(), 20u);
  for (const json& c : golden["cases"]) {
    const std::string name = c["template"];
    auto t = ChatTemplate::FromSource(golden["templates"][name].get<std::string>());
    ASSERT_TRUE(t.ok()) << name << ": " << t.status();
    EXPECT_EQ(t->name(), name);
    std::vector<ChatMessage> messages;
    for (const json& m : c["messages"]) messages.push_back({m["role"], m["content"]});
    EXPECT_EQ(t->Render(messages, c["add_generation_prompt"].get<bool>()),
              c["rendered"].get<std::string>())
        << name << " " << c["messages"];
  }
}

TEST(ChatTemplateTest, UnknownTemplatesAreRefusedWithTheReason) {
  // One character different from ChatML: not rendered by guesswork.
  auto t = ChatTemplate::FromSource(
      "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + "
      "message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}");
  EXPECT_EQ(t.status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_NE(t.status().message().find("not one this worker can render"), std::string::npos);
}

TEST(ChatTemplateTest, LoadsFromTheModelDirectory) {
  const json golden = ReadJson(testing::SourceFile("tests/server/testdata/chat_template_golden.json"));
  const std::string chatml = golden["templates"]["chatml"];
  testing::TempDir dir;
  EXPECT_EQ(ChatTemplate::Load(dir.path()).status().code(), absl::StatusCode::kNotFound);
  WriteFile(dir.path() + "/tokenizer_config.json", R"({"bos_token": "<s>"})");
  EXPECT_EQ(ChatTemplate::Load(dir.path()).status().code(), absl::StatusCode::kNotFound);
  WriteFile(dir.path() + "/tokenizer_config.json", json{{"chat_template", chatml}}.dump());
  auto t = ChatTemplate::Load(dir.path());
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->kind(), ChatTemplate::Kind::kChatMl);
  // The list form: the one named "default".
  WriteFile(dir.path() + "/tokenizer_config.json",
            json{{"chat_template", json::array({{{"name", "tool_use"}, {"template", "x"}},
                                                {{"name", "default"}, {"template", chatml}}})}}
                .dump());
  EXPECT_TRUE(ChatTemplate::Load(dir.path()).ok());
  // chat_template.jinja wins over tokenizer_config.json.
  WriteFile(dir.path() + "/chat_template.jinja", "{{ messages }}");
  EXPECT_EQ(ChatTemplate::Load(dir.path()).status().code(), absl::StatusCode::kUnimplemented);
}

TEST(HttpErrorTest, StatusCodesMapOnce) {
  EXPECT_EQ(HttpErrorOf(absl::StatusCode::kInvalidArgument).status, 400);
  EXPECT_EQ(HttpErrorOf(absl::StatusCode::kNotFound).status, 404);
  EXPECT_EQ(HttpErrorOf(absl::StatusCode::kAlreadyExists).status, 409);
  EXPECT_EQ(HttpErrorOf(absl::StatusCode::kResourceExhausted).status, 429);
  EXPECT_EQ(HttpErrorOf(absl::StatusCode::kUnavailable).status, 503);
  EXPECT_EQ(HttpErrorOf(absl::StatusCode::kFailedPrecondition).status, 503);
  EXPECT_EQ(HttpErrorOf(absl::StatusCode::kDeadlineExceeded).status, 504);
  EXPECT_EQ(HttpErrorOf(absl::StatusCode::kInternal).status, 500);
  const json body = json::parse(OpenAiErrorBody(absl::ResourceExhaustedError("full")));
  EXPECT_EQ(body["error"]["message"], "full");
  EXPECT_EQ(body["error"]["type"], "overloaded_error");
  EXPECT_EQ(body["error"]["code"], "RESOURCE_EXHAUSTED");
  EXPECT_TRUE(body["error"]["param"].is_null());
}

TEST(ParseCompletionTest, DefaultsFollowOpenAi) {
  auto r = ParseCompletionRequest(json{{"prompt", "hi"}}, "m");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->generate.text(), "hi");
  EXPECT_EQ(r->generate.sampling().temperature(), 1.0f);
  EXPECT_FALSE(r->generate.sampling().has_top_p());
  EXPECT_FALSE(r->generate.sampling().has_seed());
  EXPECT_EQ(r->generate.stopping().max_tokens(), 16u);
  EXPECT_TRUE(r->generate.skip_special_tokens());
  EXPECT_FALSE(r->stream);
}

TEST(ParseCompletionTest, EveryPromptFormAndParameter) {
  auto r = ParseCompletionRequest(json{{"model", "m"},
                                       {"prompt", json::array({json::array({5, 6, 7})})},
                                       {"max_tokens", 40},
                                       {"temperature", 0.5},
                                       {"top_p", 0.9},
                                       {"top_k", -1},
                                       {"seed", 42},
                                       {"stop", json::array({"a", "bc"})},
                                       {"stop_token_ids", json::array({3})},
                                       {"ignore_eos", true},
                                       {"n", 1},
                                       {"presence_penalty", 0},
                                       {"stream", true},
                                       {"stream_options", {{"include_usage", true}}},
                                       {"user", "ignored"}},
                                  "m");
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->generate.token_ids().ids_size(), 3);
  EXPECT_EQ(r->generate.token_ids().ids(2), 7u);
  EXPECT_EQ(r->generate.stopping().max_tokens(), 40u);
  EXPECT_FLOAT_EQ(r->generate.sampling().temperature(), 0.5f);
  EXPECT_FLOAT_EQ(r->generate.sampling().top_p(), 0.9f);
  EXPECT_EQ(r->generate.sampling().top_k(), 0u);
  EXPECT_EQ(r->generate.sampling().seed(), 42u);
  ASSERT_EQ(r->generate.stopping().stop_size(), 2);
  EXPECT_EQ(r->generate.stopping().stop(1), "bc");
  EXPECT_EQ(r->generate.stopping().stop_token_ids(0), 3u);
  EXPECT_TRUE(r->generate.stopping().ignore_eos());
  EXPECT_TRUE(r->stream);
  EXPECT_TRUE(r->include_usage);

  r = ParseCompletionRequest(json{{"prompt", json::array({"one"})}, {"stop", "x"}}, "m");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->generate.text(), "one");
  EXPECT_EQ(r->generate.stopping().stop(0), "x");
}

TEST(ParseCompletionTest, RefusesWhatItDoesNotImplementByName) {
  struct Case {
    json body;
    absl::StatusCode code;
    std::string part;
  };
  const std::vector<Case> cases = {
      {{{"prompt", "x"}, {"model", "other"}}, absl::StatusCode::kNotFound, "other"},
      {{{"prompt", "x"}, {"n", 3}}, absl::StatusCode::kInvalidArgument, "n must be 1"},
      {{{"prompt", "x"}, {"best_of", 2}}, absl::StatusCode::kInvalidArgument, "best_of"},
      {{{"prompt", "x"}, {"echo", true}}, absl::StatusCode::kInvalidArgument, "echo"},
      {{{"prompt", "x"}, {"logprobs", 1}}, absl::StatusCode::kInvalidArgument, "logprobs"},
      {{{"prompt", "x"}, {"frequency_penalty", 0.5}}, absl::StatusCode::kInvalidArgument,
       "frequency_penalty"},
      {{{"prompt", "x"}, {"logit_bias", {{"5", 1}}}}, absl::StatusCode::kInvalidArgument,
       "logit_bias"},
      {{{"prompt", "x"}, {"temperature", 3}}, absl::StatusCode::kInvalidArgument, "temperature"},
      {{{"prompt", "x"}, {"top_p", 0}}, absl::StatusCode::kInvalidArgument, "top_p"},
      {{{"prompt", "x"}, {"max_tokens", -1}}, absl::StatusCode::kInvalidArgument, "max_tokens"},
      {{{"prompt", "x"}, {"max_tokens", "5"}}, absl::StatusCode::kInvalidArgument, "max_tokens"},
      {{{"prompt", "x"}, {"stop", 5}}, absl::StatusCode::kInvalidArgument, "stop"},
      {{{"prompt", "x"}, {"stream_options", {{"include_usage", true}}}},
       absl::StatusCode::kInvalidArgument, "stream: true"},
      {{{"prompt", json::array({-1})}}, absl::StatusCode::kInvalidArgument, "prompt[0]"},
      {{{"prompt", json::array({"a", "b"})}}, absl::StatusCode::kInvalidArgument, "2 prompts"},
      {{{"prompt", json::array()}}, absl::StatusCode::kInvalidArgument, "prompt"},
      {{{"prompt", 7}}, absl::StatusCode::kInvalidArgument, "prompt must be"},
      {json::array(), absl::StatusCode::kInvalidArgument, "JSON object"},
  };
  for (const Case& c : cases) {
    auto r = ParseCompletionRequest(c.body, "m");
    EXPECT_EQ(r.status().code(), c.code) << c.body << ": " << r.status();
    EXPECT_NE(r.status().message().find(c.part), std::string::npos) << c.body << ": " << r.status();
  }
}

TEST(ParseChatTest, RendersMessagesAndStopsAtTheEndOfTurn) {
  auto tokenizer = Tokenizer::FromFile(testing::Gpt2Path());
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status() << " (run scripts/fetch-testdata.sh)";
  const json golden = ReadJson(testing::SourceFile("tests/server/testdata/chat_template_golden.json"));
  auto chatml = ChatTemplate::FromSource(golden["templates"]["chatml"].get<std::string>());
  ASSERT_TRUE(chatml.ok());
  auto r = ParseChatRequest(
      json{{"messages", json::array({{{"role", "user"},
                                       {"content", json::array({{{"type", "text"}, {"text", "a"}},
                                                                {{"type", "text"}, {"text", "b"}}})}}})},
           {"max_completion_tokens", 9}},
      "m", chatml, **tokenizer);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(r->chat);
  EXPECT_EQ(r->generate.text(), "<|im_start|>user\na\nb<|im_end|>\n<|im_start|>assistant\n");
  EXPECT_EQ(r->generate.stopping().max_tokens(), 9u);
  // GPT-2 has no <|im_end|> token: a stop string.
  ASSERT_EQ(r->generate.stopping().stop_size(), 1);
  EXPECT_EQ(r->generate.stopping().stop(0), "<|im_end|>");

  // No max tokens: the server default (0).
  r = ParseChatRequest(json{{"messages", json::array({{{"role", "user"}, {"content", "x"}}})}}, "m",
                       chatml, **tokenizer);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->generate.stopping().max_tokens(), 0u);

  for (const json& bad : {json{{"messages", json::array()}},
                          json{{"messages", json::array({{{"content", "x"}}})}},
                          json{{"messages", json::array({{{"role", "user"}}})}},
                          json{{"messages", json::array({{{"role", "user"},
                                                          {"content", json::array({{{"type", "image_url"}}})}}})}}}) {
    EXPECT_EQ(ParseChatRequest(bad, "m", chatml, **tokenizer).status().code(),
              absl::StatusCode::kInvalidArgument)
        << bad;
  }
  // A model without a template: 400 naming why.
  auto none = ParseChatRequest(json{{"messages", json::array({{{"role", "user"}, {"content", "x"}}})}},
                               "m", absl::NotFoundError("the model has no chat template"),
                               **tokenizer);
  EXPECT_EQ(none.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(none.status().message().find("no chat template"), std::string::npos);
}

}  // namespace
// The OpenAI-style HTTP server listens as the metrics server does (StartHttpListener): without
// SO_REUSEPORT, so a second server on a taken port is refused instead of sharing the traffic; a
// Stop() right after Start() returns.
TEST(HttpServerTest, RefusesATakenPortAndStopsRightAfterStart) {
  HttpServer first{HttpServerOptions{}};
  ASSERT_TRUE(first.Start("127.0.0.1", 0).ok());
  ASSERT_GT(first.port(), 0);
  HttpServer second{HttpServerOptions{}};
  absl::Status taken = second.Start("127.0.0.1", first.port());
  EXPECT_FALSE(taken.ok());
  EXPECT_NE(taken.message().find("in use"), absl::string_view::npos) << taken;
  first.Stop();
}

}  // namespace engram
