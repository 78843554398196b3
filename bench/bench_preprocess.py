"""Vocabulary building + encoding: hwlm (tokenizers + numpy) vs the classic pure-Python dictionary.

Both build a vocabulary from a corpus file and turn it into one 1-D tensor of token ids with one
``<eos>`` per line, side by side in one run on the same file:

- classic: pytorch/examples ``word_language_model/data.py`` (a dict of word ids, a loop over lines);
- hwlm: ``train_word_tokenizer`` (tokenizers WordLevel trainer) + ``encode_batch_fast`` + numpy.

Each repeat runs in a fresh subprocess so that peak memory (ru_maxrss) is per method; the table
reports medians. The full pipeline (``hwlm-prepare`` on the three WikiText-2 files: datasets
loading, cached map, save_to_disk) is timed too, twice: the second run must hit the datasets cache.

    python bench/bench_preprocess.py            # WikiText-2 train, 5 repeats
    python bench/bench_preprocess.py --quick    # first 5,000 lines, 2 repeats, no pipeline runs
    python bench/bench_preprocess.py --tiny     # first 300 lines, 1 repeat (the tests)

Without the WikiText-2 file, --quick/--tiny use a generated corpus of random words.

Prints a Markdown table and writes JSON to bench/results/bench_preprocess[_quick].json.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("HWLM_SHARED_DATA", REPO.parent / "shared" / "data"))


def _rss_mb() -> float:
    """Peak RSS of this process image in MB. VmHWM, not ru_maxrss: Linux keeps ru_maxrss across execve, so a
    worker started from a big parent (bench/run_all.py) would report the parent's size."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024  # KiB
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def classic(path: str) -> "torch.Tensor":  # noqa: F821
    """pytorch/examples word_language_model Corpus.tokenize: two passes, a dict, a list of tensors."""
    import torch

    word2idx, idx2word = {}, []
    with open(path, encoding="utf-8") as f:
        for line in f:
            for word in line.split() + ["<eos>"]:
                if word not in word2idx:
                    idx2word.append(word)
                    word2idx[word] = len(idx2word) - 1
    with open(path, encoding="utf-8") as f:
        idss = []
        for line in f:
            idss.append(torch.tensor([word2idx[w] for w in line.split() + ["<eos>"]], dtype=torch.int64))
    return torch.cat(idss)


def hwlm_fast(path: str) -> "torch.Tensor":  # noqa: F821
    """Train the word-level tokenizer streaming the file, encode all lines in Rust, flatten with numpy."""
    import numpy as np
    import torch

    sys.path.insert(0, str(REPO))
    from hwlm.tokenization import train_word_tokenizer

    with open(path, encoding="utf-8") as f:
        tok = train_word_tokenizer(f)
    backend, eos = tok.backend_tokenizer, tok.eos_token_id
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")[:-1]  # the file's lines; the text loader's convention
    encodings = backend.encode_batch_fast(lines, add_special_tokens=False)
    # chain + fromiter run in C: no Python-level loop over tokens
    flat = np.fromiter(itertools.chain.from_iterable(e.ids + [eos] for e in encodings), dtype=np.int64)
    return torch.from_numpy(flat)


def worker(method: str, path: str) -> dict:
    """One timed run in this process; returns seconds, tokens and memory figures."""
    import numpy  # noqa: F401  imported before the baseline so both methods pay the same
    import torch  # noqa: F401

    if method == "hwlm":
        sys.path.insert(0, str(REPO))
        import hwlm.tokenization  # noqa: F401
    base = _rss_mb()
    start = time.perf_counter()
    ids = (classic if method == "classic" else hwlm_fast)(path)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "tokens": int(ids.numel()), "peak_rss_mb": _rss_mb(), "baseline_rss_mb": base}


def run_worker(method: str, path: str) -> dict:
    out = subprocess.run([sys.executable, __file__, "--worker", method, "--data", path],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_pipeline(folder: Path, cache: Path, out: Path) -> dict:
    """hwlm-prepare on the three files in a child process; wall time and the child's own peak RSS."""
    env = dict(os.environ, PYTHONPATH=str(REPO), HF_DATASETS_CACHE=str(cache), HF_DATASETS_OFFLINE="1",
               HF_HUB_OFFLINE="1", HF_DATASETS_DISABLE_PROGRESS_BARS="1")
    argv = ["--train_file", str(folder / "train.txt"), "--validation_file", str(folder / "valid.txt"),
            "--test_file", str(folder / "test.txt"), "--output_dir", str(out)]
    code = ("import json, sys; from hwlm.cli.prepare import main; main(sys.argv[1:]); "
            "print(json.dumps(next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmHWM:'))))")
    before = set(cache.rglob("cache-*.arrow"))
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code, *argv], env=env, check=True, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    # a cache hit writes no new map result
    new_files = len(set(cache.rglob("cache-*.arrow")) - before)
    return {"seconds": seconds, "peak_rss_mb": int(done.stdout.strip().splitlines()[-1]) / 1024,
            "new_cache_files": new_files, "cache_hit": bool(before) and new_files == 0}


def main(argv=None) -> dict | None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=str(SHARED / "wikitext-2" / "train.txt"), help="corpus file")
    parser.add_argument("--quick", action="store_true", help="first 5,000 lines, 2 repeats, no pipeline runs")
    parser.add_argument("--tiny", action="store_true", help="first 300 lines, 1 repeat (implies --quick)")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--out_dir", default=None, help="where the JSON goes (default bench/results)")
    parser.add_argument("--worker", choices=["classic", "hwlm"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker, args.data)))
        return
    args.quick = args.quick or args.tiny
    data = Path(args.data)
    if not data.is_file() and args.quick:
        data = None
    elif not data.is_file():
        raise FileNotFoundError(f"--data {str(data)!r} does not exist; point it at WikiText-2 train.txt "
                                "(or set HWLM_SHARED_DATA).")
    repeats = args.repeats or (1 if args.tiny else 2 if args.quick else 5)
    num_lines = 300 if args.tiny else 5000
    with tempfile.TemporaryDirectory() as tmp:
        path = data
        if args.quick:
            path = Path(tmp) / "quick.txt"
            if data is None:  # no corpus here: random words with a Zipf-like spread
                import random

                rng = random.Random(0)
                words = [f"w{int(rng.paretovariate(1.0))}" for _ in range(num_lines * 20)]
                path.write_text("".join(" " + " ".join(words[i:i + 20]) + " \n" for i in range(0, len(words), 20)))
                data = path
            else:
                with open(data, encoding="utf-8") as f:
                    path.write_text("".join(line for _, line in zip(range(num_lines), f)), encoding="utf-8")
        runs = {m: [run_worker(m, str(path)) for _ in range(repeats)] for m in ("classic", "hwlm")}
        assert runs["classic"][0]["tokens"] == runs["hwlm"][0]["tokens"], "the two methods disagree on token counts"
        pipeline = None
        if not args.quick:
            cache, out = Path(tmp) / "cache", Path(tmp) / "prep"
            pipeline = {"first": run_pipeline(data.parent, cache, out), "second": run_pipeline(data.parent, cache, out)}
    med = {m: statistics.median(r["seconds"] for r in rs) for m, rs in runs.items()}
    peak = {m: max(r["peak_rss_mb"] for r in rs) for m, rs in runs.items()}
    extra = {m: max(r["peak_rss_mb"] - r["baseline_rss_mb"] for r in rs) for m, rs in runs.items()}
    ratio = med["classic"] / med["hwlm"]
    size_mb = path.stat().st_size / 1e6 if path.exists() else None
    lines = [
        f"Corpus: {data.name}{f' (first {num_lines:,} lines)' if args.quick else ''}, {runs['hwlm'][0]['tokens']:,} tokens; "
        f"median of {repeats} runs, each in a fresh process; Python {platform.python_version()}, "
        f"{os.cpu_count()} CPUs",
        "",
        "| method | median s | peak RSS MB | RSS growth MB | speed-up |",
        "|---|---:|---:|---:|---:|",
        f"| classic dict (pytorch/examples) | {med['classic']:.2f} | {peak['classic']:.0f} | {extra['classic']:.0f} | 1.0x |",
        f"| hwlm (tokenizers + numpy) | {med['hwlm']:.2f} | {peak['hwlm']:.0f} | {extra['hwlm']:.0f} | {ratio:.1f}x |",
    ]
    if pipeline:
        lines += [
            "",
            "| hwlm-prepare on train+valid+test | wall s (incl. imports) | peak RSS MB | cache hit |",
            "|---|---:|---:|---|",
            f"| first run | {pipeline['first']['seconds']:.1f} | {pipeline['first']['peak_rss_mb']:.0f} | "
            f"{pipeline['first']['cache_hit']} |",
            f"| second run | {pipeline['second']['seconds']:.1f} | {pipeline['second']['peak_rss_mb']:.0f} | "
            f"{pipeline['second']['cache_hit']} |",
        ]
    header, table = lines[0], "\n".join(lines[2:])
    print("\n".join(lines))
    result = {"corpus": str(data), "quick": args.quick, "repeats": repeats, "runs": runs, "median_seconds": med,
              "speedup": ratio, "peak_rss_mb": peak, "rss_growth_mb": extra, "pipeline": pipeline,
              "python": platform.python_version(), "cpus": os.cpu_count(), "size_mb": size_mb}
    results = Path(args.out_dir) if args.out_dir else REPO / "bench" / "results"
    results.mkdir(parents=True, exist_ok=True)
    name = "bench_preprocess_quick.json" if args.quick else "bench_preprocess.json"
    (results / name).write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {results / name}")
    return {**result, "benchmark": "preprocess", "header": header, "table": table}


if __name__ == "__main__":
    main()
