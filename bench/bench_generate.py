"""Generation: tokens/s of greedy ``generate()`` with the cache against full recomputation (``use_cache=False``).

For hwlm's LSTM the cache is the recurrent state (each new token costs one step); for the Transformer it is the
key/value cache (each new token attends to stored keys instead of re-running the prefix). Without the cache,
``generate()`` re-runs the model over the whole sequence for every new token. 200 new tokens from a 10-token
prompt, batch 1, the classic sizes (2 layers, 200 units), PTB vocabulary; both sides in one process,
interleaved. Targets: cache / no cache >= 10x for the LSTM, >= 3x for the Transformer.

    python bench/bench_generate.py [--quick]
"""

from __future__ import annotations

import argparse

import torch

from bench_gpt2 import generator
from bench_train import hwlm_model, sizes_for
from common import add_common_args, encode_corpus, markdown_table, paired_rates, setup, write_result

TARGETS = {"lstm": 10.0, "transformer": 3.0}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_common_args(parser)
    parser.add_argument("--new_tokens", type=int, default=None, help="generated tokens (default 200)")
    args = parser.parse_args(argv)
    setup(args)
    s = sizes_for(args)
    new = args.new_tokens or (8 if args.tiny else 200)
    rounds = args.rounds or (1 if args.tiny else 2 if args.quick else 4)
    data = encode_corpus("ptb", random_tokens=args.quick, vocab_size=100 if args.tiny else None,
                         max_tokens=5_000 if args.quick else None)
    prompt = data["valid"][:10].unsqueeze(0)  # (1, 10)
    rows, results = [], {}
    for family, target in TARGETS.items():
        torch.manual_seed(0)
        extra = {"max_position_embeddings": 256} if family == "transformer" else {}
        model = hwlm_model(family, data["vocab_size"], s, **extra)
        m = paired_rates({"cache": generator(model, prompt, new, use_cache=True),
                          "no cache": generator(model, prompt, new, use_cache=False)}, rounds=rounds)
        results[family] = m
        rows.append([family, m["cache"]["median"], m["no cache"]["median"], f"{m['ratio']:.1f}x", f">= {target:g}x",
                     "yes" if m["ratio"] >= target else "no", m["cache"]["rss_growth_mb"],
                     m["no cache"]["rss_growth_mb"]])
    table = markdown_table(["model", "cache tok/s", "no-cache tok/s", "speed-up", "target", "met",
                            "cache RSS growth MB", "no-cache RSS growth MB"], rows)
    header = (f"Greedy generate(), {new} new tokens after a 10-token prompt, batch 1, {s['layers']}x{s['hidden']}, "
              f"V={data['vocab_size']:,}; median of {rounds} interleaved rounds")
    print(header + "\n\n" + table)
    out = {"benchmark": "generate", "header": header, "table": table, "new_tokens": new, "results": results}
    print(f"\nwrote {write_result('bench_generate', out, args.quick, args.out_dir)}")
    return out


if __name__ == "__main__":
    main()
