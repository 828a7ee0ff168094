// `engram tokenize`: token ids of a text under a model's tokenizer.json, exactly as Hugging Face
// tokenizers encodes it.
//
//   engram tokenize (--model DIR | --tokenizer FILE) --text TEXT [--add-special-tokens]
// prints {"ids": [...]}. DIR holds tokenizer.json. --add-special-tokens runs the file's
// post-processor template (e.g. a leading BOS); without it, as with `encode(text,
// add_special_tokens=False)`, the ids are the text's alone.
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "client/cli.h"
#include "model/tokenizer.h"
#include "nlohmann/json.hpp"

namespace engram::cli {
namespace {

absl::StatusOr<std::string> TokenizerPath(const Args& args) {
  if (args.Has("model") == args.Has("tokenizer")) {
    return absl::InvalidArgumentError("give exactly one of --model DIR and --tokenizer FILE");
  }
  if (args.Has("tokenizer")) return *args.Get("tokenizer");
  return (std::filesystem::path(*args.Get("model")) / "tokenizer.json").string();
}

int RunTokenize(int argc, char** argv) {
  auto args = Args::Parse(argc, argv, {"model", "tokenizer", "text"}, {"add-special-tokens"});
  if (!args.ok()) return Fail("tokenize", args.status(), 2);
  if (!args->positional().empty()) {
    return Fail("tokenize",
                absl::InvalidArgumentError("unexpected argument \"" + args->positional()[0] +
                                           "\" (quote the text and pass it with --text)"),
                2);
  }
  absl::StatusOr<std::string> path = TokenizerPath(*args);
  if (!path.ok()) return Fail("tokenize", path.status(), 2);
  absl::StatusOr<std::string> text = args->Require("text");
  if (!text.ok()) return Fail("tokenize", text.status(), 2);
  absl::StatusOr<std::unique_ptr<Tokenizer>> tokenizer = Tokenizer::FromFile(*path);
  if (!tokenizer.ok()) return Fail("tokenize", tokenizer.status());
  absl::StatusOr<std::vector<uint32_t>> ids =
      (*tokenizer)->Encode(*text, args->Has("add-special-tokens"));
  if (!ids.ok()) return Fail("tokenize", ids.status());
  std::printf("%s\n", nlohmann::json{{"ids", *ids}}.dump().c_str());
  return 0;
}

}  // namespace

ENGRAM_CLI_COMMAND(tokenize, "tokenize",
                   "token ids of a text: (--model DIR | --tokenizer FILE) --text TEXT "
                   "[--add-special-tokens]",
                   RunTokenize);

}  // namespace engram::cli
