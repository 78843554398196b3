"""Vocabulary building + encoding: hwlm (tokenizers + numpy) vs the classic pure-Python dictionary.

Both build a vocabulary from a corpus file and turn it into one 1-D tensor of token ids with one
``<eos>`` per line, side by side in one run on the same file:

- classic: pytorch/examples ``word_language_model/data.py`` (a dict of word ids, a loop over lines);
- hwlm: ``train_word_tokenizer`` (vocabulary counted with pyarrow compute, the WordLevel trainer's order) +
  ``ArrowLineEncoder`` (pyarrow ``utf8_split_whitespace`` + ``index_in``, numpy) -> a ``tokenizers`` tokenizer
  and the same ids it gives.

Each repeat runs in a fresh subprocess so that peak memory (ru_maxrss) is per method; the table
reports medians. The full pipeline (``hwlm-prepare`` on the three WikiText-2 files: datasets
loading, cached map, save_to_disk) is timed too, twice: the second run must hit the datasets cache.

    python bench/bench_preprocess.py            # WikiText-2 train, 5 repeats
    python bench/bench_preprocess.py --quick    # first 5,000 lines, 2 repeats, no pipeline runs
    python bench/bench_preprocess.py --tiny     # first 300 lines, 1 repeat (the tests)
    python bench/bench_preprocess.py --big      # hwlm-prepare on WikiText-2 train x50 (104M tokens), once:
                                                # wall time, peak RSS, memory-mapped streams (~10 min, 5 GB disk)

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
    """What hwlm-prepare runs on a split, minus datasets' file loading: read the lines into Arrow, count the
    vocabulary with Arrow compute (`train_word_tokenizer`), encode with `ArrowLineEncoder` (ids proven equal to
    the tokenizers tokenizer's by the tests), flatten with numpy."""
    import numpy as np
    import pyarrow as pa
    import torch

    sys.path.insert(0, str(REPO))
    from hwlm.data import ArrowLineEncoder
    from hwlm.tokenization import train_word_tokenizer

    with open(path, encoding="utf-8") as f:
        lines = pa.array(f.read().split("\n")[:-1], pa.large_string())  # the file's lines; the text loader's convention
    tok = train_word_tokenizer([lines])
    encoded = ArrowLineEncoder(tok).encode(lines)
    return torch.from_numpy(encoded.values.to_numpy().astype(np.int64))


def worker(method: str, path: str) -> dict:
    """One timed run in this process; returns seconds, tokens and memory figures."""
    import numpy  # noqa: F401  imported before the baseline so both methods pay the same
    import torch  # noqa: F401

    if method == "hwlm":
        sys.path.insert(0, str(REPO))
        import hwlm.data  # noqa: F401  (datasets, transformers: imported before the clock starts)
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


def run_big(folder: Path, copies: int, tmp: Path) -> dict:
    """hwlm-prepare on train.txt repeated ``copies`` times (+ valid/test): the WikiText-103-sized target.

    Returns wall time and the child's peak RSS, then, in a fresh process, what loading the prepared folder
    costs: RSS before and after ``stream_tensor("train")`` and reading every token (memory-mapped pages are
    file-backed, so anonymous memory must stay flat).
    """
    big = tmp / "big"
    big.mkdir()
    with open(folder / "train.txt", "rb") as src:
        text = src.read()
    with open(big / "train.txt", "wb") as out:
        for _ in range(copies):
            out.write(text)
    for name in ("valid.txt", "test.txt"):
        (big / name).write_bytes((folder / name).read_bytes())
    result = run_pipeline(big, tmp / "big-cache", tmp / "big-prep")
    code = ("import json, sys; from hwlm.data import load_prepared\n"
            "def mem():\n"
            "    s = {l.split(':')[0]: int(l.split()[1]) for l in open('/proc/self/status') if l.startswith(('VmRSS', 'RssAnon'))}\n"
            "    return s['VmRSS'] / 1024, s['RssAnon'] / 1024\n"
            "p = load_prepared(sys.argv[1]); before = mem(); t = p.stream_tensor('train'); total = int(t.sum()); after = mem()\n"
            "print(json.dumps({'tokens': len(t), 'rss_before_mb': before[0], 'rss_after_mb': after[0], "
            "'anon_before_mb': before[1], 'anon_after_mb': after[1]}))")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    done = subprocess.run([sys.executable, "-c", code, str(tmp / "big-prep")], env=env, check=True,
                          capture_output=True, text=True)
    result["load"] = json.loads(done.stdout.strip().splitlines()[-1])
    meta = json.loads((tmp / "big-prep" / "hwlm_data.json").read_text())
    result["tokens"] = meta["splits"]["train"]["tokens"]
    result["copies"] = copies
    return result


def main(argv=None) -> dict | None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=str(SHARED / "wikitext-2" / "train.txt"), help="corpus file")
    parser.add_argument("--quick", action="store_true", help="first 5,000 lines, 2 repeats, no pipeline runs")
    parser.add_argument("--tiny", action="store_true", help="first 300 lines, 1 repeat (implies --quick)")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--big", action="store_true", help="also hwlm-prepare WikiText-2 train x50 (104M tokens), once")
    parser.add_argument("--big_copies", type=int, default=50, help=argparse.SUPPRESS)
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
        pipeline = big = None
        if not args.quick:
            cache, out = Path(tmp) / "cache", Path(tmp) / "prep"
            pipeline = {"first": run_pipeline(data.parent, cache, out), "second": run_pipeline(data.parent, cache, out)}
        if args.big:
            big = run_big(data.parent, args.big_copies, Path(tmp))
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
        f"| hwlm (Arrow compute + numpy; tokenizers ids) | {med['hwlm']:.2f} | {peak['hwlm']:.0f} | {extra['hwlm']:.0f} | {ratio:.1f}x |",
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
    if big:
        load = big["load"]
        lines += [
            "",
            f"| hwlm-prepare, WikiText-2 train x{big['copies']} ({big['tokens']:,} train tokens) | target | measured |",
            "|---|---:|---:|",
            f"| wall time (incl. imports, loading, cache writes, save) | <= 600 s | {big['seconds']:.0f} s |",
            f"| peak RSS | <= 3,072 MB | {big['peak_rss_mb']:,.0f} MB |",
            f"| stream_tensor('train') + reading every token: anonymous memory growth | ~0 (memory-mapped) | "
            f"{load['anon_after_mb'] - load['anon_before_mb']:,.0f} MB (RSS incl. mapped pages "
            f"{load['rss_before_mb']:,.0f} -> {load['rss_after_mb']:,.0f} MB) |",
        ]
    header, table = lines[0], "\n".join(lines[2:])
    print("\n".join(lines))
    result = {"corpus": str(data), "quick": args.quick, "repeats": repeats, "runs": runs, "median_seconds": med,
              "speedup": ratio, "peak_rss_mb": peak, "rss_growth_mb": extra, "pipeline": pipeline, "big": big,
              "python": platform.python_version(), "cpus": os.cpu_count(), "size_mb": size_mb}
    results = Path(args.out_dir) if args.out_dir else REPO / "bench" / "results"
    results.mkdir(parents=True, exist_ok=True)
    name = "bench_preprocess_quick.json" if args.quick else "bench_preprocess.json"
    (results / name).write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {results / name}")
    return {**result, "benchmark": "preprocess", "header": header, "table": table}


if __name__ == "__main__":
    main()
