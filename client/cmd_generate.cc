// `engram generate`: streams a generation from a running engram-worker to stdout.
//
//   engram generate --server 127.0.0.1:50051 --prompt "Once upon a time" --max-tokens 64 \
//       [--temperature 0.8 --top-k 40 --top-p 0.95 --seed 7] [--stop "\n\n" --stop "END"] \
//       [--tokens 1,2,3 instead of --prompt] [--ignore-eos] [--timeout 60] [--request-id ID]
//       [--quiet]
//
// Text goes to stdout as it arrives; a summary (finish reason, token counts) goes to stderr unless
// --quiet. Exit status: 0 on success, 1 on a server error (its code and message on stderr), 2 on
// bad flags.
#include <cstdio>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "client/cli.h"
#include "client/engram_client.h"

namespace engram::cli {
namespace {

constexpr char kUsage[] =
    "usage: engram generate --server HOST:PORT (--prompt TEXT | --tokens ID,ID,...)\n"
    "         [--max-tokens N] [--temperature T] [--top-k K] [--top-p P] [--seed S]\n"
    "         [--stop STR]... [--stop-token-id ID]... [--ignore-eos] [--timeout SECONDS]\n"
    "         [--request-id ID] [--quiet]\n";

// cli::Args keeps one value per flag; --stop and --stop-token-id may repeat, so they are taken
// out of argv here first.
absl::StatusOr<std::vector<std::string>> TakeRepeated(const std::string& flag,
                                                      std::vector<char*>* argv) {
  std::vector<std::string> values;
  std::vector<char*> rest;
  const std::string with_eq = "--" + flag + "=";
  for (size_t i = 0; i < argv->size(); ++i) {
    std::string arg = (*argv)[i];
    if (arg == "--" + flag) {
      if (i + 1 == argv->size()) return absl::InvalidArgumentError("--" + flag + " needs a value");
      values.push_back((*argv)[++i]);
    } else if (arg.rfind(with_eq, 0) == 0) {
      values.push_back(arg.substr(with_eq.size()));
    } else {
      rest.push_back((*argv)[i]);
    }
  }
  *argv = std::move(rest);
  return values;
}

absl::StatusOr<v1::GenerateRequest> BuildRequest(const Args& args,
                                                 const std::vector<std::string>& stops,
                                                 const std::vector<std::string>& stop_ids) {
  v1::GenerateRequest request;
  if (args.Has("prompt") == args.Has("tokens")) {
    return absl::InvalidArgumentError("give exactly one of --prompt TEXT and --tokens ID,ID,...");
  }
  if (args.Has("prompt")) {
    request.set_text(*args.Get("prompt"));
  } else {
    absl::StatusOr<std::vector<uint32_t>> ids = ParseTokenIds(*args.Get("tokens"), "tokens");
    if (!ids.ok()) return ids.status();
    request.mutable_token_ids()->mutable_ids()->Add(ids->begin(), ids->end());
  }
  request.set_request_id(args.GetOr("request-id", ""));
  auto max_tokens = args.GetInt("max-tokens", 0, 0, 1 << 30);
  auto temperature = args.GetDouble("temperature", 0.0);
  auto top_k = args.GetInt("top-k", 0, 0, 1 << 30);
  for (const auto* s : {&max_tokens.status(), &top_k.status(), &temperature.status()}) {
    if (!s->ok()) return *s;
  }
  request.mutable_stopping()->set_max_tokens(static_cast<uint32_t>(*max_tokens));
  request.mutable_sampling()->set_temperature(static_cast<float>(*temperature));
  request.mutable_sampling()->set_top_k(static_cast<uint32_t>(*top_k));
  if (args.Has("top-p")) {
    auto top_p = args.GetDouble("top-p", 1.0);
    if (!top_p.ok()) return top_p.status();
    request.mutable_sampling()->set_top_p(static_cast<float>(*top_p));
  }
  if (args.Has("seed")) {
    auto seed = args.GetInt("seed", 0, 0, INT64_MAX);
    if (!seed.ok()) return seed.status();
    request.mutable_sampling()->set_seed(static_cast<uint64_t>(*seed));
  }
  for (const std::string& s : stops) request.mutable_stopping()->add_stop(s);
  for (const std::string& s : stop_ids) {
    absl::StatusOr<std::vector<uint32_t>> ids = ParseTokenIds(s, "stop-token-id");
    if (!ids.ok()) return ids.status();
    request.mutable_stopping()->mutable_stop_token_ids()->Add(ids->begin(), ids->end());
  }
  request.mutable_stopping()->set_ignore_eos(args.Has("ignore-eos"));
  return request;
}

// Bad flags: one line naming the problem (the usage is behind --help).
int BadFlags(const absl::Status& status) {
  return Fail("generate",
              absl::InvalidArgumentError(absl::StrCat(status.message(), " (see --help)")), 2);
}

int RunGenerate(int argc, char** argv) {
  std::vector<char*> argv_rest(argv, argv + argc);
  auto stops = TakeRepeated("stop", &argv_rest);
  if (!stops.ok()) return BadFlags(stops.status());
  auto stop_ids = TakeRepeated("stop-token-id", &argv_rest);
  if (!stop_ids.ok()) return BadFlags(stop_ids.status());
  auto args = Args::Parse(static_cast<int>(argv_rest.size()), argv_rest.data(),
                          {"server", "prompt", "tokens", "max-tokens", "temperature", "top-k",
                           "top-p", "seed", "timeout", "request-id"},
                          {"ignore-eos", "quiet", "help"});
  if (!args.ok()) return BadFlags(args.status());
  if (args->Has("help")) {
    std::fputs(kUsage, stderr);
    return 2;
  }
  auto server = args->Require("server");
  if (!server.ok()) return BadFlags(server.status());
  auto request = BuildRequest(*args, *stops, *stop_ids);
  if (!request.ok()) return BadFlags(request.status());
  auto timeout = args->GetDouble("timeout", 300.0);
  if (!timeout.ok() || *timeout <= 0) {
    return Fail("generate",
                absl::InvalidArgumentError("--timeout must be a positive number of seconds"), 2);
  }

  EngramClientOptions options;
  options.timeout = absl::Seconds(*timeout);
  auto client = EngramClient::Connect(*server, options);
  if (!client.ok()) return Fail("generate", client.status(), 2);

  GenerateResult summary;
  bool printed = false;
  absl::Status status = (*client)->Generate(*request, [&](const v1::GenerateResponse& r) {
    std::fwrite(r.text().data(), 1, r.text().size(), stdout);
    std::fflush(stdout);
    printed = printed || !r.text().empty();
    if (r.finish_reason() != v1::FINISH_REASON_UNSPECIFIED)
      summary.finish_reason = r.finish_reason();
    if (r.has_usage()) summary.usage = r.usage();
    summary.request_id = r.request_id();
    return true;
  });
  if (printed) std::fputc('\n', stdout);
  std::fflush(stdout);
  if (!status.ok()) {
    return Fail("generate",
                absl::Status(status.code(), absl::StrCat(absl::StatusCodeToString(status.code()),
                                                         ": ", status.message())));
  }
  if (!args->Has("quiet")) {
    std::fprintf(stderr, "[request %s: finish_reason=%s prompt_tokens=%u completion_tokens=%u]\n",
                 summary.request_id.c_str(), v1::FinishReason_Name(summary.finish_reason).c_str(),
                 summary.usage.prompt_tokens(), summary.usage.completion_tokens());
  }
  return 0;
}

}  // namespace

ENGRAM_CLI_COMMAND(generate, "generate", "stream a generation from a running engram-worker",
                   RunGenerate);

}  // namespace engram::cli
