"""Adaptive softmax (Grave et al. 2017) on the WikiText-2 vocabulary: training speed and perplexity at equal tokens.

hwlm's 2x200 LSTM with ``adaptive_softmax_cutoffs=[2000, 10000]`` (untied; ids ordered by decreasing frequency,
as the bench's dict encoding does) against the full-softmax pytorch/examples reference of the same size. Both are
trained from scratch on the same WikiText-2 training stream for the same token budget (default 200,000 tokens),
in interleaved chunks of steps, so the training itself gives the throughput figures (median over chunks, ratio
hwlm/reference: target >= 2x). Both use SGD lr 20, clip 0.25 (the classic example's settings). Afterwards
each is evaluated on the validation split (first ``--eval_tokens`` tokens; hwlm through ``evaluate_perplexity``,
the reference through the classic ``evaluate()``): target hwlm perplexity within 5% of the reference's.

    python bench/bench_adaptive.py [--quick] [--budget 200000]
"""

from __future__ import annotations

import argparse

import torch

from bench_eval import classic_evaluate
from bench_train import hwlm_model, hwlm_trainer, reference_model, reference_trainer, sizes_for
from common import add_common_args, encode_corpus, markdown_table, paired_rates, setup, write_result
from hwlm.evaluation import evaluate_perplexity


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_common_args(parser)
    parser.add_argument("--budget", type=int, default=None, help="training tokens per side (default 200,000)")
    parser.add_argument("--eval_tokens", type=int, default=None, help="validation tokens (default 50,000)")
    parser.add_argument("--cutoffs", type=int, nargs="+", default=None, help="default 2000 10000")
    args = parser.parse_args(argv)
    setup(args)
    s = sizes_for(args)
    cutoffs = args.cutoffs or ([20, 50] if args.tiny else [2000, 10000])
    tokens_per_step = s["batch"] * s["bptt"]
    steps = 1 if args.quick else 10
    budget = args.budget or ((2 if args.tiny else 4) * tokens_per_step * steps if args.quick else 200_000)
    rounds = max(budget // (tokens_per_step * steps), 1)
    eval_tokens = args.eval_tokens or ((300 if args.tiny else 2_000) if args.quick else 50_000)
    data = encode_corpus("wikitext-2", random_tokens=args.quick, vocab_size=100 if args.tiny else None,
                         max_tokens=50_000 if args.quick else None)
    torch.manual_seed(0)
    ours = hwlm_model("lstm", data["vocab_size"], s, adaptive_softmax_cutoffs=cutoffs, tie_word_embeddings=False)
    torch.manual_seed(0)
    ref = reference_model("lstm", data["vocab_size"], s)
    m = paired_rates({"hwlm adaptive": hwlm_trainer(ours, data["train"], s, steps),
                      "reference full": reference_trainer(ref, "lstm", data["train"], s, steps)},
                     rounds=rounds, warmup=0)
    trained = rounds * steps * tokens_per_step
    valid = data["valid"][:eval_tokens]
    ppl = {"hwlm adaptive": evaluate_perplexity(ours, valid, batch_size=10, bptt=35)["perplexity"],
           "reference full": classic_evaluate(ref, valid)["perplexity"]}
    gap = ppl["hwlm adaptive"] / ppl["reference full"] - 1.0
    rows = [[name, m[name]["median"], f"{m['ratio']:.2f}x" if name.startswith("hwlm") else "1.00x", ppl[name],
             m[name]["rss_growth_mb"], sum(p.numel() for p in model.parameters())]
            for name, model in (("hwlm adaptive", ours), ("reference full", ref))]
    table = markdown_table(["model", "train tok/s", "speed vs ref (>= 2x)", "valid ppl", "RSS growth MB",
                            "parameters"], rows)
    header = (f"Adaptive softmax (cutoffs {cutoffs}) vs full softmax, {s['layers']}x{s['hidden']} LSTM, "
              f"V={data['vocab_size']:,} ({data['source']}); both trained on the same {trained:,} tokens "
              f"(SGD lr 20, clip 0.25), throughput = median over {rounds} interleaved chunks of {steps} steps; "
              f"valid ppl on {valid.numel():,} tokens: hwlm {gap:+.1%} vs reference (target within 5%)")
    print(header + "\n\n" + table)
    out = {"benchmark": "adaptive", "header": header, "table": table, "cutoffs": cutoffs, "tokens_trained": trained,
           "valid_tokens": int(valid.numel()), "perplexity": ppl, "perplexity_gap": gap, "throughput": m,
           "source": data["source"]}
    print(f"\nwrote {write_result('bench_adaptive', out, args.quick, args.out_dir)}")
    return out


if __name__ == "__main__":
    main()
