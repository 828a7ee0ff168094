#!/usr/bin/env python3
"""Derives the Engram compressed vocabulary size V' of a tokenizer.json independently of the C++
code and of Hugging Face tokenizers, from the reference rules alone (docs/engram-reference.md
§1.2) and the normaliser's code point vectors:

    /usr/bin/python3 tests/tokenizer/derive_compressed_vocab.py \\
        .cache/testdata/tokenizer-gpt2/package/models/tokenizer.json \\
        tests/vectors/engram_normalizer_codepoints.json

- decode([id]): byte-level alphabet -> bytes, bytes.decode("utf-8", "replace") (Python's
  "replace" is Rust's from_utf8_lossy); unassigned ids below len(tokenizer) decode to "".
- key: the raw token string when the text holds U+FFFD, else the normalised text, else the text.
- the normaliser: NFKC, NFD, drop General Category M, lowercase each character on its own,
  [ \\t\\r\\n]+ -> " ", lone space kept, White_Space stripped; with Python's unicodedata. Where that
  differs from the library for a single code point (the library is frozen at Unicode 9.0), the
  code point vectors say what the library does: tokens containing such code points are normalised
  by concatenating the library's per-code-point outputs and redoing the whitespace steps. The
  script prints how many tokens needed that.
- keys are numbered by first appearance over range(len(tokenizer)).
"""
import json
import re
import sys
import unicodedata

WHITE_SPACE = "\t\n\x0b\x0c\r \x85\xa0\u1680" + "".join(chr(c) for c in range(0x2000, 0x200B)) + \
    "\u2028\u2029\u202f\u205f\u3000"
SENTINEL = "\ue000"


def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs)}


def whitespace_steps(s):
    s = re.sub("[ \t\r\n]+", " ", s)
    if s == " ":
        s = SENTINEL
    return s.strip(WHITE_SPACE).replace(SENTINEL, " ")


def core(s):  # NFKC, NFD, strip marks, per-character lowercase
    s = unicodedata.normalize("NFD", unicodedata.normalize("NFKC", s))
    s = "".join(c for c in s if not unicodedata.category(c).startswith("M"))
    return "".join(c.lower() for c in s)


def main():
    tok = json.load(open(sys.argv[1], encoding="utf-8"))
    vectors = json.load(open(sys.argv[2]))["single_codepoints_non_identity"]
    library = {}
    for c in range(0x110000):
        if 0xD800 <= c <= 0xDFFF:
            continue
        h = "%X" % c
        library[chr(c)] = "".join(chr(int(x, 16)) for x in vectors[h].split()) if h in vectors else chr(c)
    differs = {ch for ch, out in library.items() if whitespace_steps(core(ch)) != out}

    alphabet = bytes_to_unicode()
    id_to_token = {i: t for t, i in tok["model"]["vocab"].items()}
    contents = set(tok["model"]["vocab"])
    for a in tok.get("added_tokens") or []:
        id_to_token[a["id"]] = a["content"]
        contents.add(a["content"])
    n = len(contents)  # len(tokenizer): model vocab and added vocab, as a union

    keys, lookup, patched = {}, [], 0
    for i in range(n):
        token = id_to_token.get(i)
        if token is None:
            text = ""
        elif all(ch in alphabet for ch in token):
            text = bytes(alphabet[ch] for ch in token).decode("utf-8", "replace")
        else:
            text = token
        if "\ufffd" in text:
            key = token
        else:
            if any(ch in differs for ch in text):
                patched += 1
                norm = whitespace_steps("".join(library[ch] for ch in text))
            else:
                norm = whitespace_steps(core(text))
            key = norm if norm else text
        lookup.append(keys.setdefault(key, len(keys)))
    print(json.dumps({"file": sys.argv[1], "len_tokenizer": n, "size": len(keys),
                      "tokens_normalised_from_codepoint_vectors": patched,
                      "python_unicodedata": unicodedata.unidata_version,
                      "codepoints_where_python_differs": len(differs)}))


if __name__ == "__main__":
    main()
