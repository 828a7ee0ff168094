// A throwaway PKI for TLS tests, made with the openssl command-line tool: a CA, a server
// certificate for localhost / 127.0.0.1, and a client certificate signed by the same CA, all PEM
// in `dir`. Header-only; the tests that use it need /usr/bin/openssl.
#ifndef ENGRAM_TESTS_COMMON_TEST_PKI_H_
#define ENGRAM_TESTS_COMMON_TEST_PKI_H_

#include <cstdlib>
#include <fstream>
#include <string>

namespace engram::testing {

struct TestPki {
  std::string ca;           // ca.pem
  std::string server_cert;  // server.pem (CN and SAN localhost, SAN IP 127.0.0.1)
  std::string server_key;
  std::string client_cert;  // client.pem, signed by ca
  std::string client_key;
  std::string rogue_cert;   // rogue.pem: a client certificate signed by another CA
  std::string rogue_key;
};

// Writes the PKI into `dir` (which must exist); false when openssl fails.
inline bool MakeTestPki(const std::string& dir, TestPki* pki) {
  const std::string script = R"SH(set -e
exec >openssl.log 2>&1
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=engram-test-ca -keyout ca.key -out ca.pem
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=rogue-ca -keyout rca.key -out rca.pem
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' > server.ext
printf 'extendedKeyUsage=clientAuth\n' > client.ext
openssl req -newkey rsa:2048 -nodes -subj /CN=localhost -keyout server.key -out server.csr
openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -extfile server.ext -out server.pem
openssl req -newkey rsa:2048 -nodes -subj /CN=engram-worker -keyout client.key -out client.csr
openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -extfile client.ext -out client.pem
openssl req -newkey rsa:2048 -nodes -subj /CN=rogue -keyout rogue.key -out rogue.csr
openssl x509 -req -in rogue.csr -CA rca.pem -CAkey rca.key -CAcreateserial -days 2 -extfile client.ext -out rogue.pem
)SH";
  std::ofstream(dir + "/make-pki.sh") << script;
  if (std::system(("cd '" + dir + "' && bash make-pki.sh").c_str()) != 0) return false;
  pki->ca = dir + "/ca.pem";
  pki->server_cert = dir + "/server.pem";
  pki->server_key = dir + "/server.key";
  pki->client_cert = dir + "/client.pem";
  pki->client_key = dir + "/client.key";
  pki->rogue_cert = dir + "/rogue.pem";
  pki->rogue_key = dir + "/rogue.key";
  return std::ifstream(pki->rogue_cert).good();
}

}  // namespace engram::testing

#endif  // ENGRAM_TESTS_COMMON_TEST_PKI_H_
