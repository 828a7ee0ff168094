#!/usr/bin/env bash
# Installs the Debian packages engram-serve builds and tests with (bookworm). Idempotent; skips
# apt-get when everything is already there. Run as root (or with sudo available).
set -euo pipefail
pkgs=(
  build-essential cmake ninja-build pkg-config ccache git
  clang-14 libclang-rt-14-dev
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  libabsl-dev librocksdb-dev liburing-dev prometheus-cpp-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  libicu-dev libpcre2-dev nlohmann-json3-dev libcpp-httplib-dev
  prometheus nodejs npm python3 python3-grpcio python3-yaml curl
)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# Node/npm may come from elsewhere (e.g. a preinstalled Node); only ask apt when absent.
if command -v node >/dev/null && command -v npm >/dev/null; then
  filtered=(); for p in "${missing[@]}"; do [[ $p == nodejs || $p == npm ]] || filtered+=("$p"); done
  missing=("${filtered[@]}")
fi
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "install-deps: installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
