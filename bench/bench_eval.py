"""Evaluation: tokens/s of hwlm's perplexity evaluation against the classic ``evaluate()`` loop.

- hwlm: ``hwlm.evaluation.evaluate_perplexity`` (what ``hwlm-eval`` runs): the split as ``batch_size`` streams
  read in ``bptt`` windows through ``StreamLoader``, the state carried, summed loss per token;
- reference: pytorch/examples ``evaluate()``: ``batchify(valid, 10)``, ``get_batch``, ``repackage_hidden``,
  ``nll_loss`` of ``log_softmax``, under ``torch.no_grad()``.

The reference model is loaded with the hwlm model's weights (decoder bias zero), so both compute the same
function and the two perplexities must agree up to the streams' edges (hwlm also scores the remainder that
``batchify`` drops): the table shows both as a parity check. Both sides use batch 10 and bptt 35 on the
validation split (the first 80,000 tokens by default), untrained 2x200 LSTMs (the speed does not depend on the weights); interleaved rounds,
medians, ratio hwlm/reference (target >= 1.0).

    python bench/bench_eval.py [--quick]
"""

from __future__ import annotations

import argparse
import math

import torch

from bench_train import hwlm_model, reference_model, sizes_for
from common import (CORPORA, add_common_args, batchify, copy_hwlm_recurrent_into_reference, encode_corpus, get_batch,
                    markdown_table, paired_rates, repackage_hidden, setup, write_result)
from hwlm.evaluation import evaluate_perplexity

EVAL_BATCH, BPTT = 10, 35


def classic_evaluate(model, tokens: torch.Tensor, batch_size: int = EVAL_BATCH, bptt: int = BPTT) -> dict:
    """pytorch/examples ``evaluate()``, returning the summed loss over the scored tokens as a perplexity."""
    source = batchify(tokens, batch_size)  # (N/B, B)
    model.eval()
    total, count = 0.0, 0
    hidden = model.init_hidden(batch_size)
    with torch.no_grad():
        for i in range(0, source.size(0) - 1, bptt):
            data, targets = get_batch(source, i, bptt)  # (T, B), (T*B,)
            output, hidden = model(data, hidden)
            hidden = repackage_hidden(hidden)
            total += len(targets) * torch.nn.functional.nll_loss(output, targets).item()
            count += len(targets)
    return {"perplexity": math.exp(total / count), "num_tokens": count}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_common_args(parser)
    parser.add_argument("--corpora", nargs="+", default=list(CORPORA), choices=list(CORPORA))
    parser.add_argument("--max_tokens", type=int, default=None,
                        help="evaluate only the first N validation tokens (default 80,000: all of PTB's, 37%% of WikiText-2's, to keep a full run in minutes; quick: 3,000)")
    args = parser.parse_args(argv)
    setup(args)
    s = sizes_for(args)
    rounds = args.rounds or (1 if args.tiny else 2 if args.quick else 3)
    limit = args.max_tokens or ((500 if args.tiny else 3_000) if args.quick else 80_000)
    rows, results = [], []
    for corpus in args.corpora:
        data = encode_corpus(corpus, random_tokens=args.quick, vocab_size=100 if args.tiny else None,
                             max_tokens=4 * limit if args.quick else None)
        valid = data["valid"][:limit] if limit else data["valid"]
        torch.manual_seed(0)
        ours = hwlm_model("lstm", data["vocab_size"], s)
        ref = reference_model("lstm", data["vocab_size"], s)
        copy_hwlm_recurrent_into_reference(ours, ref)
        figures = {}

        def run_hwlm() -> int:
            figures["hwlm"] = evaluate_perplexity(ours, valid, batch_size=EVAL_BATCH, bptt=BPTT)
            return figures["hwlm"]["num_tokens"]

        def run_ref() -> int:
            figures["reference"] = classic_evaluate(ref, valid)
            return figures["reference"]["num_tokens"]

        m = paired_rates({"hwlm": run_hwlm, "reference": run_ref}, rounds=rounds, warmup=0)
        results.append({"corpus": corpus, "vocab_size": data["vocab_size"], "source": data["source"],
                        "valid_tokens": int(valid.numel()), "perplexity": figures, **m})
        rows.append([f"lstm / {corpus} valid ({valid.numel():,} tokens, V={data['vocab_size']:,})",
                     m["hwlm"]["median"], m["reference"]["median"], f"{m['ratio']:.2f}x",
                     f"{figures['hwlm']['perplexity']:.1f} / {figures['reference']['perplexity']:.1f}",
                     m["hwlm"]["rss_growth_mb"], m["reference"]["rss_growth_mb"]])
    table = markdown_table(["split", "hwlm tok/s", "classic evaluate() tok/s", "hwlm/ref (>= 1.0)",
                            "ppl hwlm / ref (same weights)", "hwlm RSS growth MB", "ref RSS growth MB"], rows)
    header = (f"Evaluation of an untrained {s['layers']}x{s['hidden']} LSTM, batch {EVAL_BATCH}, bptt {BPTT}, "
              f"state carried; median of {rounds} interleaved passes over the split")
    print(header + "\n\n" + table)
    out = {"benchmark": "eval", "header": header, "table": table, "rows": results}
    print(f"\nwrote {write_result('bench_eval', out, args.quick, args.out_dir)}")
    return out


if __name__ == "__main__":
    main()
