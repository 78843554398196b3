"""A small job end to end: hwlm's commands vs the upstream pytorch/examples ``word_language_model`` scripts.

The job (issue 20, item 3): start-up, tokenisation, training, evaluation and sampling of a 2-epoch 2x200 LSTM on a
1 MB raw text corpus, the way a user runs each side:

- **upstream**: ``python main.py --data D --model LSTM --emsize 200 --nhid 200 --epochs 2 --save model.pt`` then
  ``python generate.py --data D --checkpoint model.pt --words 1000`` (its defaults otherwise: lr 20 divided by 4 when
  validation does not improve, clip 0.25, bptt 35, batch 20, dropout 0.2, eval batch 10, seed 1111).
- **hwlm**: ``hwlm-train`` with the same recipe as flags (the same sizes, dropout rate, initial range, optimiser,
  schedule, clipping, batches and seed; a tokenizer trained on the train split; checkpoints, curves and a model card as always) then
  ``hwlm-generate --max_new_tokens 1000``, with an empty datasets cache, as on a user's first run.

Same tokens on both sides: the corpus is the first ``--corpus_mb`` MB of PTB's training text, with validation and
test lines (10% of the training lines each) taken from the text after it and their words unseen in training written
as ``<unk>`` (upstream builds its vocabulary over all three files, hwlm over the train split only; with this corpus
both vocabularies are the training words plus ``<eos>``). The two models are each program's own 2x200 LSTM, not
clones: hwlm's dropout is variational (one mask per sequence, AWD-LSTM style) where upstream's is per element,
hwlm's output layer has no bias, and each draws its weights in its own order. Test perplexities should agree within
1%; the table shows each side's spread over seeds beside the gap.

The upstream scripts are not part of hwlm: point ``--upstream`` (or ``$HWLM_UPSTREAM_WLM``) at a checkout's
``word_language_model`` folder (``git clone https://github.com/pytorch/examples``). They are copied to a scratch
folder and, where the installed torch needs it, patched for its API changes and nothing else: ``torch.load(f)`` ->
``torch.load(f, weights_only=False)`` (torch >= 2.6 refuses to unpickle the saved module by default). Without ``--upstream`` the
benchmark says where to get them and stops.

Both sides run ``--repeats`` times interleaved (upstream, hwlm, hwlm, upstream, ...), each a fresh process with the
same ``OMP_NUM_THREADS``; round r runs both with seed ``--seed`` + r. The ratio is the median of per-round ratios of
wall time (target <= 1.1); the perplexities are compared as medians over the seeds, beside each side's spread over
them (the two programs draw their initial weights and dropout masks differently, so one seed is one draw each).

    python bench/bench_small_job.py --upstream ~/examples/word_language_model            # 1 MB, 2 epochs, 5 rounds
    python bench/bench_small_job.py --upstream ... --tiny    # 30 kB, 1 epoch, 1 round (the tests)

Prints a Markdown table and writes JSON to bench/results/bench_small_job[_quick].json.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("HWLM_SHARED_DATA", REPO.parent / "shared" / "data"))
RESULTS = REPO / "bench" / "results"
UPSTREAM_FILES = ("main.py", "model.py", "data.py", "generate.py")

#: (what, old, new): API changes of torch the upstream files may predate; applied only where ``old`` occurs.
COMPAT_PATCHES = (
    ("torch.load's weights_only default (torch >= 2.6)", "torch.load(f)", "torch.load(f, weights_only=False)"),
)


def make_corpus(folder: Path, megabytes: float, *, heldout: float = 0.1, seed: int = 0) -> dict:
    """Write train.txt / valid.txt / test.txt into ``folder`` (see the module docstring) and describe them.

    Validation and test have ``heldout`` times as many lines as train each (PTB's own splits: ~8%).

    Uses PTB's training text when ``../shared/data`` has it, otherwise random words (Zipf-like), so the benchmark
    and its test run anywhere."""
    source = SHARED / "ptb" / "ptb.train.txt"
    if source.is_file():
        lines = source.read_text(encoding="utf-8").splitlines(keepends=True)
        origin = f"PTB train ({source.name})"
    else:
        rng = random.Random(seed)
        words = [f"w{i}" for i in range(2000)]
        weights = [1 / (i + 1) for i in range(len(words))]
        lines = [" " + " ".join(rng.choices(words, weights, k=rng.randint(5, 30))) + " \n" for _ in range(60_000)]
        origin = "random words (no ../shared/data/ptb)"
    budget, train = int(megabytes * 1e6), []
    for line in lines:
        if budget <= 0:
            break
        train.append(line)
        budget -= len(line.encode("utf-8"))
    rest, heldout_lines = lines[len(train):], max(50, int(heldout * len(train)))
    vocab = {w for line in train for w in line.split()}

    def heldout(part: list[str]) -> list[str]:
        return [" " + " ".join(w if w in vocab else "<unk>" for w in line.split()) + " \n" for line in part]

    splits = {"train": train, "valid": heldout(rest[:heldout_lines]),
              "test": heldout(rest[heldout_lines: 2 * heldout_lines])}
    folder.mkdir(parents=True, exist_ok=True)
    for name, part in splits.items():
        (folder / f"{name}.txt").write_text("".join(part), encoding="utf-8")
    return {"source": origin, "bytes": {n: (folder / f"{n}.txt").stat().st_size for n in splits},
            "words": {n: sum(len(line.split()) for line in part) for n, part in splits.items()},
            "vocabulary": len(vocab) + ("<unk>" not in vocab) + 1}


def install_upstream(upstream: Path, into: Path) -> list[str]:
    """Copy the upstream scripts into ``into`` with the compatibility patches; return the patches applied."""
    missing = [name for name in UPSTREAM_FILES if not (upstream / name).is_file()]
    if missing:
        raise SystemExit(f"--upstream {upstream} lacks {', '.join(missing)}: point it at the word_language_model "
                         "folder of a pytorch/examples checkout (git clone https://github.com/pytorch/examples).")
    into.mkdir(parents=True, exist_ok=True)
    applied = []
    for name in UPSTREAM_FILES:
        text = (upstream / name).read_text(encoding="utf-8")
        for what, old, new in COMPAT_PATCHES:
            if old in text:
                text = text.replace(old, new)
                applied.append(f"{name}: {what}")
        (into / name).write_text(text, encoding="utf-8")
    return applied


def hwlm_commands(data: Path, out: Path, *, epochs: int, words: int, seed: int) -> list[list[str]]:
    """hwlm-train with upstream's recipe, then hwlm-generate (console scripts of this interpreter's environment)."""
    bin_dir = Path(sys.executable).parent
    train = [str(bin_dir / "hwlm-train"), "--model_type", "hwlm_lstm",
             "--config_overrides", "embedding_size=200,hidden_size=200,num_hidden_layers=2,input_dropout=0.2,"
                                   "hidden_dropout=0.2,output_dropout=0.2,initializer_range=0.1",
             "--train_file", str(data / "train.txt"), "--validation_file", str(data / "valid.txt"),
             "--test_file", str(data / "test.txt"), "--batching", "streams", "--bptt", "35",
             "--per_device_train_batch_size", "20", "--per_device_eval_batch_size", "10", "--optimizer", "sgd",
             "--learning_rate", "20", "--lr_scheduler_type", "plateau", "--lr_decay_factor", "4",
             "--max_grad_norm", "0.25", "--num_train_epochs", str(epochs), "--seed", str(seed),
             "--disable_tqdm", "--output_dir", str(out)]
    generate = [str(bin_dir / "hwlm-generate"), "--model_name_or_path", str(out), "--max_new_tokens", str(words),
                "--seed", str(seed)]
    return [train, generate]


def upstream_commands(code: Path, data: Path, out: Path, *, epochs: int, words: int, seed: int) -> list[list[str]]:
    model = str(out / "model.pt")
    return [[sys.executable, str(code / "main.py"), "--data", str(data), "--model", "LSTM", "--emsize", "200",
             "--nhid", "200", "--epochs", str(epochs), "--seed", str(seed), "--save", model],
            [sys.executable, str(code / "generate.py"), "--data", str(data), "--checkpoint", model,
             "--words", str(words), "--seed", str(seed), "--outf", str(out / "generated.txt")]]


def run_side(commands: list[list[str]], env: dict, log: Path) -> dict:
    """Run the commands in turn; wall seconds of each and of all, console kept in ``log``."""
    seconds = []
    with open(log, "w") as f:
        for command in commands:
            f.write("$ " + " ".join(command) + "\n")
            f.flush()
            t0 = time.perf_counter()
            done = subprocess.run(command, env=env, stdout=f, stderr=subprocess.STDOUT)
            seconds.append(time.perf_counter() - t0)
            if done.returncode:
                raise SystemExit(f"{command[0]} failed (exit {done.returncode}); see {log}")
    return {"seconds": seconds, "total": sum(seconds)}


def upstream_test_ppl(log: Path) -> float:
    found = re.findall(r"test loss\s+([\d.]+)\s*\|\s*test ppl\s+([\d.]+)", log.read_text())
    if not found:
        raise SystemExit(f"no test perplexity in {log}")
    return float(found[-1][1])


def hwlm_test_ppl(out: Path) -> float:
    results = json.loads((out / "all_results.json").read_text())
    return float(results.get("test_perplexity") or math.exp(results["test_loss"]))


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--upstream", default=os.environ.get("HWLM_UPSTREAM_WLM"),
                        help="pytorch/examples' word_language_model folder (or $HWLM_UPSTREAM_WLM)")
    parser.add_argument("--corpus_mb", type=float, default=1.0, help="training text size (default 1 MB)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--words", type=int, default=1000, help="words to sample after training")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved rounds (default 5)")
    parser.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS for both sides (default 1)")
    parser.add_argument("--seed", type=int, default=1111, help="round r runs both sides with seed + r (default 1111)")
    parser.add_argument("--quick", action="store_true", help="0.2 MB, 1 epoch, 1 round")
    parser.add_argument("--tiny", action="store_true", help="30 kB, 1 epoch, 1 round, 50 words (the tests)")
    parser.add_argument("--out_dir", default=None, help="where the JSON goes (default bench/results)")
    args = parser.parse_args(argv)
    if args.tiny or args.quick:
        args.corpus_mb, args.epochs, args.repeats = (0.03 if args.tiny else 0.2), 1, 1
        args.words = 50 if args.tiny else args.words
    if not args.upstream:
        raise SystemExit("give --upstream <pytorch/examples checkout>/word_language_model (or set $HWLM_UPSTREAM_WLM): "
                         "this benchmark runs the upstream scripts beside hwlm and does not ship them.")
    work = Path(tempfile.mkdtemp(prefix="hwlm-small-job-"))
    try:
        corpus = make_corpus(work / "data", args.corpus_mb)
        patches = install_upstream(Path(args.upstream).expanduser(), work / "upstream")
        env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads),
                   HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
        rounds = []
        for r in range(args.repeats):
            order = ("upstream", "hwlm") if r % 2 == 0 else ("hwlm", "upstream")
            result = {}
            for side in order:
                out = work / f"{side}-{r}"
                out.mkdir()
                if side == "hwlm":
                    side_env = dict(env, HF_DATASETS_CACHE=str(out / "datasets-cache"))  # a first run: cold cache
                    commands = hwlm_commands(work / "data", out / "model", epochs=args.epochs, words=args.words,
                                             seed=args.seed + r)
                    timing = run_side(commands, side_env, out / "console.log")
                    timing["test_ppl"] = hwlm_test_ppl(out / "model")
                else:
                    commands = upstream_commands(work / "upstream", work / "data", out, epochs=args.epochs,
                                                 words=args.words, seed=args.seed + r)
                    timing = run_side(commands, env, out / "console.log")
                    timing["test_ppl"] = upstream_test_ppl(out / "console.log")
                result[side] = timing
                print(f"round {r + 1} {side}: {timing['total']:.1f} s "
                      f"({' + '.join(f'{s:.1f}' for s in timing['seconds'])}), test ppl {timing['test_ppl']:.2f}",
                      flush=True)
            result["ratio"] = result["hwlm"]["total"] / result["upstream"]["total"]
            rounds.append(result)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    def med(side: str, key: str, i: int | None = None) -> float:
        return statistics.median(r[side][key] if i is None else r[side][key][i] for r in rounds)

    ratio = statistics.median(r["ratio"] for r in rounds)
    ppl_gap = med("hwlm", "test_ppl") / med("upstream", "test_ppl") - 1

    def spread(side: str) -> float:  # how far apart the seeds of one side land, relative to their median
        values = [r[side]["test_ppl"] for r in rounds]
        return (max(values) - min(values)) / statistics.median(values)
    header = (f"Small job end to end: a 2x200 LSTM, {args.epochs} epoch(s) on {corpus['bytes']['train'] / 1e6:.2f} MB "
              f"of {corpus['source']} ({corpus['words']['train']:,} words, vocabulary {corpus['vocabulary']:,}), then "
              f"{args.words} sampled words; median of {len(rounds)} interleaved round(s), OMP_NUM_THREADS="
              f"{args.threads}; upstream patches: {', '.join(patches) or 'none'}")
    table = "\n".join([
        "| side | train + evaluate (s) | sample (s) | total (s) | test ppl |",
        "|---|---:|---:|---:|---:|",
        *(f"| {name} | {med(side, 'seconds', 0):.1f} | {med(side, 'seconds', 1):.1f} | {med(side, 'total'):.1f} | "
          f"{med(side, 'test_ppl'):.2f} |" for side, name in (("upstream", "pytorch/examples main.py + generate.py"),
                                                              ("hwlm", "hwlm-train + hwlm-generate"))),
        "",
        f"hwlm/upstream wall time: **{ratio:.2f}x** (target <= 1.1); median test perplexity {ppl_gap:+.2%} "
        f"(target within 1%; seeds {args.seed}..{args.seed + len(rounds) - 1} spread the upstream side over "
        f"{spread('upstream'):.1%}, hwlm over {spread('hwlm'):.1%})",
    ])
    print(header + "\n\n" + table)
    out = {"header": header, "table": table, "ratio": ratio, "ppl_gap": ppl_gap, "rounds": rounds, "corpus": corpus,
           "patches": patches, "settings": vars(args), "quick": bool(args.quick or args.tiny)}
    out_dir = Path(args.out_dir or RESULTS)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"bench_small_job{'_quick' if args.quick or args.tiny else ''}.json").write_text(
        json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
