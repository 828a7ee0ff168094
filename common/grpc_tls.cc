#include "common/grpc_tls.h"

#include <fstream>
#include <vector>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "grpcpp/impl/server_builder_plugin.h"

namespace engram {
namespace {

absl::StatusOr<std::string> ReadPem(const char* flag, const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::InvalidArgumentError(absl::StrCat(flag, ": cannot read ", path));
  std::ostringstream s;
  s << in.rdbuf();
  if (s.str().find("-----BEGIN") == std::string::npos) {
    return absl::InvalidArgumentError(absl::StrCat(flag, ": ", path, " is not a PEM file"));
  }
  return s.str();
}

class NoReflection : public grpc::ServerBuilderOption {
 public:
  void UpdateArguments(grpc::ChannelArguments*) override {}
  void UpdatePlugins(std::vector<std::unique_ptr<grpc::ServerBuilderPlugin>>* plugins) override {
    std::erase_if(*plugins, [](const std::unique_ptr<grpc::ServerBuilderPlugin>& p) {
      return p->name() == "proto_server_reflection";
    });
  }
};

}  // namespace

std::unique_ptr<grpc::ServerBuilderOption> NoReflectionOption() {
  return std::make_unique<NoReflection>();
}

absl::Status ValidateServerTls(const ServerTlsFiles& f) {
  if (f.cert.empty() != f.key.empty()) {
    return absl::InvalidArgumentError("--tls-cert and --tls-key must be given together");
  }
  if (!f.client_ca.empty() && f.cert.empty()) {
    return absl::InvalidArgumentError("--tls-client-ca needs --tls-cert and --tls-key");
  }
  return absl::OkStatus();
}

absl::Status ValidateClientTls(const ClientTlsFiles& f) {
  if (f.cert.empty() != f.key.empty()) {
    return absl::InvalidArgumentError(
        "--memory-tls-cert and --memory-tls-key must be given together");
  }
  return absl::OkStatus();
}

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> MakeServerCredentials(
    const ServerTlsFiles& f) {
  if (!f.enabled()) return grpc::InsecureServerCredentials();
  if (absl::Status s = ValidateServerTls(f); !s.ok()) return s;
  grpc::SslServerCredentialsOptions o(
      f.client_ca.empty() ? GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE
                          : GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
  grpc::SslServerCredentialsOptions::PemKeyCertPair pair;
  absl::StatusOr<std::string> cert = ReadPem("--tls-cert", f.cert);
  if (!cert.ok()) return cert.status();
  absl::StatusOr<std::string> key = ReadPem("--tls-key", f.key);
  if (!key.ok()) return key.status();
  pair.cert_chain = *cert;
  pair.private_key = *key;
  o.pem_key_cert_pairs.push_back(pair);
  if (!f.client_ca.empty()) {
    absl::StatusOr<std::string> ca = ReadPem("--tls-client-ca", f.client_ca);
    if (!ca.ok()) return ca.status();
    o.pem_root_certs = *ca;
  }
  return grpc::SslServerCredentials(o);
}

absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> MakeChannelCredentials(
    const ClientTlsFiles& f) {
  if (!f.enabled()) return grpc::InsecureChannelCredentials();
  if (absl::Status s = ValidateClientTls(f); !s.ok()) return s;
  grpc::SslCredentialsOptions o;
  if (!f.ca.empty()) {
    absl::StatusOr<std::string> ca = ReadPem("--memory-tls-ca", f.ca);
    if (!ca.ok()) return ca.status();
    o.pem_root_certs = *ca;
  }
  if (!f.cert.empty()) {
    absl::StatusOr<std::string> cert = ReadPem("--memory-tls-cert", f.cert);
    if (!cert.ok()) return cert.status();
    absl::StatusOr<std::string> key = ReadPem("--memory-tls-key", f.key);
    if (!key.ok()) return key.status();
    o.pem_cert_chain = *cert;
    o.pem_private_key = *key;
  }
  return grpc::SslCredentials(o);
}

}  // namespace engram
