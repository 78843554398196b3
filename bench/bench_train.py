"""Training throughput: hwlm's LSTM, tanh RNN and Transformer against a plain PyTorch reference, side by side.

What is timed is one optimiser step per window (forward + backward + gradient clipping + SGD step), in tokens/s,
for each family at the classic word-language-model size (2 layers, 200 units, bptt 35, batch 20) and at two
vocabulary sizes: PTB (10k) and WikiText-2 (33k), on the real corpora when they are present.

- hwlm: the real model (``AutoModelForCausalLM.from_config(AutoConfig.for_model("hwlm_lstm", ...))``) fed by
  hwlm's own ``StreamLoader`` windows, ``model(input_ids=x, shift_labels=y, cache=state, use_cache=True)`` and
  ``outputs.cache.detach()``, as ``hwlm.training.loop`` gets them from ``StreamWindow.model_inputs`` and ``carry``
  (the Transformer reads the same windows without a cache, like the classic example's Transformer).
- the Transformer with segment memory (``memory_length`` = bptt, ALiBi) against hwlm's plain Transformer on the same
  windows: what carrying the memory costs.
- reference: pytorch/examples ``word_language_model`` (``batchify``/``get_batch``, ``nn.Embedding`` +
  multi-layer ``nn.LSTM``/``nn.RNN`` + ``nn.Linear``, ``log_softmax`` + ``nll_loss``, ``repackage_hidden``); for
  the Transformer a pre-LN ``nn.TransformerEncoder`` with a causal mask, the same width, heads and feed-forward.

Both use ``torch.optim.SGD(lr=20)`` and ``clip_grad_norm_(0.25)``. Rounds alternate the order of the sides; the
table reports median tokens/s, the median per-round ratio hwlm/reference (target >= 1.0) and each side's peak
RSS growth during its timed steps.

    python bench/bench_train.py            # both vocabularies, real text, 8 rounds of 6 steps
    python bench/bench_train.py --quick    # random tokens, 2 rounds of 1 step
"""

from __future__ import annotations

import argparse
import itertools

import torch
from torch import nn

from common import (CORPORA, ReferenceRNNModel, ReferenceTransformerModel, add_common_args, batchify, encode_corpus,
                    get_batch, markdown_table, paired_rates, repackage_hidden, setup, write_result)

import hwlm  # noqa: F401  registers the model types
from hwlm.batching import StreamLoader
from hwlm.model_building import supports_state_carrying
from transformers import AutoConfig, AutoModelForCausalLM

FAMILIES = ("lstm", "rnn", "transformer", "transformer_memory")
# The segment-memory Transformer is compared with hwlm's plain Transformer at the same window: what the memory costs.
AGAINST_PLAIN = {"transformer_memory"}
LR, CLIP = 20.0, 0.25


def sizes_for(args) -> dict:
    if args.tiny:
        return {"hidden": 16, "layers": 2, "bptt": 8, "batch": 4, "heads": 2}
    return {"hidden": 200, "layers": 2, "bptt": 35, "batch": 20, "heads": 4}


def hwlm_model(family: str, vocab_size: int, s: dict, **extra):
    """The hwlm model of ``family`` at sizes ``s``, built through the Auto classes."""
    if family.startswith("transformer"):
        kw = {"num_attention_heads": s["heads"], "intermediate_size": 4 * s["hidden"],
              "max_position_embeddings": max(64, s["bptt"]), "hidden_act": "gelu"}
        if family == "transformer_memory":  # a memory of one window, carried across windows like a state
            kw.update(position_embedding_type="alibi", memory_length=s["bptt"])
        model_type = "hwlm_transformer"
    else:
        kw = {} if family == "lstm" else {"cell_type": "tanh"}
        model_type = "hwlm_lstm" if family == "lstm" else "hwlm_rnn"
    config = AutoConfig.for_model(model_type, vocab_size=vocab_size, hidden_size=s["hidden"],
                                  num_hidden_layers=s["layers"], **{**kw, **extra})
    return AutoModelForCausalLM.from_config(config)


def reference_model(family: str, vocab_size: int, s: dict) -> nn.Module:
    if family == "transformer":
        return ReferenceTransformerModel(vocab_size, s["hidden"], s["heads"], 4 * s["hidden"], s["layers"],
                                         max(64, s["bptt"]))
    return ReferenceRNNModel("LSTM" if family == "lstm" else "RNN_TANH", vocab_size, s["hidden"], s["hidden"],
                             s["layers"])


def hwlm_trainer(model, tokens: torch.Tensor, s: dict, steps: int, lr: float = LR, clip: float = CLIP):
    """A callable running ``steps`` hwlm training steps on the next windows of an endless stream; returns tokens."""
    loader = StreamLoader(tokens, batch_size=s["batch"], bptt=s["bptt"])
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    carries = supports_state_carrying(model)
    state = {"windows": iter(()), "cache": None}
    model.train()

    def next_window():
        window = next(state["windows"], None)
        if window is None or window.input_ids.size(1) < s["bptt"]:  # new epoch: restart the streams
            state["windows"], state["cache"] = iter(loader), None
            window = next(state["windows"])
        return window

    def run() -> int:
        n = 0
        for _ in range(steps):
            window = next_window()
            if carries:
                outputs = model(input_ids=window.input_ids, shift_labels=window.shift_labels, cache=state["cache"],
                                use_cache=True)
                state["cache"] = outputs.cache.detach()  # truncated BPTT
            else:
                outputs = model(input_ids=window.input_ids, shift_labels=window.shift_labels, use_cache=False)
            optimizer.zero_grad(set_to_none=True)
            outputs.loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
            optimizer.step()
            n += window.input_ids.numel()
        return n

    return run


def reference_trainer(model, family: str, tokens: torch.Tensor, s: dict, steps: int, lr: float = LR,
                      clip: float = CLIP):
    """The classic loop: batchify once, get_batch per step, repackage_hidden, NLL of log_softmax."""
    source = batchify(tokens, s["batch"])  # (N/B, B)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    criterion = nn.NLLLoss() if family != "transformer" else nn.CrossEntropyLoss()
    starts = itertools.cycle(range(0, source.size(0) - 1 - s["bptt"], s["bptt"]))
    state = {"hidden": None}
    model.train()

    def run() -> int:
        n = 0
        for _ in range(steps):
            i = next(starts)
            if i == 0:
                state["hidden"] = None
            data, targets = get_batch(source, i, s["bptt"])  # (T, B), (T*B,)
            optimizer.zero_grad(set_to_none=True)
            if family == "transformer":
                logits = model(data.t())  # (B, T, V)
                loss = criterion(logits.reshape(-1, logits.size(-1)), targets.view(data.size(0), -1).t().reshape(-1))
            else:
                hidden = state["hidden"] if state["hidden"] is not None else model.init_hidden(s["batch"])
                output, hidden = model(data, hidden)
                state["hidden"] = repackage_hidden(hidden)
                loss = criterion(output, targets)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
            optimizer.step()
            n += data.numel()
        return n

    return run


def num_params(model) -> int:
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_common_args(parser)
    parser.add_argument("--corpora", nargs="+", default=list(CORPORA), choices=list(CORPORA))
    parser.add_argument("--families", nargs="+", default=list(FAMILIES), choices=list(FAMILIES))
    parser.add_argument("--steps", type=int, default=None, help="training steps per side per round")
    args = parser.parse_args(argv)
    setup(args)
    s = sizes_for(args)
    steps = args.steps or (1 if args.tiny or args.quick else 6)
    rounds = args.rounds or (1 if args.tiny else 2 if args.quick else 8)
    rows, results = [], []
    for corpus in args.corpora:
        vocab = 100 if args.tiny else None
        data = encode_corpus(corpus, random_tokens=args.quick, vocab_size=vocab,
                             max_tokens=(2_000 if args.tiny else 50_000) if args.quick else None)
        for family in args.families:
            torch.manual_seed(0)
            ours = hwlm_model(family, data["vocab_size"], s)
            if family in AGAINST_PLAIN:
                ref = hwlm_model("transformer", data["vocab_size"], s)
                reference = hwlm_trainer(ref, data["train"], s, steps)
            else:
                ref = reference_model(family, data["vocab_size"], s)
                reference = reference_trainer(ref, family, data["train"], s, steps)
            sides = {"hwlm": hwlm_trainer(ours, data["train"], s, steps), "reference": reference}
            m = paired_rates(sides, rounds=rounds)
            results.append({"corpus": corpus, "family": family, "vocab_size": data["vocab_size"],
                            "source": data["source"], "sizes": s, "steps_per_round": steps, "rounds": rounds,
                            "params": {"hwlm": num_params(ours), "reference": num_params(ref)}, **m})
            label = "transformer + memory (reference: hwlm's plain transformer)" if family in AGAINST_PLAIN else family
            rows.append([f"{label} / {corpus} (V={data['vocab_size']:,})", m["hwlm"]["median"],
                         m["reference"]["median"], f"{m['ratio']:.2f}x", m["hwlm"]["rss_growth_mb"],
                         m["reference"]["rss_growth_mb"]])
    table = markdown_table(["model / vocabulary", "hwlm tok/s", "reference tok/s", "hwlm/ref (>= 1.0)",
                            "hwlm RSS growth MB", "ref RSS growth MB"], rows)
    header = (f"Training throughput (forward+backward+clip+SGD), {s['layers']}x{s['hidden']}, bptt {s['bptt']}, "
              f"batch {s['batch']}; median of {rounds} interleaved rounds of {steps} steps; "
              f"{torch.get_num_threads()} thread(s); data: {', '.join(sorted({r['source'] for r in results})) or '-'}")
    print(header + "\n\n" + table)
    out = {"benchmark": "train", "header": header, "table": table, "rows": results}
    path = write_result("bench_train", out, args.quick, args.out_dir)
    print(f"\nwrote {path}")
    return out


if __name__ == "__main__":
    main()
