#!/usr/bin/python3
"""Writes the backbone golden files: a tiny Llama-style model with Engram modules, its inputs and the
logits of a PyTorch reference implementation of the same architecture.

Run once with Debian's python3-torch (1.13) and python3-numpy; the outputs are committed:
    /usr/bin/python3 tests/golden/backbone/make_golden.py
        -> tests/golden/backbone/model/config.json
           tests/golden/backbone/model/model.safetensors   (the weights, several dtypes)
           tests/golden/backbone/golden.safetensors        (inputs, Engram rows, expected logits)

The reference follows Hugging Face's modeling_llama (LlamaRMSNorm, rotate_half RoPE, repeat_kv
grouped-query attention, SwiGLU MLP) and the Engram demo's module (engram_demo_v1.py: gate
sigmoid(sign(s) * sqrt(max(|s|, 1e-6))) over RMSNorm'd key and query, shared value projection,
ShortConv = per-branch RMSNorm, depthwise causal dilated conv, SiLU; Y = u + conv(u)) with
hc_mult = 1, applied as h += Engram(h) before the block's attention. torch 1.13 has no nn.RMSNorm,
so RMSNorm is written out with the eps the demo gets from nn.RMSNorm(H) (float32 machine epsilon for
the gate norms) and ShortConv's norm_eps (1e-5).

The reference runs in float64 on weights first rounded to their storage dtype, so the expected
logits measure only the error of the C++ f32 path. The Engram rows (what the memory tier would
deliver) are an input here: hashing has its own golden tests (tests/golden/engram_module).

A second set, logits_bf16, is the same forward with the CUDA backbone's roundings emulated (still in
float64 otherwise): every matrix (embedding, q/k/v/o, MLP, the Engram value/key projections,
lm_head) rounded to bf16, and every matrix product's input (the normed activations, the attention
output, the SwiGLU output, the Engram rows) and q and the K/V cache rounded to bf16. It is the
reference of the GPU tests: against the float64 logits a correct bf16 implementation is off by up
to 0.122 here (22 of 3,648 logits outside 0.06 + 3%), which is exactly what the H100 measured.
"""
import json
import math
import os
import struct

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))

CONFIG = {
    "model_name": "golden-backbone",
    "architectures": ["LlamaForCausalLM"],
    "hidden_act": "silu",
    "vocab_size": 96,
    "hidden_size": 32,
    "intermediate_size": 80,
    "num_hidden_layers": 3,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 8,
    "rms_norm_eps": 1e-5,
    "rope_theta": 10000.0,
    "max_position_embeddings": 64,
    "tie_word_embeddings": False,
    "bos_token_id": 1,
    "eos_token_id": [2, 3],
    "torch_dtype": "float32",
    # Engram: orders 2..3, 2 heads each, rows 8 wide -> d_mem = 2 * 2 * 8 = 32.
    "engram_layer_ids": [0, 2],
    "engram_max_ngram_size": 3,
    "engram_n_heads": 2,
    "engram_head_dim": 8,
    "engram_vocab_size": [101, 103],
    "engram_pad_token_id": 0,
    "engram_seed": 0,
    "engram_kernel_size": 4,
    "hc_mult": 1,
}
BATCH, LENGTH = 2, 19
GATE_NORM_EPS = float(np.finfo(np.float32).eps)
CONV_NORM_EPS = 1e-5

# The storage dtype of each kind of tensor, so the loader's conversions are exercised too.
STORAGE = {"mlp": "BF16", "norm": "F16"}  # everything else F32


def storage_dtype(name):
    if ".mlp." in name:
        return STORAGE["mlp"]
    if name.endswith("layernorm.weight") or name == "model.norm.weight":
        return STORAGE["norm"]
    return "F32"


def round_to(t, dtype):
    """Rounds a float64 tensor to the storage dtype and back (what the C++ loader will see)."""
    if dtype == "BF16":
        return t.to(torch.float32).to(torch.bfloat16).to(torch.float64)
    if dtype == "F16":
        return t.to(torch.float32).to(torch.float16).to(torch.float64)
    return t.to(torch.float32).to(torch.float64)


def to_bytes(t, dtype):
    if dtype == "BF16":
        return t.to(torch.float32).to(torch.bfloat16).view(torch.int16).numpy().tobytes()
    if dtype == "F16":
        return t.to(torch.float32).to(torch.float16).numpy().tobytes()
    if dtype == "F32":
        return t.to(torch.float32).numpy().tobytes()
    if dtype == "I32":
        return t.to(torch.int32).numpy().tobytes()
    raise ValueError(dtype)


def write_safetensors(path, tensors, metadata=None):
    """tensors: list of (name, dtype, tensor). Minimal writer of the safetensors format."""
    header, blobs, offset = {}, [], 0
    for name, dtype, t in tensors:
        data = to_bytes(t, dtype)
        header[name] = {"dtype": dtype, "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    if metadata:
        header["__metadata__"] = metadata
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * ((8 - len(text) % 8) % 8)  # keeps the data 8-byte aligned
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for b in blobs:
            f.write(b)


def make_weights(gen):
    c = CONFIG
    H, I, V = c["hidden_size"], c["intermediate_size"], c["vocab_size"]
    Q, KV = c["num_attention_heads"] * c["head_dim"], c["num_key_value_heads"] * c["head_dim"]
    d_mem = (c["engram_max_ngram_size"] - 1) * c["engram_n_heads"] * c["engram_head_dim"]
    K = c["engram_kernel_size"]

    def normal(*shape, std):
        return torch.randn(*shape, generator=gen, dtype=torch.float64) * std

    def gain(n):  # RMSNorm gains near 1, not exactly 1, so they matter
        return 1.0 + normal(n, std=0.1)

    w = {"model.embed_tokens.weight": normal(V, H, std=1.0)}
    for i in range(c["num_hidden_layers"]):
        p = f"model.layers.{i}."
        w[p + "input_layernorm.weight"] = gain(H)
        w[p + "self_attn.q_proj.weight"] = normal(Q, H, std=0.3)
        w[p + "self_attn.k_proj.weight"] = normal(KV, H, std=0.3)
        w[p + "self_attn.v_proj.weight"] = normal(KV, H, std=0.3)
        w[p + "self_attn.o_proj.weight"] = normal(H, Q, std=0.3)
        # Biases (Qwen-style q/k/v, plus o): optional tensors the loader must pick up.
        w[p + "self_attn.q_proj.bias"] = normal(Q, std=0.1)
        w[p + "self_attn.k_proj.bias"] = normal(KV, std=0.1)
        w[p + "self_attn.v_proj.bias"] = normal(KV, std=0.1)
        w[p + "self_attn.o_proj.bias"] = normal(H, std=0.1)
        w[p + "post_attention_layernorm.weight"] = gain(H)
        w[p + "mlp.gate_proj.weight"] = normal(I, H, std=0.3)
        w[p + "mlp.up_proj.weight"] = normal(I, H, std=0.3)
        w[p + "mlp.down_proj.weight"] = normal(H, I, std=0.2)
        if i in c["engram_layer_ids"]:
            e = p + "engram."
            w[e + "value_proj.weight"] = normal(H, d_mem, std=0.3)
            w[e + "value_proj.bias"] = normal(H, std=0.1)
            w[e + "key_projs.0.weight"] = normal(H, d_mem, std=0.3)
            w[e + "key_projs.0.bias"] = normal(H, std=0.1)
            w[e + "norm1.0.weight"] = gain(H)
            w[e + "norm2.0.weight"] = gain(H)
            # Non-zero (the reference zero-initialises it) so the conv path is really checked.
            w[e + "short_conv.conv.weight"] = normal(H, 1, K, std=0.5)
            w[e + "short_conv.norms.0.weight"] = gain(H)
    w["model.norm.weight"] = gain(H)
    w["lm_head.weight"] = normal(V, H, std=0.3)
    return {name: round_to(t, storage_dtype(name)) for name, t in w.items()}


# ---- The reference forward (float64) -------------------------------------------------------------

def rms_norm(x, weight, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight


def rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def rope(x, positions, theta):
    # x: [B, heads, L, D]
    D = x.shape[-1]
    inv_freq = 1.0 / (theta ** (torch.arange(0, D, 2, dtype=torch.float64) / D))
    freqs = torch.outer(positions.to(torch.float64), inv_freq)
    emb = torch.cat((freqs, freqs), dim=-1)
    return x * emb.cos() + rotate_half(x) * emb.sin()


def attention(w, p, x):
    c = CONFIG
    B, L, _ = x.shape
    nq, nkv, D = c["num_attention_heads"], c["num_key_value_heads"], c["head_dim"]
    q = (x @ w[p + "q_proj.weight"].T + w[p + "q_proj.bias"]).view(B, L, nq, D).transpose(1, 2)
    k = (x @ w[p + "k_proj.weight"].T + w[p + "k_proj.bias"]).view(B, L, nkv, D).transpose(1, 2)
    v = (x @ w[p + "v_proj.weight"].T + w[p + "v_proj.bias"]).view(B, L, nkv, D).transpose(1, 2)
    pos = torch.arange(L)
    q, k = rope(q, pos, c["rope_theta"]), rope(k, pos, c["rope_theta"])
    k = k.repeat_interleave(nq // nkv, dim=1)  # repeat_kv
    v = v.repeat_interleave(nq // nkv, dim=1)
    scores = q @ k.transpose(-1, -2) / math.sqrt(D)
    mask = torch.triu(torch.ones(L, L, dtype=torch.bool), diagonal=1)
    scores = scores.masked_fill(mask, float("-inf"))
    out = torch.softmax(scores, dim=-1) @ v
    out = out.transpose(1, 2).reshape(B, L, nq * D)
    return out @ w[p + "o_proj.weight"].T + w[p + "o_proj.bias"]


def mlp(w, p, x):
    gate = x @ w[p + "gate_proj.weight"].T
    up = x @ w[p + "up_proj.weight"].T
    return (torch.nn.functional.silu(gate) * up) @ w[p + "down_proj.weight"].T


def engram(w, e, hidden, rows):
    """The demo's Engram.forward with hc_mult = 1; hidden [B, L, 1, H], rows [B, L, d_mem]."""
    H = CONFIG["hidden_size"]
    key = rows @ w[e + "key_projs.0.weight"].T + w[e + "key_projs.0.bias"]
    normed_key = rms_norm(key, w[e + "norm1.0.weight"], GATE_NORM_EPS)
    normed_query = rms_norm(hidden[:, :, 0, :], w[e + "norm2.0.weight"], GATE_NORM_EPS)
    gate = (normed_key * normed_query).sum(dim=-1) / math.sqrt(H)
    gate = gate.abs().clamp_min(1e-6).sqrt() * gate.sign()
    gate = gate.sigmoid().unsqueeze(-1)
    gates = torch.stack([gate], dim=2)                                       # [B, L, 1, 1]
    value = gates * (rows @ w[e + "value_proj.weight"].T + w[e + "value_proj.bias"]).unsqueeze(2)
    return value + short_conv(w, e + "short_conv.", value)


def short_conv(w, p, x):
    """The demo's ShortConv: x [B, L, G, C] -> [B, L, G, C]."""
    B, T, G, C = x.shape
    K = CONFIG["engram_kernel_size"]
    dilation = CONFIG["engram_max_ngram_size"]
    x_norm = torch.cat([rms_norm(x[:, :, i, :], w[p + f"norms.{i}.weight"], CONV_NORM_EPS)
                        for i in range(G)], dim=-1)
    y = torch.nn.functional.conv1d(x_norm.transpose(1, 2), w[p + "conv.weight"], bias=None,
                                   padding=(K - 1) * dilation, dilation=dilation, groups=G * C)
    y = torch.nn.functional.silu(y[..., :T])
    return y.transpose(1, 2).reshape(B, T, G, C)


def forward(w, input_ids, engram_rows):
    c = CONFIG
    h = w["model.embed_tokens.weight"][input_ids]                           # [B, L, H]
    for i in range(c["num_hidden_layers"]):
        p = f"model.layers.{i}."
        if i in c["engram_layer_ids"]:
            li = c["engram_layer_ids"].index(i)
            h = h + engram(w, p + "engram.", h.unsqueeze(2), engram_rows[li])[:, :, 0, :]
        h = h + attention(w, p + "self_attn.", rms_norm(h, w[p + "input_layernorm.weight"], c["rms_norm_eps"]))
        h = h + mlp(w, p + "mlp.", rms_norm(h, w[p + "post_attention_layernorm.weight"], c["rms_norm_eps"]))
    h = rms_norm(h, w["model.norm.weight"], c["rms_norm_eps"])
    return h @ w["lm_head.weight"].T                                         # [B, L, V]


# ---- The same forward with the CUDA backbone's bf16 roundings --------------------------------------

def bf16(t):
    return t.to(torch.float32).to(torch.bfloat16).to(torch.float64)


BF16_MATRICES = ("proj.weight", "key_projs.0.weight", "model.embed_tokens.weight", "lm_head.weight")


def attention_bf16(w, p, x):
    c = CONFIG
    B, L, _ = x.shape
    nq, nkv, D = c["num_attention_heads"], c["num_key_value_heads"], c["head_dim"]
    x = bf16(x)
    q = (x @ w[p + "q_proj.weight"].T + w[p + "q_proj.bias"]).view(B, L, nq, D).transpose(1, 2)
    k = (x @ w[p + "k_proj.weight"].T + w[p + "k_proj.bias"]).view(B, L, nkv, D).transpose(1, 2)
    v = (x @ w[p + "v_proj.weight"].T + w[p + "v_proj.bias"]).view(B, L, nkv, D).transpose(1, 2)
    pos = torch.arange(L)
    q, k, v = bf16(rope(q, pos, c["rope_theta"])), bf16(rope(k, pos, c["rope_theta"])), bf16(v)
    k = k.repeat_interleave(nq // nkv, dim=1)
    v = v.repeat_interleave(nq // nkv, dim=1)
    scores = q @ k.transpose(-1, -2) / math.sqrt(D)
    mask = torch.triu(torch.ones(L, L, dtype=torch.bool), diagonal=1)
    scores = scores.masked_fill(mask, float("-inf"))
    out = bf16((torch.softmax(scores, dim=-1) @ v).transpose(1, 2).reshape(B, L, nq * D))
    return out @ w[p + "o_proj.weight"].T + w[p + "o_proj.bias"]


def mlp_bf16(w, p, x):
    x = bf16(x)
    act = bf16(torch.nn.functional.silu(x @ w[p + "gate_proj.weight"].T) * (x @ w[p + "up_proj.weight"].T))
    return act @ w[p + "down_proj.weight"].T


def forward_bf16(w, input_ids, engram_rows):
    c = CONFIG
    w = {k: bf16(t) if k.endswith(BF16_MATRICES) else t for k, t in w.items()}
    h = w["model.embed_tokens.weight"][input_ids]
    for i in range(c["num_hidden_layers"]):
        p = f"model.layers.{i}."
        if i in c["engram_layer_ids"]:
            li = c["engram_layer_ids"].index(i)
            h = h + engram(w, p + "engram.", h.unsqueeze(2), bf16(engram_rows[li]))[:, :, 0, :]
        h = h + attention_bf16(w, p + "self_attn.", rms_norm(h, w[p + "input_layernorm.weight"], c["rms_norm_eps"]))
        h = h + mlp_bf16(w, p + "mlp.", rms_norm(h, w[p + "post_attention_layernorm.weight"], c["rms_norm_eps"]))
    h = bf16(rms_norm(h, w["model.norm.weight"], c["rms_norm_eps"]))
    return h @ w["lm_head.weight"].T


def main():
    gen = torch.Generator().manual_seed(20260104)
    w = make_weights(gen)
    c = CONFIG
    d_mem = (c["engram_max_ngram_size"] - 1) * c["engram_n_heads"] * c["engram_head_dim"]
    input_ids = torch.randint(0, c["vocab_size"], (BATCH, LENGTH), generator=gen)
    # Rows as the memory tier would deliver them (bf16 tables, decoded to f32).
    rows = [round_to(torch.randn(BATCH, LENGTH, d_mem, generator=gen, dtype=torch.float64), "BF16")
            for _ in c["engram_layer_ids"]]
    with torch.no_grad():
        logits = forward(w, input_ids, rows)
        logits_bf16 = forward_bf16(w, input_ids, rows)

    model_dir = os.path.join(HERE, "model")
    os.makedirs(model_dir, exist_ok=True)
    with open(os.path.join(model_dir, "config.json"), "w") as f:
        json.dump(CONFIG, f, indent=2)
        f.write("\n")
    write_safetensors(os.path.join(model_dir, "model.safetensors"),
                      [(name, storage_dtype(name), t) for name, t in w.items()],
                      {"format": "pt", "generator": "tests/golden/backbone/make_golden.py"})
    golden = [("input_ids", "I32", input_ids)]
    golden += [(f"engram_rows.{li}", "F32", r) for li, r in enumerate(rows)]
    golden += [("logits", "F32", logits), ("logits_bf16", "F32", logits_bf16)]
    write_safetensors(os.path.join(HERE, "golden.safetensors"), golden,
                      {"torch": torch.__version__, "reference": "float64"})
    print("logits range", float(logits.min()), float(logits.max()), "std", float(logits.std()))
    print("bf16 emulation: largest |logits_bf16 - logits| %.4f" % float((logits_bf16 - logits).abs().max()))


if __name__ == "__main__":
    main()
