// TLS for the gRPC servers (engram-worker, engram-memory) and the worker's memory-tier client,
// with gRPC's own SSL credentials (docs/operations.md, "Threat model"). Paths name PEM files; an
// unreadable or empty file is INVALID_ARGUMENT naming the flag and the path.
//
//   server: cert + key            TLS; any client may connect
//           cert + key + client_ca mutual TLS; a client without a certificate signed by
//                                  client_ca is refused during the handshake
//   client: ca                     verify the server against this CA (else the system roots)
//           ca + cert + key        also present a client certificate (for a mutual-TLS server)
// Everything empty = plaintext (the default; only for a network no one else can reach).
#ifndef ENGRAM_COMMON_GRPC_TLS_H_
#define ENGRAM_COMMON_GRPC_TLS_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "grpcpp/impl/server_builder_option.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/security/server_credentials.h"

namespace engram {

struct ServerTlsFiles {
  std::string cert;       // --tls-cert
  std::string key;        // --tls-key
  std::string client_ca;  // --tls-client-ca (mutual TLS)
  bool enabled() const { return !cert.empty() || !key.empty() || !client_ca.empty(); }
};

struct ClientTlsFiles {
  std::string ca;    // --memory-tls-ca
  std::string cert;  // --memory-tls-cert
  std::string key;   // --memory-tls-key
  bool enabled() const { return !ca.empty() || !cert.empty() || !key.empty(); }
};

// Checks the combination: cert and key together; client_ca only with them.
absl::Status ValidateServerTls(const ServerTlsFiles& f);
absl::Status ValidateClientTls(const ClientTlsFiles& f);

// Insecure credentials when nothing is set.
absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> MakeServerCredentials(
    const ServerTlsFiles& f);
absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> MakeChannelCredentials(
    const ClientTlsFiles& f);

// A ServerBuilder option that removes the server-reflection plugin (which
// grpc::reflection::InitProtoReflectionServerBuilderPlugin adds to every builder of the process):
// builder.SetOption(NoReflectionOption()) for --reflection=false.
std::unique_ptr<grpc::ServerBuilderOption> NoReflectionOption();

}  // namespace engram

#endif  // ENGRAM_COMMON_GRPC_TLS_H_
