// `engram health`: asks a server (engram-worker or engram-memory) for its grpc.health.v1 status.
//
//   engram health --server 127.0.0.1:50051 [--service engram.v1.Inference] [--wait SECONDS]
//
// Prints SERVING or NOT_SERVING (or the error); exits 0 when SERVING, 1 otherwise. With --wait it
// polls until the server is SERVING or the time is up, which is what start-up scripts need.
#include <cstdio>
#include <string>

#include "absl/time/clock.h"
#include "client/cli.h"
#include "client/engram_client.h"

namespace engram::cli {
namespace {

int RunHealth(int argc, char** argv) {
  auto args = Args::Parse(argc, argv, {"server", "service", "wait"});
  if (!args.ok()) return Fail("health", args.status(), 2);
  auto server = args->Require("server");
  if (!server.ok()) return Fail("health", server.status(), 2);
  auto wait = args->GetDouble("wait", 0.0);
  if (!wait.ok() || *wait < 0) {
    return Fail("health", absl::InvalidArgumentError("--wait must be a number of seconds >= 0"), 2);
  }
  EngramClientOptions options;
  options.timeout = absl::Seconds(2);
  auto client = EngramClient::Connect(*server, options);
  if (!client.ok()) return Fail("health", client.status(), 2);

  const absl::Time deadline = absl::Now() + absl::Seconds(*wait);
  absl::StatusOr<bool> serving = false;
  for (;;) {
    serving = (*client)->IsServing(args->GetOr("service", ""));
    if ((serving.ok() && *serving) || absl::Now() >= deadline) break;
    absl::SleepFor(absl::Milliseconds(100));
  }
  if (!serving.ok()) {
    std::printf("UNREACHABLE (%s)\n", std::string(serving.status().message()).c_str());
    return 1;
  }
  std::printf("%s\n", *serving ? "SERVING" : "NOT_SERVING");
  return *serving ? 0 : 1;
}

}  // namespace

ENGRAM_CLI_COMMAND(health, "health",
                   "grpc.health.v1 status of a server (--wait to wait for SERVING)", RunHealth);

}  // namespace engram::cli
