// `engram-worker --help` and `engram-memory --help` (also -h and --helpshort) print the usage line
// and every flag of the server, and exit 0 without starting it. absl's own --help listed no flag
// for either binary ("No flags matched": the flags do not live in <program>.cc) and exited 1.
#include <unistd.h>

#include <cstdio>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "tests/common/process.h"
#include "tests/common/test_paths.h"

namespace engram {
namespace {

struct Outcome {
  int code = -1;       // exit code, or 128 + signal
  std::string output;  // stdout and stderr together
};

Outcome RunToExit(const std::vector<std::string>& args, const std::string& log) {
  Outcome o;
  auto p = testing::Process::Start(args, log);
  EXPECT_TRUE(p.ok()) << p.status();
  if (!p.ok()) return o;
  auto status = (*p)->Wait(absl::Seconds(30));  // a server that started instead would not exit
  EXPECT_TRUE(status.ok()) << args[0] << " did not exit: " << status.status();
  if (status.ok()) o.code = testing::ExitCode(*status);
  o.output = (*p)->LogTail(1 << 20);
  return o;
}

struct Case {
  const char* binary;                  // under the build folder
  std::vector<const char*> must_list;  // flags the help text names
};

class ServerHelpTest : public ::testing::TestWithParam<Case> {};

TEST_P(ServerHelpTest, HelpListsTheFlagsAndExitsZero) {
  const Case& c = GetParam();
  const std::string binary = testing::BinaryPath(c.binary);
  for (const char* help : {"--help", "-h", "--helpshort"}) {
    SCOPED_TRACE(absl::StrCat(c.binary, " ", help));
    const std::string log =
        absl::StrCat(::testing::TempDir(), "/server_help_", getpid(), "_", help + 1, ".log");
    std::remove(log.c_str());
    const Outcome o = RunToExit({binary, help}, log);
    EXPECT_EQ(o.code, 0) << o.output;
    EXPECT_TRUE(absl::StrContains(o.output, "Usage: ")) << o.output;
    for (const char* flag : c.must_list) {
      EXPECT_TRUE(absl::StrContains(o.output, absl::StrCat(flag, "\n"))) << flag << "\n"
                                                                         << o.output;
    }
    EXPECT_FALSE(absl::StrContains(o.output, "No flags matched")) << o.output;
    std::remove(log.c_str());
  }
}

INSTANTIATE_TEST_SUITE_P(
    Servers, ServerHelpTest,
    ::testing::Values(Case{"server/engram-worker",
                           {"--model", "--memory", "--listen", "--metrics-port", "--config",
                            "--max-running-requests", "--metrics-host", "--reflection", "--tls-cert",
                            "--tls-key", "--tls-client-ca", "--memory-tls-ca", "--memory-tls-cert",
                            "--memory-tls-key"}},
                      Case{"memory_tier/engram-memory",
                           {"--store", "--listen", "--metrics-port", "--config", "--dram-bytes",
                            "--metrics-host", "--reflection", "--tls-cert", "--tls-key",
                            "--tls-client-ca", "--shm-mode",
                            "--io-backend"}}),
    [](const ::testing::TestParamInfo<Case>& info) {
      return std::string(absl::StrContains(info.param.binary, "worker") ? "Worker" : "Memory");
    });

}  // namespace
}  // namespace engram
