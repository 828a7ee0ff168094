#!/usr/bin/python3
"""Writes the Engram module golden files (run once; the outputs are committed).

A port of the reference demo's Engram module (engram_demo_v1.py: CompressedTokenizer,
NgramHashMapping with numpy's default_rng and sympy's isprime, MultiHeadEmbedding, the gate,
ShortConv), shrunk to tiny tables, run on random weights and inputs. Each output file holds the
module's weights under the reference names, the inputs (io.input_ids, io.hidden_states), the
expected hash ids (io.hash_ids) and output (io.output), and the hyper-parameters as metadata.
`engram check-module FILE --tokenizer GPT2_TOKENIZER_JSON` recomputes everything in C++.

Differences from the demo, all forced by the environment, none changing results:
- Debian's torch 1.13 has no nn.RMSNorm (added in 2.4) and there is no `tokenizers`/`transformers`
  package: RMSNorm is written out exactly as torch 2.x's F.rms_norm computes it (eps=None means
  torch.finfo(dtype).eps), and the tokenizer's decode([id]) + normaliser are reimplemented below
  for GPT-2's byte-level tokenizer.json. The normaliser is checked against the Hugging Face
  reference vectors (tests/vectors) for every character GPT-2's vocabulary decodes to.
- No safetensors package: a minimal writer is included.

Usage: /usr/bin/python3 generate.py [GPT2_TOKENIZER_JSON [VECTORS_DIR]]
"""
import json
import math
import os
import re
import struct
import sys
import unicodedata

import numpy as np
import torch
import torch.nn as nn
from sympy import isprime

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", "..", ".."))
TOKENIZER = os.path.join(ROOT, ".cache/testdata/tokenizer-gpt2/package/models/tokenizer.json")
VECTORS = os.path.join(ROOT, "tests", "vectors")

# ---- GPT-2 decode([id]) and the Engram normaliser ------------------------------------------------


def bytes_to_unicode():
    bs = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
          + list(range(ord("®"), ord("ÿ") + 1)))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs)}


BYTE_DECODER = bytes_to_unicode()


def load_vocab(path):
    with open(path, encoding="utf-8") as f:
        tok = json.load(f)
    id_to_token = {i: t for t, i in tok["model"]["vocab"].items()}
    for added in tok["added_tokens"]:
        id_to_token[added["id"]] = added["content"]
    return id_to_token


def decode_one(token):
    # ByteLevel decoder: tokens made only of alphabet chars become their bytes, others stay as
    # UTF-8; the result is decoded once, lossily (Python's errors="replace" = from_utf8_lossy).
    if all(c in BYTE_DECODER for c in token):
        raw = bytes(BYTE_DECODER[c] for c in token)
    else:
        raw = token.encode("utf-8")
    return raw.decode("utf-8", errors="replace")


# char::is_whitespace (White_Space), which Strip uses; Python's str.strip also strips \x1c-\x1f.
WHITE_SPACE = set("\t\n\x0b\x0c\r \x85\xa0\u1680\u2028\u2029\u202f\u205f\u3000"
                  + "".join(chr(c) for c in range(0x2000, 0x200B)))
SENTINEL = "\ue000"


def normalize(text):
    s = unicodedata.normalize("NFKC", text)
    s = unicodedata.normalize("NFD", s)
    s = "".join(c for c in s if not unicodedata.category(c).startswith("M"))  # Mn, Mc, Me
    s = "".join(c.lower() for c in s)  # per character: no final-sigma context
    s = re.sub(r"[ \t\r\n]+", " ", s)
    if s == " ":
        s = SENTINEL
    begin, end = 0, len(s)
    while begin < end and s[begin] in WHITE_SPACE:
        begin += 1
    while end > begin and s[end - 1] in WHITE_SPACE:
        end -= 1
    return s[begin:end].replace(SENTINEL, " ")


def check_normalizer(texts, vectors_dir):
    """Compares with the Hugging Face vectors for every code point the texts contain."""
    path = os.path.join(vectors_dir, "engram_normalizer_codepoints.json")
    with open(path, encoding="utf-8") as f:
        table = json.load(f)["single_codepoints_non_identity"]
    expected = {int(k, 16): "".join(chr(int(h, 16)) for h in v.split()) for k, v in table.items()}
    chars = sorted({ord(c) for t in texts for c in t})
    bad = [c for c in chars if normalize(chr(c)) != expected.get(c, chr(c))]
    if bad:
        raise SystemExit("normaliser differs from Hugging Face on %s" % [hex(c) for c in bad[:20]])
    with open(os.path.join(vectors_dir, "engram_normalizer_vectors.json"),
              encoding="utf-8") as f:
        for case in json.load(f):
            if normalize(case["in"]) != case["out"]:
                raise SystemExit("normaliser differs on %r" % case["in"])
    return len(chars)


class CompressedTokenizer:
    """The demo's CompressedTokenizer over GPT-2's tokenizer.json."""

    def __init__(self, tokenizer_path, vectors_dir):
        id_to_token = load_vocab(tokenizer_path)
        vocab_size = len(id_to_token)
        assert sorted(id_to_token) == list(range(vocab_size))
        texts = [decode_one(id_to_token[tid]) for tid in range(vocab_size)]
        self.checked_chars = check_normalizer(texts, vectors_dir)
        key2new = {}
        self.lookup_table = np.empty(vocab_size, dtype=np.int64)
        for tid in range(vocab_size):
            text = texts[tid]
            if "\ufffd" in text:
                key = id_to_token[tid]
            else:
                norm = normalize(text)
                key = norm if norm else text
            self.lookup_table[tid] = key2new.setdefault(key, len(key2new))
        self.num_new_token = len(key2new)

    def __len__(self):
        return self.num_new_token

    def __call__(self, input_ids):
        arr = np.asarray(input_ids, dtype=np.int64)
        out = arr.copy()
        mask = arr >= 0
        out[mask] = self.lookup_table[arr[mask]]
        return out


# ---- NgramHashMapping (demo, verbatim logic) -----------------------------------------------------


def find_next_prime(start, seen_primes):
    candidate = start + 1
    while True:
        if isprime(candidate) and candidate not in seen_primes:
            return candidate
        candidate += 1


class NgramHashMapping:
    def __init__(self, engram_vocab_size, max_ngram_size, n_head_per_ngram, layer_ids,
                 compressed_tokenizer, pad_id, seed):
        self.vocab_size_per_ngram = engram_vocab_size
        self.max_ngram_size = max_ngram_size
        self.n_head_per_ngram = n_head_per_ngram
        self.layer_ids = layer_ids
        self.compressed_tokenizer = compressed_tokenizer
        self.tokenizer_vocab_size = len(compressed_tokenizer)
        self.pad_id = int(compressed_tokenizer.lookup_table[pad_id])
        max_long = np.iinfo(np.int64).max
        m_max = int(max_long // self.tokenizer_vocab_size)
        half_bound = max(1, m_max // 2)
        self.layer_multipliers = {}
        for layer_id in layer_ids:
            g = np.random.default_rng(int(seed + 10007 * int(layer_id)))
            r = g.integers(low=0, high=half_bound, size=(max_ngram_size,), dtype=np.int64)
            self.layer_multipliers[layer_id] = r * 2 + 1
        seen = set()
        self.vocab_size_across_layers = {}
        for layer_id in layer_ids:
            sizes = []
            for ngram in range(2, max_ngram_size + 1):
                heads = []
                start = engram_vocab_size[ngram - 2] - 1
                for _ in range(n_head_per_ngram):
                    p = find_next_prime(start, seen)
                    seen.add(p)
                    heads.append(p)
                    start = p
                sizes.append(heads)
            self.vocab_size_across_layers[layer_id] = sizes

    def _get_ngram_hashes(self, x, layer_id):
        x = np.asarray(x, dtype=np.int64)
        B, T = x.shape
        multipliers = self.layer_multipliers[layer_id]

        def shift_k(k):
            if k == 0:
                return x
            return np.pad(x, ((0, 0), (k, 0)), mode="constant",
                          constant_values=self.pad_id)[:, :T]

        base_shifts = [shift_k(k) for k in range(self.max_ngram_size)]
        all_hashes = []
        for n in range(2, self.max_ngram_size + 1):
            tokens = base_shifts[:n]
            mix = tokens[0] * multipliers[0]
            for k in range(1, n):
                mix = np.bitwise_xor(mix, tokens[k] * multipliers[k])
            for mod in self.vocab_size_across_layers[layer_id][n - 2]:
                all_hashes.append((mix % int(mod)).astype(np.int64, copy=False))
        return np.stack(all_hashes, axis=2)

    def hash(self, input_ids):
        compressed = self.compressed_tokenizer(input_ids)
        return {l: self._get_ngram_hashes(compressed, l) for l in self.layer_ids}


# ---- The module ----------------------------------------------------------------------------------


class RMSNorm(nn.Module):
    """torch 2.x nn.RMSNorm: x * rsqrt(mean(x^2) + eps) * weight, eps=None -> finfo(dtype).eps."""

    def __init__(self, dim, eps=None):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        eps = torch.finfo(x.dtype).eps if self.eps is None else self.eps
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * self.weight


class ShortConv(nn.Module):
    def __init__(self, hidden_size, kernel_size, dilation, hc_mult, norm_eps=1e-5):
        super().__init__()
        self.hc_mult = hc_mult
        channels = hidden_size * hc_mult
        self.conv = nn.Conv1d(channels, channels, kernel_size=kernel_size, groups=channels,
                              bias=False, padding=(kernel_size - 1) * dilation, dilation=dilation)
        self.norms = nn.ModuleList([RMSNorm(hidden_size, eps=norm_eps) for _ in range(hc_mult)])
        self.act_fn = nn.SiLU()

    def forward(self, x):
        B, T, G, C = x.shape
        x_norm = torch.cat([self.norms[i](x[:, :, i, :]) for i in range(G)], dim=-1)
        y = self.act_fn(self.conv(x_norm.transpose(1, 2))[..., :T])
        return y.transpose(1, 2).view(B, T, G, C).contiguous()


class MultiHeadEmbedding(nn.Module):
    def __init__(self, list_of_n, dim):
        super().__init__()
        offsets = [0]
        for n in list_of_n[:-1]:
            offsets.append(offsets[-1] + n)
        self.register_buffer("offsets", torch.tensor(offsets, dtype=torch.long))
        self.embedding = nn.Embedding(sum(list_of_n), dim)

    def forward(self, input_ids):
        return self.embedding(input_ids + self.offsets)


class Engram(nn.Module):
    def __init__(self, cfg, hash_mapping):
        super().__init__()
        self.cfg = cfg
        self.hash_mapping = hash_mapping
        self.multi_head_embedding = MultiHeadEmbedding(
            [x for y in hash_mapping.vocab_size_across_layers[cfg["layer_id"]] for x in y],
            cfg["n_embed_per_ngram"] // cfg["n_head_per_ngram"])
        H, M = cfg["hidden_size"], cfg["hc_mult"]
        if cfg["kernel_size"] > 0:
            self.short_conv = ShortConv(H, cfg["kernel_size"], cfg["max_ngram_size"], M)
        d_mem = (cfg["max_ngram_size"] - 1) * cfg["n_embed_per_ngram"]
        self.value_proj = nn.Linear(d_mem, H)
        self.key_projs = nn.ModuleList([nn.Linear(d_mem, H) for _ in range(M)])
        self.norm1 = nn.ModuleList([RMSNorm(H) for _ in range(M)])
        self.norm2 = nn.ModuleList([RMSNorm(H) for _ in range(M)])

    def forward(self, hidden_states, input_ids):
        hash_ids = self.hash_mapping.hash(input_ids)[self.cfg["layer_id"]]
        ids = torch.from_numpy(hash_ids).to(self.multi_head_embedding.offsets.device)
        embeddings = self.multi_head_embedding(ids).flatten(start_dim=-2)
        gates = []
        for m in range(self.cfg["hc_mult"]):
            normed_key = self.norm1[m](self.key_projs[m](embeddings))
            normed_query = self.norm2[m](hidden_states[:, :, m, :])
            gate = (normed_key * normed_query).sum(dim=-1) / math.sqrt(self.cfg["hidden_size"])
            gate = gate.abs().clamp_min(1e-6).sqrt() * gate.sign()
            gates.append(gate.sigmoid().unsqueeze(-1))
        value = torch.stack(gates, dim=2) * self.value_proj(embeddings).unsqueeze(2)
        if self.cfg["kernel_size"] > 0:
            return value + self.short_conv(value), hash_ids
        return value, hash_ids


# ---- safetensors writer --------------------------------------------------------------------------

DTYPES = {torch.float64: "F64", torch.float32: "F32", torch.bfloat16: "BF16", torch.int64: "I64"}


def tensor_bytes(t):
    t = t.detach().contiguous().cpu()
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().astype("<i2").tobytes()
    return t.numpy().astype(t.numpy().dtype.newbyteorder("<")).tobytes()


def write_safetensors(path, tensors, metadata):
    header = {"__metadata__": metadata}
    blobs, offset = [], 0
    for name, t in tensors.items():
        data = tensor_bytes(t)
        header[name] = {"dtype": DTYPES[t.dtype], "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * ((8 - len(text) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for data in blobs:
            f.write(data)


# ---- The four cases ------------------------------------------------------------------------------

CASES = [
    dict(name="hc1_conv_bf16", hc_mult=1, kernel_size=4, max_ngram_size=3,
         engram_vocab_size=[53, 61], dtype=torch.bfloat16, seed=0, pad_id=2, hidden_size=32),
    dict(name="hc1_noconv_f32", hc_mult=1, kernel_size=0, max_ngram_size=4,
         engram_vocab_size=[41, 43, 47], dtype=torch.float32, seed=7, pad_id=50256, hidden_size=48),
    dict(name="hc4_conv_f32", hc_mult=4, kernel_size=4, max_ngram_size=3,
         engram_vocab_size=[59, 59], dtype=torch.float32, seed=0, pad_id=2, hidden_size=32,
         small_activations=True),
    dict(name="hc4_noconv_f64", hc_mult=4, kernel_size=0, max_ngram_size=3,
         engram_vocab_size=[37, 71], dtype=torch.float64, seed=3, pad_id=50256, hidden_size=40),
]
B, L = 2, 12
N_HEAD, N_EMBED = 4, 32  # head_dim 8
LAYER_IDS, LAYER_ID = [1, 3], 3


def input_ids(rng, vocab_size, pad_id):
    ids = rng.integers(0, vocab_size, size=(B, L), dtype=np.int64)
    # Tokens that merge in the compressed vocabulary ("Apple"/"apple"/" apple"), the pad token,
    # a partial-UTF-8 token (U+FFFD rule) and a repeated n-gram.
    ids[0, :6] = [16108, 17180, 18040, 4196, 13, 764]
    ids[1, 3:6] = [pad_id, 4210, 50256]
    ids[1, 8:12] = ids[1, 4:8]
    return ids


def generate(case, compressed):
    torch.manual_seed(1234 + len(case["name"]))
    rng = np.random.default_rng(99)
    cfg = dict(case, n_embed_per_ngram=N_EMBED, n_head_per_ngram=N_HEAD, layer_ids=LAYER_IDS,
               layer_id=LAYER_ID)
    mapping = NgramHashMapping(case["engram_vocab_size"], case["max_ngram_size"], N_HEAD,
                               LAYER_IDS, compressed, case["pad_id"], case["seed"])
    module = Engram(cfg, mapping)
    with torch.no_grad():  # non-trivial norm gains (default init is all ones)
        for name, p in module.named_parameters():
            if "norm" in name:
                p.copy_(1 + 0.2 * torch.randn_like(p))
            # Keys and values ~1e-3: mean squares (~1e-6) then sit near the RMSNorm eps, so this
            # file tells eps = finfo(f32).eps (gate norms) and 1e-5 (conv norms) from other choices.
            if case.get("small_activations") and ("key_projs" in name or "value_proj" in name):
                p.mul_(1e-3)
    dtype = case["dtype"]
    compute = torch.float64 if dtype == torch.float64 else torch.float32
    # Values are rounded to the stored dtype first, so the reference runs on exactly the numbers
    # the file holds (bf16 is then computed in f32, like the C++ module).
    module = module.to(dtype).to(compute)
    ids = input_ids(rng, len(compressed.lookup_table), case["pad_id"])
    hidden = torch.randn(B, L, case["hc_mult"], case["hidden_size"]).to(dtype).to(compute)
    with torch.no_grad():
        output, hash_ids = module(hidden, ids)
    tensors = {name: p.to(dtype) for name, p in module.state_dict().items()
               if name != "multi_head_embedding.offsets"}
    tensors["io.input_ids"] = torch.from_numpy(ids)
    tensors["io.hidden_states"] = hidden.to(dtype)
    tensors["io.hash_ids"] = torch.from_numpy(np.ascontiguousarray(hash_ids))
    tensors["io.output"] = output.to(torch.float64 if dtype == torch.float64 else torch.float32)
    metadata = {k: json.dumps(cfg[k]) for k in
                ["hidden_size", "hc_mult", "engram_vocab_size", "max_ngram_size",
                 "n_embed_per_ngram", "n_head_per_ngram", "layer_ids", "layer_id", "kernel_size",
                 "pad_id", "seed"]}
    metadata["compressed_vocab_size"] = str(len(compressed))
    metadata["generator"] = "tests/golden/engram_module/generate.py (torch %s, numpy %s)" % (
        torch.__version__, np.__version__)
    path = os.path.join(HERE, case["name"] + ".safetensors")
    write_safetensors(path, tensors, metadata)
    print("%s: %d bytes, primes %s" % (path, os.path.getsize(path),
                                       mapping.vocab_size_across_layers[LAYER_ID]))


def main():
    tokenizer = sys.argv[1] if len(sys.argv) > 1 else TOKENIZER
    vectors = sys.argv[2] if len(sys.argv) > 2 else VECTORS
    compressed = CompressedTokenizer(tokenizer, vectors)
    print("compressed vocab: %d of %d ids (normaliser checked on %d distinct chars)" % (
        len(compressed), len(compressed.lookup_table), compressed.checked_chars))
    for case in CASES:
        generate(case, compressed)


if __name__ == "__main__":
    main()
