#!/usr/bin/env python3
"""Writes the committed seed corpora of tests/fuzz (corpus/<target>/). Run from anywhere:
    python3 tests/fuzz/make_seeds.py
Protobuf seeds are encoded with `protoc --encode` from the repository's .proto files. The row-file
seed is written by the row_file_fuzz binary itself (ENGRAM_FUZZ_WRITE_SEED, see its header).
Seeds are small on purpose: libFuzzer runs faster on small inputs, and it grows its own corpus."""
import json
import os
import struct
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "tests", "fuzz", "corpus")


def put(target, name, data):
    d = os.path.join(OUT, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def compact(obj):
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


# ---- tokenizer.json: a small byte-level BPE cut from the demo model's tokenizer ------------------
demo = json.load(open(os.path.join(ROOT, "models", "demo-cpu", "tokenizer.json")))
vocab = {t: i for t, i in demo["model"]["vocab"].items() if i < 300}
merges = []
for m in demo["model"]["merges"]:
    a, b = m.split(" ", 1) if isinstance(m, str) else m
    if a in vocab and b in vocab and a + b in vocab:
        merges.append(f"{a} {b}")
eot = {"id": 300, "content": "<|endoftext|>", "single_word": False, "lstrip": False,
       "rstrip": False, "normalized": False, "special": True}
byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
base = {"version": "1.0", "truncation": None, "padding": None, "added_tokens": [eot],
        "normalizer": None, "pre_tokenizer": byte_level, "post_processor": byte_level,
        "decoder": byte_level,
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": "",
                  "end_of_word_suffix": "", "fuse_unk": False, "byte_fallback": False,
                  "vocab": vocab, "merges": merges}}
put("tokenizer_json_fuzz", "bytelevel", compact(base))
put("tokenizer_json_fuzz", "bytelevel_text", compact(base) + "\0" + "Once upon a time, <|endoftext|> caf\u00e9 42!")

split = dict(base)
split["normalizer"] = {"type": "Sequence", "normalizers": [{"type": "NFC"}, {"type": "Lowercase"}]}
split["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [
    {"type": "Split", "pattern": {"Regex": "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"},
     "behavior": "Isolated", "invert": False},
    {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]}
split["post_processor"] = {"type": "TemplateProcessing",
                           "single": [{"SpecialToken": {"id": "<|endoftext|>", "type_id": 0}},
                                      {"Sequence": {"id": "A", "type_id": 0}}],
                           "pair": [{"Sequence": {"id": "A", "type_id": 0}},
                                    {"Sequence": {"id": "B", "type_id": 1}}],
                           "special_tokens": {"<|endoftext|>": {"id": "<|endoftext|>", "ids": [300],
                                                                "tokens": ["<|endoftext|>"]}}}
put("tokenizer_json_fuzz", "split_template", compact(split) + "\0" + "It's 2026 \u00c9T\u00c9\r\n  x")

strip = dict(base)
strip["normalizer"] = {"type": "Sequence", "normalizers": [
    {"type": "NFD"}, {"type": "StripAccents"}, {"type": "Strip", "strip_left": True, "strip_right": True},
    {"type": "Replace", "pattern": {"String": "  "}, "content": " "},
    {"type": "Prepend", "prepend": "\u2581"}]}
strip["pre_tokenizer"] = {"type": "Split", "pattern": {"String": " "}, "behavior": "MergedWithPrevious",
                          "invert": False}
strip["post_processor"] = {"type": "RobertaProcessing", "sep": ["<|endoftext|>", 300],
                           "cls": ["<|endoftext|>", 300], "trim_offsets": True, "add_prefix_space": False}
put("tokenizer_json_fuzz", "normalizers_roberta", compact(strip) + "\0" + " na\u00efve  r\u00e9sum\u00e9 ")

# ---- safetensors: the writer's layout (8-byte little-endian header length, JSON, data) ----------
def safetensors(tensors, metadata=None):
    header, data = {}, b""
    if metadata is not None:
        header["__metadata__"] = metadata
    for name, (dtype, shape, payload) in tensors.items():
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(payload)]}
        data += payload
    h = compact(header).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + data

put("safetensors_fuzz", "f32_bf16", safetensors({
    "model.embed_tokens.weight": ("F32", [2, 3], struct.pack("<6f", 1, -2, 0.5, 3, 4, 1e-3)),
    "model.layers.1.engram.multi_head_embedding.embedding.weight": ("BF16", [2, 2], struct.pack("<4H", 0x3f80, 0xbf80, 0x7f80, 0x0001)),
}, {"format": "pt"}))
put("safetensors_fuzz", "fp8_scales", safetensors({
    "w": ("F8_E4M3", [1, 32], bytes(range(32))),
    "w.scale": ("F8_E8M0", [1, 1], b"\x7f"),
    "f16": ("F16", [3], struct.pack("<3H", 0x3c00, 0x7c00, 0x0400)),
    "i64": ("I64", [1], struct.pack("<q", -5)),
}))
put("safetensors_fuzz", "empty_tensor", safetensors({"e": ("F32", [0, 4], b"")}))

# ---- config.json (+ engram_constants.json) -------------------------------------------------------
cfg = json.load(open(os.path.join(ROOT, "models", "demo-cpu", "config.json")))
put("model_config_fuzz", "demo_cpu", compact(cfg))
small = {"model_name": "tiny", "vocab_size": 64, "hidden_size": 16, "intermediate_size": 40,
         "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 8,
         "rms_norm_eps": 1e-6, "rope_theta": 10000.0, "max_position_embeddings": 128,
         "tie_word_embeddings": True, "bos_token_id": 1, "eos_token_id": [2, 3],
         "torch_dtype": "bfloat16", "hidden_act": "silu", "rope_scaling": None,
         "engram_layer_ids": [1], "engram_max_ngram_size": 3, "engram_n_heads": 2,
         "engram_head_dim": 8, "engram_vocab_size": [101, 103], "engram_pad_token_id": 0,
         "engram_seed": 7, "engram_kernel_size": 4, "hc_mult": 1}
constants = {"format": "engram-constants/v1", "max_ngram_size": 3, "n_heads": 2, "compressed_vocab_size": 60,
             "pad_token_id": 0, "compressed_pad_id": 0, "token_map": list(range(60)) + [0, 1, 2, 3],
             "layers": [{"layer_id": 1, "multipliers": [3, 5, 7], "primes": [101, 103, 107, 109],
                         "offsets": [0, 101, 204, 311], "rows": 420}]}
put("model_config_fuzz", "tiny_engram", compact(small) + "\0" + compact(constants))
put("model_config_fuzz", "no_engram", compact({k: v for k, v in small.items() if not k.startswith("engram")}))

# ---- worker gRPC requests: METHOD_BYTE (0 Generate, 1 Tokenize, 2 Abort) + protobuf ------------
def encode(proto, message, text):
    return subprocess.run(["protoc", "-I", os.path.join(ROOT, "proto"), f"--encode=engram.v1.{message}",
                           os.path.join(ROOT, "proto", "engram", "v1", proto)],
                          input=text.encode(), capture_output=True, check=True).stdout

gen = lambda text: b"\x00" + encode("inference.proto", "GenerateRequest", text)
put("worker_request_fuzz", "generate_text", gen(
    'request_id: "r1" text: "Once upon a time" sampling { temperature: 0.7 top_k: 40 top_p: 0.9 seed: 1 } '
    'stopping { max_tokens: 16 stop: "\\n\\n" stop_token_ids: 0 }'))
put("worker_request_fuzz", "generate_ids", gen(
    'token_ids { ids: [1, 2, 3, 40, 500] } stopping { max_tokens: 4 ignore_eos: true } skip_special_tokens: true'))
put("worker_request_fuzz", "tokenize", b"\x01" + encode("inference.proto", "TokenizeRequest",
                                                      'text: "Hello <|endoftext|> world" add_special_tokens: true'))
put("worker_request_fuzz", "abort", b"\x02" + encode("inference.proto", "AbortRequest", 'request_id: "r1"'))

# ---- OpenAI HTTP bodies: ENDPOINT_BYTE (even completions, odd chat) + JSON ----------------------
put("openai_request_fuzz", "completion", b"\x00" + compact({
    "model": "demo-cpu", "prompt": "Once upon a time", "max_tokens": 16, "temperature": 0.5,
    "top_p": 0.9, "seed": 3, "stop": ["\n", "The"], "stream": True,
    "stream_options": {"include_usage": True}}).encode())
put("openai_request_fuzz", "completion_ids", b"\x00" + compact({
    "prompt": [1, 2, 3], "max_tokens": 2, "n": 1, "logprobs": None}).encode())
put("openai_request_fuzz", "chat", b"\x01" + compact({
    "model": "demo-cpu", "messages": [{"role": "system", "content": "Be brief."},
                                      {"role": "user", "content": "Hello"}],
    "max_completion_tokens": 8, "temperature": 0, "stop": "\n"}).encode())

# ---- tier requests: METHOD_BYTE (0 Lookup, 1 Prefetch, 2 TableInfo, 3 Stats) + protobuf ---------
tier = lambda m, text: encode("memory_tier.proto", m, text)
put("tier_request_fuzz", "lookup", b"\x00" + tier("LookupRequest",
    'table { model: "fuzzmodel" layer: 1 } row_ids: [0, 5, 400, 5]'))
put("tier_request_fuzz", "lookup_layer3", b"\x00" + tier("LookupRequest",
    'table { model: "fuzzmodel" layer: 3 version: 1 } row_ids: [7, 8, 9, 500, 1]'))
put("tier_request_fuzz", "prefetch", b"\x01" + tier("PrefetchRequest",
    'batch_id: 1 table { model: "fuzzmodel" layer: 3 } sequence_id: 2 step: 3 row_ids: [1, 2, 3] '
    'arena_hits: [4, 4, 5] arena_hits_table { model: "fuzzmodel" layer: 1 }'))
put("tier_request_fuzz", "tableinfo", b"\x02" + tier("TableInfoRequest", 'model: "fuzzmodel"'))
put("tier_request_fuzz", "stats", b"\x03" + tier("StatsRequest", "top_rows: 10"))
