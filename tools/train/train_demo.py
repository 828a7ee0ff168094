#!/usr/bin/python3
"""Trains the small English demo model (and its no-Engram control) on CPU or GPU.

Usage (Debian's python3-torch 1.13, python3-numpy, python3-sympy, python3-regex):
    bash tools/train/build-corpus.sh CORPUS_DIR            # English text from packages, not committed
    /usr/bin/python3 tools/train/train_demo.py --corpus CORPUS_DIR --out OUT_DIR [options]

Writes OUT_DIR/model (Engram) and OUT_DIR/control (the same backbone, no Engram modules, trained on
the same tokens for the same steps), each a model directory `engram` loads (config.json,
tokenizer.json, model.safetensors), plus OUT_DIR/heldout.txt, OUT_DIR/excerpt.txt (the first
EXCERPT_BYTES of the held-out text, cut at a line end) and OUT_DIR/report.json (held-out loss of
every variant as this script computes it in f32 on the stored, rounded weights).

Corpus and split. Documents are the consecutive DOC_LINES-line blocks (lines 0-19, 20-39, ...) of
the corpus files listed in FILES, each file cut to its first --bytes-per-file bytes (at a line end),
with leading and trailing empty lines stripped. A document is held out when
zlib.crc32(its UTF-8 bytes) % 100 < HELDOUT_PERCENT (2), otherwise it is trained on; the held-out
text is the held-out documents joined by "\n\n", in corpus order.

Tokenizer. Byte-level BPE trained here on the train split (GPT-2's pre-tokenizer regex, GPT-2's
byte-to-unicode alphabet, ids 0..255 the bytes in that order, then the merges in order, then
"<|endoftext|>" as the last id), written as a Hugging Face tokenizer.json shaped like GPT-2's (which
model/tokenizer.h loads). The encoder here applies the merges by rank as Hugging Face's BPE does.

Model. Llama-style (the architecture of tests/golden/backbone/make_golden.py and model/cpu_backbone.h:
RMSNorm, RoPE, grouped-query attention, SwiGLU MLP, untied lm_head) with, at ENGRAM_LAYERS, the
reference Engram module of tests/golden/engram_module/generate.py (imported from there: hashing with
CompressedTokenizer + NgramHashMapping, MultiHeadEmbedding, gate, ShortConv; hc_mult 1) added as
h += Engram(h) before the block's attention. Training sequences are SEQ-token pieces of the train
token stream, each a fresh sequence (hash history padded at its start), as `engram eval` runs its
windows.

Storage: embeddings, attention and MLP projections and lm_head in bf16; norms and the Engram
modules' small weights in f32; tables in bf16. The reported
losses are computed after rounding to these dtypes, in f32, with `engram eval`'s windows (the
window length = max_position_embeddings, consecutive windows share one token). The report also
gives the loss with the tables in FP8 instead (`*_nll_fp8_tables`: every table value rounded to
E4M3 under an E8M0 power-of-two scale per block of min(32, head_dim) values, as DeepSeek-V4.1's
row format stores them), which is what decides the tables' storage dtype.

    train_demo.py --out OUT_DIR --eval-model MODEL_DIR
evaluates a model directory this script wrote (e.g. models/demo-cpu) on OUT_DIR's held-out text
and excerpt instead of training: f32, FP8 tables, and bf16 autocast on a GPU.
"""
import argparse
import collections
import json
import math
import os
import struct
import sys
import time
import zlib

import numpy as np
import regex
import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "tests", "golden", "engram_module"))
import generate as ref  # noqa: E402  (the reference Engram module and hashing)

FILES = ["sotu.txt", "kjv.txt", "fortunes.txt", "wordnet-glosses.txt"]
HELDOUT_PERCENT = 2
DOC_LINES = 20
EXCERPT_BYTES = 6000
EOT = "<|endoftext|>"
GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
PAT = regex.compile(GPT2_PATTERN)
BYTE_ENCODER = {b: c for c, b in ref.BYTE_DECODER.items()}  # byte -> unicode char
BYTE_ORDER = [ord(c) for c in sorted(ref.BYTE_DECODER, key=lambda c: ord(c))]


# ---- corpus --------------------------------------------------------------------------------------

def load_documents(corpus, bytes_per_file):
    train, held = [], []
    for name in FILES:
        path = os.path.join(corpus, name)
        if not os.path.exists(path):
            print("skipping missing", path)
            continue
        with open(path, "rb") as f:
            raw = f.read(bytes_per_file)
        text = raw.decode("utf-8", errors="ignore").replace("\r\n", "\n")
        lines = text.split("\n")
        if not raw.endswith(b"\n"):
            lines = lines[:-1]  # the cut-off last line
        for k in range(0, len(lines), DOC_LINES):
            para = "\n".join(lines[k:k + DOC_LINES]).strip("\n")
            if not para.strip():
                continue
            (held if zlib.crc32(para.encode("utf-8")) % 100 < HELDOUT_PERCENT else train).append(para)
    return train, held


# ---- byte-level BPE ------------------------------------------------------------------------------

def to_symbols(piece):
    return "".join(BYTE_ENCODER[b] for b in piece.encode("utf-8"))


def train_bpe(texts, num_merges):
    counts = collections.Counter()
    for t in texts:
        for piece in PAT.findall(t):
            counts[to_symbols(piece)] += 1
    words = [list(w) for w in counts]
    freq = [counts[w] for w in counts]
    pairs = collections.defaultdict(int)
    where = collections.defaultdict(set)
    for i, w in enumerate(words):
        for a, b in zip(w, w[1:]):
            pairs[(a, b)] += freq[i]
            where[(a, b)].add(i)
    merges = []
    for _ in range(num_merges):
        if not pairs:
            break
        best = max(pairs.items(), key=lambda kv: (kv[1], kv[0]))[0]
        if pairs[best] < 2:
            break
        merges.append(best)
        a, b = best
        new = a + b
        for i in list(where[best]):
            w = words[i]
            f = freq[i]
            for x, y in zip(w, w[1:]):
                pairs[(x, y)] -= f
                if pairs[(x, y)] <= 0:
                    del pairs[(x, y)]
                where[(x, y)].discard(i)
            out, j = [], 0
            while j < len(w):
                if j + 1 < len(w) and w[j] == a and w[j + 1] == b:
                    out.append(new)
                    j += 2
                else:
                    out.append(w[j])
                    j += 1
            words[i] = out
            for x, y in zip(out, out[1:]):
                pairs[(x, y)] += f
                where[(x, y)].add(i)
        where.pop(best, None)
    return merges


class Bpe:
    def __init__(self, merges):
        self.vocab = {chr(c): i for i, c in enumerate(BYTE_ORDER)}
        for a, b in merges:
            self.vocab.setdefault(a + b, len(self.vocab))
        self.eot = len(self.vocab)
        self.ranks = {m: r for r, m in enumerate(merges)}
        self.merges = merges
        self.cache = {}

    def word(self, sym):
        if sym in self.cache:
            return self.cache[sym]
        parts = list(sym)
        while len(parts) > 1:
            best, rank = None, None
            for i in range(len(parts) - 1):
                r = self.ranks.get((parts[i], parts[i + 1]))
                if r is not None and (rank is None or r < rank):
                    best, rank = i, r
            if best is None:
                break
            a, b = parts[best], parts[best + 1]
            out, j = [], 0
            while j < len(parts):
                if j + 1 < len(parts) and parts[j] == a and parts[j + 1] == b:
                    out.append(a + b)
                    j += 2
                else:
                    out.append(parts[j])
                    j += 1
            parts = out
        ids = [self.vocab[p] for p in parts]
        self.cache[sym] = ids
        return ids

    def encode(self, text):
        ids = []
        for piece in PAT.findall(text):
            ids.extend(self.word(to_symbols(piece)))
        return ids

    def tokenizer_json(self):
        return {
            "version": "1.0", "truncation": None, "padding": None,
            "added_tokens": [{"id": self.eot, "content": EOT, "single_word": False, "lstrip": False,
                              "rstrip": False, "normalized": False, "special": True}],
            "normalizer": None,
            "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
                              "use_regex": True},
            "post_processor": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False,
                               "use_regex": True},
            "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True,
                        "use_regex": True},
            "model": {"type": "BPE", "dropout": None, "unk_token": None,
                      "continuing_subword_prefix": "", "end_of_word_suffix": "", "fuse_unk": False,
                      "byte_fallback": False, "vocab": self.vocab,
                      "merges": ["%s %s" % m for m in self.merges]},
        }


# ---- model ---------------------------------------------------------------------------------------

def rms_norm(x, w, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


class Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        H, D = c["hidden_size"], c["head_dim"]
        self.c = c
        self.input_layernorm = nn.Parameter(torch.ones(H))
        self.post_attention_layernorm = nn.Parameter(torch.ones(H))
        self.q_proj = nn.Linear(H, c["num_attention_heads"] * D, bias=False)
        self.k_proj = nn.Linear(H, c["num_key_value_heads"] * D, bias=False)
        self.v_proj = nn.Linear(H, c["num_key_value_heads"] * D, bias=False)
        self.o_proj = nn.Linear(c["num_attention_heads"] * D, H, bias=False)
        self.gate_proj = nn.Linear(H, c["intermediate_size"], bias=False)
        self.up_proj = nn.Linear(H, c["intermediate_size"], bias=False)
        self.down_proj = nn.Linear(c["intermediate_size"], H, bias=False)

    def forward(self, h, cos, sin, mask):
        c = self.c
        B, L, _ = h.shape
        nq, nkv, D = c["num_attention_heads"], c["num_key_value_heads"], c["head_dim"]
        x = rms_norm(h, self.input_layernorm, c["rms_norm_eps"])
        q = self.q_proj(x).view(B, L, nq, D).transpose(1, 2)
        k = self.k_proj(x).view(B, L, nkv, D).transpose(1, 2)
        v = self.v_proj(x).view(B, L, nkv, D).transpose(1, 2)
        q, k = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
        k = k.repeat_interleave(nq // nkv, dim=1)
        v = v.repeat_interleave(nq // nkv, dim=1)
        s = (q @ k.transpose(-1, -2)) / math.sqrt(D)
        s = s.masked_fill(mask[:L, :L], float("-inf"))
        a = (torch.softmax(s, dim=-1) @ v).transpose(1, 2).reshape(B, L, nq * D)
        h = h + self.o_proj(a)
        x = rms_norm(h, self.post_attention_layernorm, c["rms_norm_eps"])
        return h + self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Lm(nn.Module):
    def __init__(self, c, mapping):
        super().__init__()
        self.c = c
        H = c["hidden_size"]
        self.embed = nn.Embedding(c["vocab_size"], H)
        self.blocks = nn.ModuleList([Block(c) for _ in range(c["num_hidden_layers"])])
        self.norm = nn.Parameter(torch.ones(H))
        self.lm_head = nn.Linear(H, c["vocab_size"], bias=False)
        self.engram_layers = list(c.get("engram_layer_ids", []))
        self.engram = nn.ModuleDict()
        for lid in self.engram_layers:
            cfg = {"layer_id": lid, "hidden_size": H, "hc_mult": 1,
                   "max_ngram_size": c["engram_max_ngram_size"],
                   "n_embed_per_ngram": c["engram_n_heads"] * c["engram_head_dim"],
                   "n_head_per_ngram": c["engram_n_heads"], "kernel_size": c["engram_kernel_size"]}
            self.engram[str(lid)] = ref.Engram(cfg, mapping)
        D, L = c["head_dim"], c["max_position_embeddings"]
        inv = 1.0 / (c["rope_theta"] ** (torch.arange(0, D, 2, dtype=torch.float64) / D))
        f = torch.outer(torch.arange(L, dtype=torch.float64), inv)
        emb = torch.cat((f, f), dim=-1)
        self.register_buffer("cos", emb.cos().float(), persistent=False)
        self.register_buffer("sin", emb.sin().float(), persistent=False)
        self.register_buffer("mask", torch.triu(torch.ones(L, L, dtype=torch.bool), 1),
                             persistent=False)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=0.02)
            if isinstance(m, nn.Embedding):
                nn.init.normal_(m.weight, std=0.02)
        for e in self.engram.values():
            nn.init.zeros_(e.short_conv.conv.weight)  # as the reference initialises it
        self.zero_engram = False

    def forward(self, ids_np):
        ids = torch.from_numpy(ids_np).to(self.norm.device)
        L = ids.shape[1]
        h = self.embed(ids)
        cos, sin = self.cos[:L], self.sin[:L]
        for i, blk in enumerate(self.blocks):
            if i in self.engram_layers:
                e = self.engram[str(i)]
                if self.zero_engram:
                    w = e.multi_head_embedding.embedding.weight
                    saved = w.data.clone()
                    w.data.zero_()
                    out, _ = e(h.unsqueeze(2), ids_np)
                    w.data.copy_(saved)
                else:
                    out, _ = e(h.unsqueeze(2), ids_np)
                h = h + out[:, :, 0, :]
            h = blk(h, cos, sin, self.mask)
        return self.lm_head(rms_norm(h, self.norm, self.c["rms_norm_eps"]))


def tensors_of(model):
    """(name, tensor, dtype) under the project's names."""
    c, out = model.c, []
    out.append(("model.embed_tokens.weight", model.embed.weight, "BF16"))
    for i, b in enumerate(model.blocks):
        p = "model.layers.%d." % i
        out.append((p + "input_layernorm.weight", b.input_layernorm, "F32"))
        out.append((p + "post_attention_layernorm.weight", b.post_attention_layernorm, "F32"))
        for n in ["q_proj", "k_proj", "v_proj", "o_proj"]:
            out.append((p + "self_attn.%s.weight" % n, getattr(b, n).weight, "BF16"))
        for n in ["gate_proj", "up_proj", "down_proj"]:
            out.append((p + "mlp.%s.weight" % n, getattr(b, n).weight, "BF16"))
        if i in model.engram_layers:
            e, q = model.engram[str(i)], p + "engram."
            out.append((q + "multi_head_embedding.embedding.weight",
                        e.multi_head_embedding.embedding.weight,
                        "FP8" if model.c.get("fp8_tables") else "BF16"))
            out.append((q + "value_proj.weight", e.value_proj.weight, "F32"))
            out.append((q + "value_proj.bias", e.value_proj.bias, "F32"))
            out.append((q + "key_projs.0.weight", e.key_projs[0].weight, "F32"))
            out.append((q + "key_projs.0.bias", e.key_projs[0].bias, "F32"))
            out.append((q + "norm1.0.weight", e.norm1[0].weight, "F32"))
            out.append((q + "norm2.0.weight", e.norm2[0].weight, "F32"))
            out.append((q + "short_conv.conv.weight", e.short_conv.conv.weight, "F32"))
            out.append((q + "short_conv.norms.0.weight", e.short_conv.norms[0].weight, "F32"))
    out.append(("model.norm.weight", model.norm, "F32"))
    out.append(("lm_head.weight", model.lm_head.weight, "BF16"))
    return out


E4M3_MAX = 448.0


def fp8_e4m3_e8m0_parts(w, block):
    """V4.1's FP8 storage of w (2-D, rows along dim 0): per block of `block` values of a row an
    E8M0 scale 2^s with s = ceil(log2(amax / 448)) (so the block fits E4M3's range), and each value
    / 2^s rounded to the nearest E4M3 value (3 mantissa bits, normals down to 2^-6, subnormals in
    steps of 2^-9, ties to even). Returns (q, s): q the E4M3 values as f32 [rows, D], s the scale
    exponents [rows, D / block]. Emulated in f32 arithmetic (torch 1.13 has no float8 dtype); exact,
    since every E4M3 value and power of two is an f32."""
    rows, d = w.shape
    x = w.detach().float().reshape(rows, d // block, block)
    amax = x.abs().amax(dim=-1, keepdim=True)
    s = torch.ceil(torch.log2(torch.where(amax > 0, amax, torch.ones_like(amax)) / E4M3_MAX))
    y = x / torch.exp2(s)
    e = torch.floor(torch.log2(y.abs().clamp_min(2.0 ** -6)))
    quantum = torch.exp2(e - 3)
    q = (torch.round(y / quantum) * quantum).clamp(-E4M3_MAX, E4M3_MAX)
    return q.reshape(rows, d), s.reshape(rows, d // block)


def fp8_e4m3_e8m0(w, block):
    """w as its FP8 storage decodes: fp8_e4m3_e8m0_parts scaled back."""
    q, s = fp8_e4m3_e8m0_parts(w, block)
    rows, d = w.shape
    return (q.reshape(rows, d // block, block) * torch.exp2(s).unsqueeze(-1)).reshape(rows, d)


def e4m3_positive_values():
    """The values of the OCP E4M3 bit patterns 0x00..0x7e, increasing (0x7f is NaN)."""
    values = [(code & 7) / 8 * 2.0 ** -6 if code >> 3 == 0
              else (1 + (code & 7) / 8) * 2.0 ** ((code >> 3) - 7) for code in range(127)]
    return np.asarray(values, dtype=np.float32)


def e4m3_codes(q):
    """The OCP E4M3 bit patterns of values q that are exactly E4M3 (fp8_e4m3_e8m0_parts' q)."""
    table = e4m3_positive_values()
    a = q.abs().cpu().numpy().astype(np.float32)
    codes = np.searchsorted(table, a).astype(np.uint8)
    if not np.array_equal(table[codes], a):
        sys.exit("e4m3_codes: a value is not an E4M3 value")
    return codes | np.where(q.cpu().numpy() < 0, 0x80, 0).astype(np.uint8)


def eval_with_fp8_tables(model, ids, window):
    """eval_loss with every Engram table in FP8 (fp8_e4m3_e8m0), restored afterwards."""
    saved = []
    for e in model.engram.values():
        w = e.multi_head_embedding.embedding.weight
        saved.append((w, w.data.clone()))
        w.data.copy_(fp8_e4m3_e8m0(w.data, min(32, model.c["engram_head_dim"])))
    try:
        return eval_loss(model, ids, window)[0]
    finally:
        for w, d in saved:
            w.data.copy_(d)


def read_model(directory, device):
    """A model directory write_model wrote, back into an Lm (and the reference hash mapping)."""
    c = json.load(open(os.path.join(directory, "config.json")))
    path = os.path.join(directory, "model.safetensors")
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    mapping = None
    if c.get("engram_layer_ids"):
        compressed = ref.CompressedTokenizer(os.path.join(directory, "tokenizer.json"),
                                             os.path.join(ROOT, "tests", "vectors"))
        mapping = ref.NgramHashMapping(c["engram_vocab_size"], c["engram_max_ngram_size"],
                                       c["engram_n_heads"], c["engram_layer_ids"], compressed,
                                       c["engram_pad_token_id"], c["engram_seed"])
    model = Lm(c, mapping)
    with torch.no_grad():
        for name, t, dtype in tensors_of(model):
            if name not in header and name.endswith("embedding.weight"):
                base = name[:-len("weight")] + "embed."  # an FP8 table
                h, hs = header[base + "weight"], header[base + "scale"]
                codes = np.frombuffer(data[h["data_offsets"][0]:h["data_offsets"][1]], np.uint8)
                scales = np.frombuffer(data[hs["data_offsets"][0]:hs["data_offsets"][1]], np.uint8)
                if np.any((codes & 0x7f) == 0x7f):
                    sys.exit("%s: %s holds an E4M3 NaN" % (path, base + "weight"))
                v = e4m3_positive_values()[codes & 0x7f]
                v = np.where(codes & 0x80, -v, v).reshape(h["shape"][0], -1, 32)
                v = v * np.exp2(scales.astype(np.float32) - 127).reshape(h["shape"][0], -1, 1)
                t.copy_(torch.from_numpy(v.reshape(h["shape"]).astype(np.float32)))
                model.c["fp8_tables"] = True
                continue
            h = header[name]
            raw = data[h["data_offsets"][0]:h["data_offsets"][1]]
            if h["dtype"] == "BF16":
                bits = np.frombuffer(raw, dtype=np.uint16).astype(np.uint32) << 16
                v = bits.view(np.float32)
            elif h["dtype"] == "F32":
                v = np.frombuffer(raw, dtype=np.float32)
            else:
                sys.exit("%s: %s has dtype %s; this reader takes BF16 and F32" %
                         (path, name, h["dtype"]))
            t.copy_(torch.from_numpy(v.copy()).reshape(h["shape"]))
    return model.to(device)


def round_to_storage(model):
    with torch.no_grad():
        for _, t, dtype in tensors_of(model):
            if dtype == "BF16":
                t.copy_(t.to(torch.bfloat16).float())
            elif dtype == "FP8":
                t.copy_(fp8_e4m3_e8m0(t, 32))


def write_model(model, bpe, directory, name, generator):
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "config.json"), "w") as f:
        json.dump(dict(model.c, model_name=name), f, indent=2)
        f.write("\n")
    with open(os.path.join(directory, "tokenizer.json"), "w", encoding="utf-8") as f:
        json.dump(bpe.tokenizer_json(), f, ensure_ascii=False)
    header, blobs, offset = {}, [], 0
    def add(name, dtype, shape, data):
        nonlocal offset
        header[name] = {"dtype": dtype, "shape": list(shape),
                        "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)

    for n, t, dtype in tensors_of(model):
        t = t.detach().float().cpu().contiguous()
        if dtype == "FP8":  # V4.1's pair: ...embedding.embed.weight (E4M3) + embed.scale (E8M0)
            q, sc = fp8_e4m3_e8m0_parts(t, 32)
            base = n[:-len("weight")] + "embed."
            add(base + "weight", "F8_E4M3", q.shape, e4m3_codes(q).tobytes())
            add(base + "scale", "F8_E8M0", sc.shape, (sc.numpy() + 127).astype(np.uint8).tobytes())
        elif dtype == "BF16":
            add(n, dtype, t.shape, t.to(torch.bfloat16).view(torch.int16).numpy().tobytes())
        else:
            add(n, dtype, t.shape, t.numpy().tobytes())
    header["__metadata__"] = {"format": "pt", "generator": generator}
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    with open(os.path.join(directory, "model.safetensors"), "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for b in blobs:
            f.write(b)


@torch.no_grad()
def eval_loss(model, ids, window, batch=16, bf16=False):
    """`engram eval`'s windows: [k(W-1), k(W-1)+W), each predicting its tokens 1..len-1. In f32
    (TF32 off), or with bf16=True under bf16 autocast: the matrix products in bf16, as the CUDA
    backbone computes them (a reference of the GPU's precision, not of its exact roundings)."""
    model.eval()
    device = model.norm.device
    tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    starts = list(range(0, len(ids) - 1, window - 1))
    total, count = 0.0, 0
    groups = collections.defaultdict(list)
    for s in starts:
        groups[min(window, len(ids) - s)].append(s)
    for length, ss in groups.items():
        for b in range(0, len(ss), batch):
            x = np.stack([np.asarray(ids[s:s + length], dtype=np.int64) for s in ss[b:b + batch]])
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                logits = model(x)
            loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]).double(),
                                   torch.from_numpy(x[:, 1:]).to(device).reshape(-1),
                                   reduction="sum")
            total += float(loss)
            count += x.shape[0] * (length - 1)
    model.train()
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32
    return total / count, count


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--bytes-per-file", type=int, default=1_500_000)
    ap.add_argument("--vocab-size", type=int, default=2048)
    ap.add_argument("--tokenizer", default="",
                    help="reuse the merges of this tokenizer.json (one written by this script) "
                         "instead of training a BPE; --vocab-size is then ignored")
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--layers", type=int, default=3)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--kv-heads", type=int, default=2)
    ap.add_argument("--intermediate", type=int, default=256)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--minutes", type=float, default=0,
                    help="stop after this much wall time (0 = run all --steps)")
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--engram-layers", default="1,2")
    ap.add_argument("--engram-heads", type=int, default=4)
    ap.add_argument("--engram-head-dim", type=int, default=16)
    ap.add_argument("--engram-vocab", type=int, default=4000)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                    help="cpu or cuda (training in f32, TF32 matrix products on the GPU)")
    ap.add_argument("--name", default="engram-demo",
                    help="model_name of the Engram model (the control gets -control)")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--variant", choices=["engram", "control", "both"], default="both")
    ap.add_argument("--fp8-tables", action="store_true",
                    help="store the Engram tables in FP8 E4M3 + E8M0 (engram head dim a multiple "
                         "of 32)")
    ap.add_argument("--eval-model", default="",
                    help="evaluate this model directory on OUT's held-out text instead of training")
    ap.add_argument("--prepare-only", action="store_true",
                    help="stop after the tokenizer and token files (OUT/data.npz)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.backends.cuda.matmul.allow_tf32 = True  # training only; eval_loss turns it off
    os.makedirs(args.out, exist_ok=True)
    data_path = os.path.join(args.out, "data.npz")
    merges_path = os.path.join(args.out, "merges.json")
    t0 = time.time()
    if os.path.exists(data_path) and os.path.exists(merges_path):
        with open(merges_path) as f:
            bpe = Bpe([tuple(m) for m in json.load(f)])
        d = np.load(data_path)
        train_ids = d["train"]
        with open(os.path.join(args.out, "heldout.txt"), encoding="utf-8") as f:
            heldout = f.read()
    else:
        train_docs, held_docs = load_documents(args.corpus, args.bytes_per_file)
        print("documents: %d train, %d held out" % (len(train_docs), len(held_docs)))
        if args.tokenizer:
            with open(args.tokenizer, encoding="utf-8") as f:
                merges = [tuple(m.split(" ")) for m in json.load(f)["model"]["merges"]]
        else:
            merges = train_bpe(train_docs, args.vocab_size - 257)
        bpe = Bpe(merges)
        print("bpe: %d merges, vocab %d (%.0fs)" % (len(merges), bpe.eot + 1, time.time() - t0))
        train_ids = []
        for d in train_docs:
            train_ids.extend(bpe.encode(d + "\n\n"))
        train_ids = np.asarray(train_ids, dtype=np.int32)
        heldout = "\n\n".join(held_docs) + "\n"
        with open(os.path.join(args.out, "heldout.txt"), "w", encoding="utf-8") as f:
            f.write(heldout)
        cut = heldout.rfind("\n", 0, EXCERPT_BYTES) + 1
        with open(os.path.join(args.out, "excerpt.txt"), "w", encoding="utf-8") as f:
            f.write(heldout[:cut])
        with open(merges_path, "w") as f:
            json.dump(merges, f)
        np.savez(data_path, train=train_ids)
    print("train tokens: %d; held-out chars %d (%.0fs)" % (len(train_ids), len(heldout),
                                                           time.time() - t0))
    tok_dir = os.path.join(args.out, "tokenizer")
    os.makedirs(tok_dir, exist_ok=True)
    with open(os.path.join(tok_dir, "tokenizer.json"), "w", encoding="utf-8") as f:
        json.dump(bpe.tokenizer_json(), f, ensure_ascii=False)
    if args.prepare_only:
        return
    if args.eval_model:
        model = read_model(args.eval_model, device)
        window = model.c["max_position_embeddings"]
        excerpt = open(os.path.join(args.out, "excerpt.txt"), encoding="utf-8").read()
        r = {"model": args.eval_model}
        for name, text in [("heldout", heldout), ("excerpt", excerpt)]:
            ids = bpe.encode(text)
            r[name + "_nll"], r[name + "_predicted"] = eval_loss(model, ids, window)
            if model.engram_layers:
                r[name + "_nll_fp8_tables"] = eval_with_fp8_tables(model, ids, window)
            if device.type == "cuda":
                r[name + "_nll_bf16"], _ = eval_loss(model, ids, window, bf16=True)
        print(json.dumps(r, indent=2))
        return

    vocab = bpe.eot + 1
    base = {
        "architectures": ["LlamaForCausalLM"], "hidden_act": "silu", "vocab_size": vocab,
        "hidden_size": args.hidden, "intermediate_size": args.intermediate,
        "num_hidden_layers": args.layers, "num_attention_heads": args.heads,
        "num_key_value_heads": args.kv_heads, "head_dim": args.hidden // args.heads,
        "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "max_position_embeddings": args.seq,
        "tie_word_embeddings": False, "eos_token_id": [bpe.eot], "torch_dtype": "bfloat16",
    }
    eng = dict(base, engram_layer_ids=[int(x) for x in args.engram_layers.split(",")],
               engram_max_ngram_size=3, engram_n_heads=args.engram_heads,
               engram_head_dim=args.engram_head_dim,
               engram_vocab_size=[args.engram_vocab, args.engram_vocab],
               engram_pad_token_id=bpe.eot, engram_seed=0, engram_kernel_size=4, hc_mult=1)
    if args.fp8_tables:
        if args.engram_head_dim % 32:
            sys.exit("--fp8-tables needs --engram-head-dim a multiple of 32 (E8M0 blocks of 32)")
        eng["fp8_tables"] = True
    compressed = ref.CompressedTokenizer(os.path.join(tok_dir, "tokenizer.json"),
                                         os.path.join(ROOT, "tests", "vectors"))
    mapping = ref.NgramHashMapping(eng["engram_vocab_size"], 3, args.engram_heads,
                                   eng["engram_layer_ids"], compressed, bpe.eot, 0)
    held_ids = bpe.encode(heldout)
    excerpt = open(os.path.join(args.out, "excerpt.txt"), encoding="utf-8").read()
    excerpt_ids = bpe.encode(excerpt)
    report_path = os.path.join(args.out, "report.json")
    report = json.load(open(report_path)) if os.path.exists(report_path) else {}
    report.update({"train_tokens_available": int(len(train_ids)), "heldout_tokens": len(held_ids),
                   "excerpt_tokens": len(excerpt_ids), "torch": torch.__version__,
                   "threads": torch.get_num_threads(),
                   "device": (torch.cuda.get_device_name(device) if device.type == "cuda"
                              else "cpu")})

    variants = ["engram", "control"] if args.variant == "both" else [args.variant]
    pieces = len(train_ids) // args.seq
    # Both variants step in one loop on the same batches with the same learning rate, so they see
    # the same tokens for the same number of steps. The schedule (linear warm-up, cosine to 10%)
    # runs over --steps, or over --minutes of wall time when that ends first.
    models, opts = {}, {}
    for variant in variants:
        torch.manual_seed(args.seed)
        models[variant] = Lm(eng if variant == "engram" else base, mapping).to(device)
        opts[variant] = torch.optim.AdamW(models[variant].parameters(), lr=args.lr,
                                          betas=(0.9, 0.95), weight_decay=0.0)
    rng = np.random.default_rng(args.seed)
    start = time.time()
    step = 0
    while True:
        progress = step / args.steps
        if args.minutes:
            progress = max(progress, (time.time() - start) / (60 * args.minutes))
        if progress >= 1:
            break
        lr = args.lr * min(1.0, (step + 1) / 50) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))
        idx = rng.integers(0, pieces, size=args.batch)
        x = np.stack([train_ids[i * args.seq:(i + 1) * args.seq] for i in idx]).astype(np.int64)
        losses = []
        for variant in variants:
            model, opt = models[variant], opts[variant]
            for g in opt.param_groups:
                g["lr"] = lr
            logits = model(x)
            loss = F.cross_entropy(logits[:, :-1].reshape(-1, vocab),
                                   torch.from_numpy(x[:, 1:]).to(device).reshape(-1))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            losses.append("%s %.4f" % (variant, float(loss)))
        if step % 20 == 0:
            print("step %d %s lr %.2e %.0fs" % (step, " ".join(losses), lr, time.time() - start),
                  flush=True)
        step += 1
    minutes = (time.time() - start) / 60
    report["train_minutes_both_variants"] = round(minutes, 2)
    for variant in variants:
        model = models[variant]
        n_params = sum(p.numel() for p in model.parameters())
        n_tables = sum(e.multi_head_embedding.embedding.weight.numel()
                       for e in model.engram.values())
        round_to_storage(model)
        r = {"parameters": n_params, "table_parameters": n_tables,
             "backbone_parameters": n_params - n_tables, "steps": step,
             "train_tokens": step * args.batch * args.seq}
        r["heldout_nll"], r["heldout_predicted"] = eval_loss(model, held_ids, args.seq)
        r["excerpt_nll"], r["excerpt_predicted"] = eval_loss(model, excerpt_ids, args.seq)
        if device.type == "cuda":
            r["heldout_nll_bf16"], _ = eval_loss(model, held_ids, args.seq, bf16=True)
            r["excerpt_nll_bf16"], _ = eval_loss(model, excerpt_ids, args.seq, bf16=True)
        if variant == "engram":
            r["heldout_nll_fp8_tables"] = eval_with_fp8_tables(model, held_ids, args.seq)
            r["excerpt_nll_fp8_tables"] = eval_with_fp8_tables(model, excerpt_ids, args.seq)
            model.zero_engram = True
            r["heldout_nll_zero_engram"], _ = eval_loss(model, held_ids, args.seq)
            r["excerpt_nll_zero_engram"], _ = eval_loss(model, excerpt_ids, args.seq)
            model.zero_engram = False
        report[variant] = r
        print(variant, json.dumps(r), flush=True)
        write_model(model, bpe, os.path.join(args.out, "model" if variant == "engram" else "control"),
                    args.name if variant == "engram" else args.name + "-control",
                    "tools/train/train_demo.py (%s, %d steps)" % (variant, step))
        with open(report_path, "w") as f:
            json.dump(report, f, indent=2)


if __name__ == "__main__":
    main()
