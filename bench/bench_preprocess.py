"""Corpus preparation: hwlm vs the classic pure-Python dictionary loop, end to end and core.

Two ratios, each a median over interleaved repeats (classic, hwlm, classic, hwlm, ...), every run in a fresh process:

- **end to end**: the whole command as a user runs it, interpreter start and imports included. Classic: the
  ``Dictionary``/``Corpus`` of pytorch/examples ``word_language_model/data.py`` over train/valid/test (vocabulary
  over all three, one int64 tensor per split). hwlm: ``hwlm-prepare --train_file ... --output_dir ...`` with an
  empty datasets cache (loading, vocabulary, tokenizer, encoding, streams/blocks/token files written). Corpus:
  WikiText-2 train repeated ``--e2e_copies`` times (default 10: 21M tokens) + valid + test. Target >= 1.0x.
- **core**: vocabulary + encoding of one file, each method once in a fresh process: ``classic`` (the same loop) vs
  ``hwlm_fast`` (what hwlm-prepare runs on the train split: `CountingEncoder`'s one Arrow split that counts and
  encodes, the tokenizer built from the counts), imports and hwlm-prepare's allocator settings (`hwlm.allocator`)
  before the clock. Target >= 3x.

A second ``hwlm-prepare`` run on a warm cache is timed too (it must hit the datasets cache).

    python bench/bench_preprocess.py            # WikiText-2 train: core x5, end to end x3 at 21M tokens
    python bench/bench_preprocess.py --quick    # first 5,000 lines, 2 repeats, no end-to-end runs
    python bench/bench_preprocess.py --tiny     # first 300 lines, 1 repeat (the tests)
    python bench/bench_preprocess.py --big      # also WikiText-2 train x50 (104M tokens), one interleaved pair:
                                                # wall times, peak RSS, memory-mapped streams (~10 min, 5 GB disk)

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
import shutil
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
    """What hwlm-prepare runs on the train split, minus datasets' file loading: read the lines into Arrow, count
    the vocabulary and keep the chunk ids from one whitespace split (`CountingEncoder`), build the tokenizer,
    encode by a numpy take (ids proven equal to the tokenizers tokenizer's by the tests), flatten."""
    import numpy as np
    import pyarrow as pa
    import torch

    sys.path.insert(0, str(REPO))
    from hwlm.data import CountingEncoder
    from hwlm.tokenization import PRETOKENIZED_SETTINGS

    with open(path, encoding="utf-8") as f:
        lines = pa.array(f.read().split("\n")[:-1], pa.large_string())  # the file's lines; the text loader's convention
    counter = CountingEncoder(PRETOKENIZED_SETTINGS)
    for start in range(0, len(lines), 100_000):  # the batches count_and_encode reads
        counter.add(lines.slice(start, 100_000))
    encoded = counter.encode(counter.tokenizer())
    return torch.from_numpy(np.concatenate([c.values.to_numpy() for c in encoded.chunks]).astype(np.int64))


def worker(method: str, path: str) -> dict:
    """One timed run in this process; returns seconds, tokens and memory figures."""
    import numpy  # noqa: F401  imported before the baseline so both methods pay the same
    import torch  # noqa: F401

    if method == "hwlm":
        sys.path.insert(0, str(REPO))
        import hwlm.data  # noqa: F401  (datasets, transformers: imported before the clock starts)
        from hwlm.allocator import keep_freed_memory

        keep_freed_memory()  # as hwlm-prepare does when its work starts
    base = _rss_mb()
    start = time.perf_counter()
    ids = (classic if method == "classic" else hwlm_fast)(path)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "tokens": int(ids.numel()), "peak_rss_mb": _rss_mb(), "baseline_rss_mb": base}


def run_worker(method: str, path: str) -> dict:
    out = subprocess.run([sys.executable, __file__, "--worker", method, "--data", path],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


#: pytorch/examples word_language_model/data.py (Dictionary, Corpus.tokenize), run as a script on train/valid/test.
CLASSIC_COMMAND = """
import os, sys
import torch

class Dictionary(object):
    def __init__(self):
        self.word2idx = {}
        self.idx2word = []

    def add_word(self, word):
        if word not in self.word2idx:
            self.idx2word.append(word)
            self.word2idx[word] = len(self.idx2word) - 1
        return self.word2idx[word]

class Corpus(object):
    def __init__(self, path):
        self.dictionary = Dictionary()
        self.train = self.tokenize(os.path.join(path, 'train.txt'))
        self.valid = self.tokenize(os.path.join(path, 'valid.txt'))
        self.test = self.tokenize(os.path.join(path, 'test.txt'))

    def tokenize(self, path):
        with open(path, 'r', encoding="utf8") as f:
            for line in f:
                words = line.split() + ['<eos>']
                for word in words:
                    self.dictionary.add_word(word)
        with open(path, 'r', encoding="utf8") as f:
            idss = []
            for line in f:
                words = line.split() + ['<eos>']
                ids = []
                for word in words:
                    ids.append(self.dictionary.word2idx[word])
                idss.append(torch.tensor(ids).type(torch.int64))
            ids = torch.cat(idss)
        return ids

corpus = Corpus(sys.argv[1])
print(len(corpus.train), len(corpus.valid), len(corpus.test), len(corpus.dictionary.idx2word))
"""


def _timed(argv: list[str], env: dict | None = None) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run(argv, env=env, check=True, capture_output=True, text=True)
    return time.perf_counter() - start, done.stdout


def end_to_end(folder: Path, tmp: Path, repeats: int) -> dict:
    """Interleaved runs of the classic script and ``hwlm-prepare`` on ``folder``/{train,valid,test}.txt.

    Each hwlm run starts with an empty datasets cache and output folder (a user's first run); the command is the
    console entry point's module, so interpreter start-up and every import count.
    """
    classic_s, hwlm_s = [], []
    for i in range(repeats):
        seconds, out = _timed([sys.executable, "-c", CLASSIC_COMMAND, str(folder)])
        classic_s.append(seconds)
        classic_tokens = int(out.split()[0])
        cache, prep = tmp / f"e2e-cache-{i}", tmp / f"e2e-prep-{i}"
        env = dict(os.environ, PYTHONPATH=str(REPO), HF_DATASETS_CACHE=str(cache), HF_DATASETS_OFFLINE="1",
                   HF_HUB_OFFLINE="1", HF_DATASETS_DISABLE_PROGRESS_BARS="1")
        seconds, _ = _timed([sys.executable, "-m", "hwlm.cli.prepare", "--train_file", str(folder / "train.txt"),
                             "--validation_file", str(folder / "valid.txt"), "--test_file", str(folder / "test.txt"),
                             "--output_dir", str(prep)], env)
        hwlm_s.append(seconds)
        tokens = json.loads((prep / "hwlm_data.json").read_text())["splits"]["train"]["tokens"]
        assert tokens == classic_tokens, f"hwlm-prepare counted {tokens} train tokens, the classic loop {classic_tokens}"
        shutil.rmtree(cache, ignore_errors=True)
        shutil.rmtree(prep, ignore_errors=True)
    return {"classic_seconds": classic_s, "hwlm_seconds": hwlm_s, "tokens": classic_tokens,
            "ratio": statistics.median(classic_s) / statistics.median(hwlm_s),
            "pair_ratios": [c / h for c, h in zip(classic_s, hwlm_s)]}


def copies_of(folder: Path, copies: int, out: Path) -> Path:
    """``out`` with train.txt = ``copies`` x ``folder``/train.txt, and valid/test copied."""
    out.mkdir(parents=True, exist_ok=True)
    text = (folder / "train.txt").read_bytes()
    with open(out / "train.txt", "wb") as f:
        for _ in range(copies):
            f.write(text)
    for name in ("valid.txt", "test.txt"):
        (out / name).write_bytes((folder / name).read_bytes())
    return out


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
    big = copies_of(folder, copies, tmp / "big")
    classic_seconds, _ = _timed([sys.executable, "-c", CLASSIC_COMMAND, str(big)])  # the pair, interleaved
    result = run_pipeline(big, tmp / "big-cache", tmp / "big-prep")
    result["classic_seconds"] = classic_seconds
    result["ratio"] = classic_seconds / result["seconds"]
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
    parser.add_argument("--e2e_copies", type=int, default=10, help="WikiText-2 train copies for the end-to-end runs")
    parser.add_argument("--e2e_repeats", type=int, default=3, help="interleaved end-to-end pairs")
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
        runs = {"classic": [], "hwlm": []}
        for _ in range(repeats):  # interleaved, so a change in the machine's load hits both alike
            for m in ("classic", "hwlm"):
                runs[m].append(run_worker(m, str(path)))
        assert runs["classic"][0]["tokens"] == runs["hwlm"][0]["tokens"], "the two methods disagree on token counts"
        pipeline = big = e2e = None
        if not args.quick:
            e2e_folder = copies_of(data.parent, args.e2e_copies, Path(tmp) / "e2e")
            e2e = end_to_end(e2e_folder, Path(tmp), args.e2e_repeats)
            e2e["copies"] = args.e2e_copies
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
        f"| hwlm (one Arrow split: count + encode; tokenizers ids) | {med['hwlm']:.2f} | {peak['hwlm']:.0f} | {extra['hwlm']:.0f} | {ratio:.1f}x |",
    ]
    if e2e:
        c, h = statistics.median(e2e["classic_seconds"]), statistics.median(e2e["hwlm_seconds"])
        lines += [
            "",
            f"| end to end, WikiText-2 train x{e2e['copies']} + valid + test ({e2e['tokens']:,} train tokens), "
            f"median of {len(e2e['hwlm_seconds'])} interleaved pairs | wall s (start-up and imports included) | "
            "speed-up |",
            "|---|---:|---:|",
            f"| classic: pytorch/examples data.py Corpus (python -c ...) | {c:.1f} | 1.0x |",
            f"| hwlm-prepare --train_file ... --output_dir ... (empty datasets cache) | {h:.1f} | {e2e['ratio']:.2f}x |",
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
            f"| the classic loop on the same files, end to end / hwlm's speed-up | >= 1.0x | "
            f"{big['classic_seconds']:.0f} s / {big['ratio']:.2f}x |",
            f"| peak RSS | <= 3,072 MB | {big['peak_rss_mb']:,.0f} MB |",
            f"| stream_tensor('train') + reading every token: anonymous memory growth | ~0 (memory-mapped) | "
            f"{load['anon_after_mb'] - load['anon_before_mb']:,.0f} MB (RSS incl. mapped pages "
            f"{load['rss_before_mb']:,.0f} -> {load['rss_after_mb']:,.0f} MB) |",
        ]
    header, table = lines[0], "\n".join(lines[2:])
    print("\n".join(lines))
    result = {"corpus": str(data), "quick": args.quick, "repeats": repeats, "runs": runs, "median_seconds": med,
              "speedup": ratio, "end_to_end": e2e, "peak_rss_mb": peak, "rss_growth_mb": extra, "pipeline": pipeline, "big": big,
              "python": platform.python_version(), "cpus": os.cpu_count(), "size_mb": size_mb}
    results = Path(args.out_dir) if args.out_dir else REPO / "bench" / "results"
    results.mkdir(parents=True, exist_ok=True)
    name = "bench_preprocess_quick.json" if args.quick else "bench_preprocess.json"
    (results / name).write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {results / name}")
    return {**result, "benchmark": "preprocess", "header": header, "table": table}


if __name__ == "__main__":
    main()
