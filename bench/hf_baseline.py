#!/usr/bin/env python3
"""Hugging Face transformers (PyTorch eager) on the same workload shape: the floor of
docs/benchmarks.md's throughput table.

Builds the model of DIR/config.json with random bf16 weights on the GPU (the values do not change
the speed), then generates for --sequences sequences of the throughput_bench workload (prompt ids
uniform in [0, 10000), prompt and output lengths U(100, 1024)) in left-padded batches of --batch,
sampling at temperature 0.6 with EOS ignored. A batch runs until its longest output; only each
sequence's own output length counts as output tokens, as the engines count them.

  python3 bench/hf_baseline.py --model DIR [--sequences 64] [--batch 64] [--seed 0]
"""
import argparse
import json
import random
import time

import torch
import transformers


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", required=True)
    p.add_argument("--sequences", type=int, default=64)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    with open(f"{a.model}/config.json") as f:
        cfg = json.load(f)
    config = transformers.LlamaConfig(
        vocab_size=cfg["vocab_size"], hidden_size=cfg["hidden_size"],
        intermediate_size=cfg["intermediate_size"], num_hidden_layers=cfg["num_hidden_layers"],
        num_attention_heads=cfg["num_attention_heads"],
        num_key_value_heads=cfg["num_key_value_heads"], head_dim=cfg["head_dim"],
        rms_norm_eps=cfg["rms_norm_eps"], rope_theta=cfg["rope_theta"],
        max_position_embeddings=cfg["max_position_embeddings"],
        tie_word_embeddings=cfg.get("tie_word_embeddings", False), pad_token_id=0)
    torch.manual_seed(a.seed)
    with torch.device("cuda"):
        model = transformers.LlamaForCausalLM(config).to(torch.bfloat16).eval()
    rng = random.Random(a.seed)
    work = [([rng.randint(0, 9999) for _ in range(rng.randint(100, 1024))], rng.randint(100, 1024))
            for _ in range(a.sequences)]
    total_out, start = 0, time.time()
    for b in range(0, len(work), a.batch):
        batch = work[b:b + a.batch]
        width = max(len(x) for x, _ in batch)
        ids = torch.zeros((len(batch), width), dtype=torch.long, device="cuda")
        mask = torch.zeros_like(ids)
        for i, (x, _) in enumerate(batch):
            ids[i, width - len(x):] = torch.tensor(x)
            mask[i, width - len(x):] = 1
        longest = max(n for _, n in batch)
        with torch.no_grad():
            model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=longest,
                           min_new_tokens=longest, do_sample=True, temperature=0.6, top_k=0,
                           top_p=1.0)
        torch.cuda.synchronize()
        total_out += sum(n for _, n in batch)
    seconds = time.time() - start
    print(f"hf transformers {transformers.__version__} eager, {torch.cuda.get_device_name()}: "
          f"{a.sequences} sequences in batches of {a.batch}, {total_out} output tokens in "
          f"{seconds:.2f} s: {total_out / seconds:.1f} output tok/s")
    print(f"RESULT hf_output_tok_s={total_out / seconds:.1f}")


if __name__ == "__main__":
    main()
