// `engram check-module`: runs the C++ Engram path (compressed ids, hashing, gather, module
// forward) on a reference file and compares with the reference's hash ids and output.
//
//   engram check-module FILE.safetensors [--tokenizer FILE] [--atol X --rtol Y]
// The file format is described in model/engram_module_check.h. Prints one summary line; exits 0
// when everything matches, 1 on a mismatch past the tolerance, 2 on bad input.
#include <cstdio>

#include "client/cli.h"
#include "model/engram_module_check.h"

namespace engram::cli {
namespace {

int RunCheckModule(int argc, char** argv) {
  auto args = Args::Parse(argc, argv, {"tokenizer", "atol", "rtol"});
  if (!args.ok()) return Fail("check-module", args.status(), 2);
  if (args->positional().size() != 1) {
    return Fail(
        "check-module",
        absl::InvalidArgumentError("usage: engram check-module FILE.safetensors [--tokenizer FILE] "
                                   "[--atol X --rtol Y]"),
        2);
  }
  EngramModuleCheckOptions options;
  options.tokenizer_path = args->GetOr("tokenizer", "");
  auto atol = args->GetDouble("atol", options.atol);
  auto rtol = args->GetDouble("rtol", options.rtol);
  if (!atol.ok()) return Fail("check-module", atol.status(), 2);
  if (!rtol.ok()) return Fail("check-module", rtol.status(), 2);
  if (*atol < 0 || *rtol < 0) {
    return Fail("check-module", absl::InvalidArgumentError("--atol and --rtol must be >= 0"), 2);
  }
  options.atol = *atol;
  options.rtol = *rtol;
  const std::string& path = args->positional()[0];
  auto result = CheckEngramModuleFile(path, options);
  if (!result.ok()) return Fail("check-module", result.status(), 2);
  std::printf("%s: %s\n", path.c_str(), result->Summary().c_str());
  if (!result->first_hash_mismatch.empty()) {
    std::printf("  first hash id mismatch: %s\n", result->first_hash_mismatch.c_str());
  }
  if (!result->first_output_mismatch.empty()) {
    std::printf("  first output mismatch: %s\n", result->first_output_mismatch.c_str());
  }
  return result->passed() ? 0 : 1;
}

}  // namespace

ENGRAM_CLI_COMMAND(check_module, "check-module",
                   "compare the C++ Engram module with a reference file: FILE.safetensors "
                   "[--tokenizer FILE] [--atol X --rtol Y]",
                   RunCheckModule);

}  // namespace engram::cli
