// The `engram` CLI on bad input: missing files, malformed JSON or safetensors, ids out of
// range and inconsistent configs each end with exactly one line "engram <command>: <problem>"
// (besides info-level progress logs) and a non-zero exit status, never a crash (a signal, an
// uncaught exception). Covers tokenize, hash, check-module, generate, eval and model
// init-demo/info/run,
// running the real binary.
//
// Needs GPT-2's tokenizer.json from scripts/fetch-testdata.sh.
#include <sys/wait.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/safetensors.h"
#include "gtest/gtest.h"
#include "model/demo_model.h"
#include "nlohmann/json.hpp"
#include "tests/common/rewrite_safetensors.h"
#include "tests/common/test_paths.h"
#include "tests/integration/worker_cluster.h"

namespace engram {
namespace {

namespace fs = std::filesystem;
using testing::Process;

struct Outcome {
  bool exited = false;  // false: killed by a signal (a crash) or did not finish
  int code = -1;
  std::string output;  // stdout and stderr together
};

class CliBadInputTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new std::string(absl::StrCat(::testing::TempDir(), "/cli_bad_input_", getpid()));
    fs::remove_all(*dir_);
    fs::create_directories(*dir_);
  }
  static void TearDownTestSuite() {
    fs::remove_all(*dir_);
    delete dir_;
  }

  static std::string Path(const std::string& name) { return *dir_ + "/" + name; }
  static std::string Write(const std::string& name, const std::string& content) {
    std::ofstream(Path(name), std::ios::binary) << content;
    return Path(name);
  }
  static std::string Tokenizer() { return DefaultDemoTokenizerPath(); }
  static std::string GoldenModule() {
    return testing::SourceFile("tests/golden/engram_module/hc1_conv_bf16.safetensors");
  }

  static Outcome Run(std::vector<std::string> args) {
    args.insert(args.begin(), testing::BinaryPath("client/engram"));
    const std::string log = Path(absl::StrCat("run", ++runs_, ".log"));
    Outcome o;
    auto p = Process::Start(args, log);
    EXPECT_TRUE(p.ok()) << p.status();
    if (!p.ok()) return o;
    auto status = (*p)->Wait(absl::Seconds(60));
    EXPECT_TRUE(status.ok()) << absl::StrJoin(args, " ") << " did not finish";
    o.output = (*p)->LogTail(1 << 16);
    if (status.ok() && WIFEXITED(*status)) {
      o.exited = true;
      o.code = WEXITSTATUS(*status);
    }
    return o;
  }

  // `engram <args>` fails with one line "engram <command>: ..." that contains `problem`.
  static void ExpectOneLineError(const std::vector<std::string>& args, const std::string& problem) {
    const std::string command = absl::StrJoin(args, " ");
    Outcome o = Run(args);
    ASSERT_TRUE(o.exited) << "engram " << command << " crashed:\n" << o.output;
    EXPECT_NE(o.code, 0) << "engram " << command << "\n" << o.output;
    // Progress logs at level info (e.g. "model loaded") may precede the error; nothing else may.
    std::vector<std::string> lines;
    for (absl::string_view line : absl::StrSplit(o.output, '\n', absl::SkipEmpty())) {
      if (!absl::StartsWith(line, "ts=") || !absl::StrContains(line, " level=info ")) {
        lines.emplace_back(line);
      }
    }
    ASSERT_EQ(lines.size(), 1u) << "engram " << command << " printed:\n" << o.output;
    const std::string prefix =
        absl::StrCat("engram ", args[0] == "model" ? "model " + args[1] : args[0], ": ");
    EXPECT_TRUE(absl::StartsWith(lines[0], prefix)) << lines[0];
    EXPECT_TRUE(absl::StrContains(lines[0], problem))
        << "engram " << command << "\n  said:  " << lines[0] << "\n  want:  " << problem;
  }

  // A small valid model directory (written once) and variants of it that share its files.
  static const std::string& Model() {
    static const std::string* dir = [] {
      auto* d = new std::string(Path("model"));
      const DemoModelOptions o = testing::TinyModelOptions(/*max_position_embeddings=*/64);
      absl::Status s = WriteDemoModel(*d, o);
      EXPECT_TRUE(s.ok()) << s;
      return d;
    }();
    return *dir;
  }
  // A copy of Model() whose `file` is replaced by `content` (the other files are links).
  static std::string ModelVariant(const std::string& name, const std::string& file,
                                  const std::string& content) {
    const std::string dir = Path(name);
    fs::create_directories(dir);
    for (const char* f :
         {"config.json", "tokenizer.json", "model.safetensors", "engram_constants.json"}) {
      if (f != file) fs::create_symlink(Model() + "/" + f, dir + "/" + f);
    }
    std::ofstream(dir + "/" + file, std::ios::binary) << content;
    return dir;
  }
  static nlohmann::json ModelConfig() {
    return nlohmann::json::parse(std::ifstream(Model() + "/config.json"));
  }
  static std::string Slurp(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
  }

  // A copy of the golden module file with `edit` applied to its tensors and metadata.
  static std::string ModuleVariant(const std::string& name, const testing::SafetensorsEdit& edit) {
    const std::string path = Path(name + ".safetensors");
    absl::Status s = testing::RewriteSafetensors(GoldenModule(), path, edit);
    EXPECT_TRUE(s.ok()) << s;
    return path;
  }

  static std::string* dir_;
  static int runs_;
};

std::string* CliBadInputTest::dir_ = nullptr;
int CliBadInputTest::runs_ = 0;

TEST_F(CliBadInputTest, Tokenize) {
  ExpectOneLineError({"tokenize", "--tokenizer", Path("missing.json"), "--text", "hi"},
                     "cannot open tokenizer file");
  ExpectOneLineError({"tokenize", "--model", Path("no-such-model"), "--text", "hi"},
                     "no-such-model/tokenizer.json");
  ExpectOneLineError({"tokenize", "--tokenizer", Write("bad.json", "{\"model\": "), "--text", "hi"},
                     "malformed tokenizer.json");
  ExpectOneLineError({"tokenize", "--tokenizer", *dir_, "--text", "hi"}, "is a directory");
  nlohmann::json j = nlohmann::json::parse(std::ifstream(Tokenizer()));
  j["model"]["vocab"]["hello"] = int64_t{1} << 40;
  ExpectOneLineError({"tokenize", "--tokenizer", Write("big-id.json", j.dump()), "--text", "hi"},
                     "model.vocab[\"hello\"]: must be a token id");
  ExpectOneLineError({"tokenize", "--tokenizer", Tokenizer(), "--text", "ab\xff"},
                     "not valid UTF-8");
  ExpectOneLineError({"tokenize", "--tokenizer", Tokenizer()}, "missing --text");
  ExpectOneLineError({"tokenize", "--tokenizer", Tokenizer(), "--txt", "hi"}, "unknown flag --txt");
}

TEST_F(CliBadInputTest, Hash) {
  const std::string& model = Model();
  ExpectOneLineError({"hash", "--model", Path("no-such-model"), "--tokens", "1"},
                     "no-such-model/config.json");
  ExpectOneLineError({"hash", "--model", ModelVariant("hash-bad-json", "config.json", "{\"engram_"),
                      "--tokens", "1"},
                     "malformed JSON");
  nlohmann::json c = ModelConfig();
  c["engram_n_heads"] = 0;
  ExpectOneLineError(
      {"hash", "--model", ModelVariant("hash-heads", "config.json", c.dump()), "--tokens", "1"},
      "engram_n_heads");
  c = ModelConfig();
  c["engram_pad_token_id"] = 99999999;
  ExpectOneLineError(
      {"hash", "--model", ModelVariant("hash-pad", "config.json", c.dump()), "--tokens", "1"},
      "token id 99999999 is not in the Engram token map");
  ExpectOneLineError({"hash", "--model", model, "--tokens", "1,2,99999999"},
                     "position 2: token id 99999999 is not in the Engram token map");
  ExpectOneLineError({"hash", "--model", model, "--tokens", "1,x"}, "\"x\" is not a token id");
  ExpectOneLineError({"hash", "--model", model, "--tokens", "4294967296"}, "is not a token id");
  ExpectOneLineError({"hash", "--model", model}, "give exactly one of --tokens and --text");
}

TEST_F(CliBadInputTest, CheckModule) {
  const std::string tok = Tokenizer();
  ExpectOneLineError({"check-module", Path("missing.safetensors"), "--tokenizer", tok},
                     "cannot open");
  ExpectOneLineError({"check-module", tok, "--tokenizer", tok}, "malformed safetensors file");
  const std::string golden = Slurp(GoldenModule());
  ExpectOneLineError(
      {"check-module", Write("truncated.safetensors", golden.substr(0, 20000)), "--tokenizer", tok},
      "truncated");
  ExpectOneLineError({"check-module", GoldenModule()}, "cannot open tokenizer file");
  ExpectOneLineError({"check-module", GoldenModule(), "--tokenizer", tok, "--atol", "nan"},
                     "--atol must be a finite number");
  ExpectOneLineError(
      {"check-module",
       ModuleVariant("no-heads", [](auto* m, auto*) { m->erase("n_head_per_ngram"); }),
       "--tokenizer", tok},
      "metadata key n_head_per_ngram is missing");
  ExpectOneLineError(
      {"check-module", ModuleVariant("bad-json", [](auto* m, auto*) { (*m)["seed"] = "{"; }),
       "--tokenizer", tok},
      "metadata key seed is not JSON");
  ExpectOneLineError(
      {"check-module", ModuleVariant("layer", [](auto* m, auto*) { (*m)["layer_id"] = "7"; }),
       "--tokenizer", tok},
      "layer_id 7 is not in layer_ids");
  ExpectOneLineError(
      {"check-module", ModuleVariant("hidden", [](auto* m, auto*) { (*m)["hidden_size"] = "48"; }),
       "--tokenizer", tok},
      "expected [2, 12, 1, 48]");
  // io.input_ids[0, 3] = 99999999: outside the tokenizer's vocabulary.
  std::vector<int64_t> ids;
  ExpectOneLineError({"check-module",
                      ModuleVariant("ids",
                                    [&](auto*, std::vector<TensorView>* tensors) {
                                      for (TensorView& t : *tensors) {
                                        if (t.name != "io.input_ids") continue;
                                        ids.assign(t.num_elements(), 0);
                                        std::memcpy(ids.data(), t.data, t.size_bytes);
                                        ids[3] = 99999999;
                                        t.data = reinterpret_cast<const uint8_t*>(ids.data());
                                      }
                                    }),
                      "--tokenizer", tok},
                     "io.input_ids[0, 3]: token id 99999999 is not in the Engram token map");
}

TEST_F(CliBadInputTest, Generate) {
  const std::string unused = absl::StrCat("127.0.0.1:", testing::FreePort());
  ExpectOneLineError({"generate", "--server", unused, "--prompt", "hi"}, "UNAVAILABLE");
  ExpectOneLineError({"generate", "--server", "localhost", "--prompt", "hi"},
                     "\"localhost\" is not host:port");
  ExpectOneLineError({"generate", "--prompt", "hi"}, "missing --server");
  ExpectOneLineError({"generate", "--server", unused}, "give exactly one of --prompt");
  ExpectOneLineError({"generate", "--server", unused, "--tokens", "1,-2"},
                     "\"-2\" is not a token id");
  ExpectOneLineError({"generate", "--server", unused, "--prompt", "hi", "--temperature", "nan"},
                     "--temperature must be a finite number");
  ExpectOneLineError({"generate", "--server", unused, "--prompt", "hi", "--max-tokens", "-1"},
                     "--max-tokens must be in");
  ExpectOneLineError({"generate", "--server", unused, "--prompt", "hi", "--stop"},
                     "--stop needs a value");
}

TEST_F(CliBadInputTest, Eval) {
  const std::string& model = Model();
  ExpectOneLineError({"eval", model, "--text", Path("missing.txt")}, "cannot open text file");
  ExpectOneLineError({"eval", model, "--text", Write("empty.txt", "")}, "is empty");
  ExpectOneLineError({"eval", model, "--text", *dir_}, "is a directory");
  ExpectOneLineError({"eval", model, "--text", Write("one.txt", "hello")}, "at least 2 are needed");
  ExpectOneLineError({"eval", model}, "missing --text");
  ExpectOneLineError({"eval", "--text", Write("two.txt", "hello world")},
                     "expected exactly one model directory");
  ExpectOneLineError({"eval", Path("no-such-model"), "--text", Path("two.txt")}, "no-such-model");
  ExpectOneLineError({"eval", model, "--text", Path("two.txt"), "--zero-engram", "--drop-engram"},
                     "at most one of --zero-engram and --drop-engram");
  ExpectOneLineError({"eval", model, "--text", Path("two.txt"), "--window", "1"}, "--window");
  ExpectOneLineError({"eval", model, "--text", Path("two.txt"), "--window", "65"}, "--window");
  ExpectOneLineError({"eval", model, "--text", Path("two.txt"), "--device", "tpu"}, "tpu");
  ExpectOneLineError({"eval", model, "--text", Write("bad-utf8.txt", "ab\xff")}, "not valid UTF-8");
}

TEST_F(CliBadInputTest, ModelInitDemo) {
  ExpectOneLineError({"model", "init-demo", Path("d1"), "--tokenizer", Path("missing.json")},
                     "cannot read the tokenizer");
  ExpectOneLineError(
      {"model", "init-demo", Path("d2"), "--tokenizer", Write("bad-tok.json", "{\"model\": [")},
      "malformed tokenizer.json");
  const std::string no_eos = Write(
      "no-eos.json",
      R"({"version": "1.0", "model": {"type": "BPE", "vocab": {"a": 0, "b": 1}, "merges": []}})");
  ExpectOneLineError({"model", "init-demo", Path("d3"), "--tokenizer", no_eos},
                     "has no <|endoftext|> token");
  ExpectOneLineError({"model", "init-demo", Path("d4"), "--name", "bad\xff"},
                     "the model name is not valid UTF-8");
  ExpectOneLineError({"model", "init-demo", Write("a-file", "x")}, "cannot create");
  ExpectOneLineError({"model", "init-demo", Path("d5"), "--engram-vocab-size", "1"},
                     "--engram-vocab-size must be in [2,");
  ExpectOneLineError({"model", "init-demo"}, "expected exactly one model directory");
}

// An Engram model whose vocabulary runs past its tokenizer would fail the first request that
// samples such an id (it has no compressed id): refused before anything is written, with the
// --vocab-size that fits.
TEST_F(CliBadInputTest, ModelInitRandom) {
  ExpectOneLineError({"model", "init-random", Path("r1"), "--preset", "dense-4b", "--engram-layers",
                      "1", "--engram-params", "1e6"},
                     "the vocabulary (151936 ids) is larger than what");
  EXPECT_FALSE(std::filesystem::exists(Path("r1")));
  ExpectOneLineError({"model", "init-random", Path("r2"), "--preset", "tiny", "--vocab-size", "1"},
                     "--vocab-size must be in [2,");
  ExpectOneLineError({"model", "init-random", Path("r3")}, "--preset is required");
}

TEST_F(CliBadInputTest, ModelInfoAndRun) {
  const std::string& model = Model();
  nlohmann::json c = ModelConfig();
  c["num_hidden_layers"] = 2000000000;
  ExpectOneLineError({"model", "info", ModelVariant("layers", "config.json", c.dump())},
                     "model.layers.2.");
  c = ModelConfig();
  c["hidden_size"] = 48;
  ExpectOneLineError({"model", "info", ModelVariant("hidden", "config.json", c.dump())},
                     "has shape");
  c = ModelConfig();
  c["rms_norm_eps"] = 1e300;
  ExpectOneLineError({"model", "info", ModelVariant("eps", "config.json", c.dump())},
                     "rms_norm_eps");
  const std::string weights = Slurp(model + "/model.safetensors");
  ExpectOneLineError(
      {"model", "info",
       ModelVariant("truncated", "model.safetensors", weights.substr(0, weights.size() / 2))},
      "truncated");
  nlohmann::json constants = nlohmann::json::parse(std::ifstream(model + "/engram_constants.json"));
  constants["layers"][0]["primes"][1] = constants["layers"][0]["primes"][1].get<int64_t>() + 2;
  ExpectOneLineError(
      {"model", "info", ModelVariant("constants", "engram_constants.json", constants.dump())},
      "engram_constants.json disagrees");
  ExpectOneLineError({"model", "run", model, "--tokens", "1,99999999"}, "outside the vocabulary");
  ExpectOneLineError({"model", "run", model, "--prompt", "hi", "--top-p", "0"}, "top_p");

  // Not an error, but it used to crash: a directory name that is not UTF-8 in the JSON output.
  const std::string odd = Path("odd\xff-name");
  fs::create_directories(odd);
  for (const char* f : {"tokenizer.json", "model.safetensors", "engram_constants.json"}) {
    fs::create_symlink(model + "/" + f, odd + "/" + f);
  }
  c = ModelConfig();
  c.erase("model_name");
  std::ofstream(odd + "/config.json") << c.dump();
  Outcome o = Run({"model", "info", odd});
  EXPECT_TRUE(o.exited && o.code == 0) << o.output;
}

}  // namespace
}  // namespace engram
