"""Shared pieces of the hwlm benchmarks: the classic PyTorch reference models, corpus loading, paired timing,
memory sampling, Markdown tables and JSON results.

Every comparison runs both sides in one process, interleaved (A B, B A, A B, ...), so a background job that
slows the machine down slows both sides of a round alike; figures are medians over rounds and the ratio is the
median of the per-round ratios.

Shape legend: B batch (parallel streams), T time (bptt), E embedding size, H hidden size, V vocabulary size.
"""

from __future__ import annotations

import json
import math
import os
import platform
import resource
import statistics
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Callable

import torch
from torch import nn

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `python bench/x.py` from anywhere, without an install
    sys.path.insert(0, str(REPO))
SHARED = Path(os.environ.get("HWLM_SHARED_DATA", REPO.parent / "shared" / "data"))
RESULTS = REPO / "bench" / "results"

#: The two vocabulary sizes of the issue and where their corpora live.
CORPORA = {
    "ptb": {"vocab_size": 10000, "files": {s: SHARED / "ptb" / f"ptb.{s}.txt" for s in ("train", "valid", "test")}},
    "wikitext-2": {"vocab_size": 33278, "files": {s: SHARED / "wikitext-2" / f"{s}.txt" for s in ("train", "valid", "test")}},
}


# --------------------------------------------------------------------------------------------------------------
# Data: the classic pipeline of pytorch/examples word_language_model
# --------------------------------------------------------------------------------------------------------------


def encode_corpus(name: str, *, random_tokens: bool = False, vocab_size: int | None = None, max_tokens: int | None = None,
                  seed: int = 0) -> dict:
    """Token streams for the splits of corpus ``name`` (``"ptb"`` or ``"wikitext-2"``).

    Real text is encoded with a plain dict (one ``<eos>`` per line), ids by decreasing training frequency so
    that an adaptive softmax's cutoffs mean what they say; the vocabulary is built over train+valid+test like
    pytorch/examples. With ``random_tokens`` (or when the files are missing) the streams are uniform random ids
    of the corpus's vocabulary size, ``max_tokens`` long.

    Returns ``{"train", "valid", "test"}`` 1-D LongTensors (N,), plus ``"vocab_size"`` and ``"source"``.
    """
    spec = CORPORA[name]
    vocab_size = vocab_size or spec["vocab_size"]
    files = spec["files"]
    if random_tokens or not all(p.is_file() for p in files.values()):
        gen = torch.Generator().manual_seed(seed)
        n = max_tokens or 100_000
        out = {s: torch.randint(vocab_size, (n if s == "train" else max(n // 4, 2),), generator=gen)
               for s in ("train", "valid", "test")}
        return {**out, "vocab_size": vocab_size, "source": "random tokens"}
    words = {}
    for split, path in files.items():
        with open(path, encoding="utf-8") as f:
            words[split] = [w for line in f for w in line.split() + ["<eos>"]]
    counts = Counter(words["train"])
    for split in ("valid", "test"):  # words absent from train go last
        counts.update({w: 0 for w in words[split] if w not in counts})
    word2idx = {w: i for i, (w, _) in enumerate(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))}
    out = {}
    for split, ws in words.items():
        ids = torch.tensor([word2idx[w] for w in ws], dtype=torch.long)
        out[split] = ids[:max_tokens] if max_tokens else ids
    return {**out, "vocab_size": len(word2idx), "source": f"{name} text"}


def batchify(data: torch.Tensor, batch_size: int) -> torch.Tensor:
    """pytorch/examples: cut the stream into ``batch_size`` columns, dropping the remainder.

        a b c d e f g h i j k l m n o p q r s t u v w x   (N,)  with batch_size=4 becomes
        ┌ a g m s ┐
        │ b h n t │
        │ c i o u │   (N // 4, 4): column j is stream j, read top to bottom
        │ d j p v │
        │ e k q w │
        └ f l r x ┘
    """
    n = data.size(0) // batch_size
    return data[: n * batch_size].view(batch_size, -1).t().contiguous()  # (N/B, B)


def get_batch(source: torch.Tensor, i: int, bptt: int) -> tuple[torch.Tensor, torch.Tensor]:
    """pytorch/examples: rows i..i+T of the streams as inputs, rows i+1..i+T+1 as flattened targets."""
    seq_len = min(bptt, len(source) - 1 - i)
    return source[i : i + seq_len], source[i + 1 : i + 1 + seq_len].reshape(-1)  # (T, B), (T*B,)


# --------------------------------------------------------------------------------------------------------------
# The reference models, written the classic way (time-major, one module per piece, full softmax)
# --------------------------------------------------------------------------------------------------------------


class ReferenceRNNModel(nn.Module):
    """pytorch/examples RNNModel: embedding → multi-layer nn.LSTM / nn.RNN → linear decoder (full softmax)."""

    def __init__(self, rnn_type: str, ntoken: int, ninp: int, nhid: int, nlayers: int):
        super().__init__()
        self.encoder = nn.Embedding(ntoken, ninp)
        if rnn_type == "LSTM":
            self.rnn = nn.LSTM(ninp, nhid, nlayers)
        else:
            self.rnn = nn.RNN(ninp, nhid, nlayers, nonlinearity="tanh")
        self.decoder = nn.Linear(nhid, ntoken)
        self.rnn_type, self.nhid, self.nlayers = rnn_type, nhid, nlayers
        initrange = 0.1
        nn.init.uniform_(self.encoder.weight, -initrange, initrange)
        nn.init.zeros_(self.decoder.bias)
        nn.init.uniform_(self.decoder.weight, -initrange, initrange)

    def forward(self, input, hidden):  # input (T, B)
        emb = self.encoder(input)  # (T, B, E)
        output, hidden = self.rnn(emb, hidden)  # (T, B, H)
        decoded = self.decoder(output).view(-1, self.decoder.out_features)  # (T*B, V)
        return nn.functional.log_softmax(decoded, dim=1), hidden

    def init_hidden(self, bsz: int):
        weight = next(self.parameters())
        if self.rnn_type == "LSTM":
            return (weight.new_zeros(self.nlayers, bsz, self.nhid), weight.new_zeros(self.nlayers, bsz, self.nhid))
        return weight.new_zeros(self.nlayers, bsz, self.nhid)


def repackage_hidden(h):
    """pytorch/examples: cut the hidden state from its history (truncated BPTT)."""
    if isinstance(h, torch.Tensor):
        return h.detach()
    return tuple(repackage_hidden(v) for v in h)


class ReferenceTransformerModel(nn.Module):
    """A plain causal Transformer LM: embeddings + learned positions → nn.TransformerEncoder (pre-LN, causal
    mask) → LayerNorm → linear decoder tied to the embedding. Batch-first here, unlike the RNN reference, because
    nn.TransformerEncoder's fast paths expect it."""

    def __init__(self, ntoken: int, d_model: int, nhead: int, d_ff: int, nlayers: int, max_len: int,
                 activation: str = "gelu"):
        super().__init__()
        self.encoder = nn.Embedding(ntoken, d_model)
        self.pos = nn.Embedding(max_len, d_model)
        layer = nn.TransformerEncoderLayer(d_model, nhead, d_ff, dropout=0.0, activation=activation,
                                           batch_first=True, norm_first=True)
        self.transformer = nn.TransformerEncoder(layer, nlayers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d_model)
        self.decoder = nn.Linear(d_model, ntoken, bias=False)
        self.decoder.weight = self.encoder.weight
        nn.init.normal_(self.encoder.weight, std=0.02)
        nn.init.normal_(self.pos.weight, std=0.02)

    def forward(self, input):  # input (B, T)
        T = input.size(1)
        x = self.encoder(input) + self.pos.weight[:T]  # (B, T, C)
        mask = nn.Transformer.generate_square_subsequent_mask(T, device=input.device)  # (T, T), -inf above
        x = self.transformer(x, mask=mask, is_causal=True)  # (B, T, C)
        return self.decoder(self.norm(x))  # (B, T, V)


def copy_hwlm_recurrent_into_reference(hwlm_model, ref: ReferenceRNNModel) -> None:
    """Load an hwlm recurrent model's weights into the reference (one multi-layer module, decoder bias 0), so the
    two compute the same function: a parity check for the evaluation benchmark."""
    with torch.no_grad():
        ref.encoder.weight.copy_(hwlm_model.model.embed_tokens.weight)
        for i, layer in enumerate(hwlm_model.model.layers):
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                getattr(ref.rnn, f"{name}_l{i}").copy_(getattr(layer, f"{name}_l0"))
        ref.decoder.weight.copy_(hwlm_model.lm_head.weight)
        ref.decoder.bias.zero_()


# --------------------------------------------------------------------------------------------------------------
# Measurement
# --------------------------------------------------------------------------------------------------------------


def rss_mb() -> float:
    """Current resident set size of this process in MB (Linux /proc)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def max_rss_mb() -> float:
    """Peak resident set size of this process so far, in MB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


class PeakRSS:
    """Context manager sampling the process's RSS every ``interval`` s on a thread; ``.peak`` and ``.growth``
    (peak minus the RSS on entry) in MB. The two sides of a comparison live in one process, so ru_maxrss cannot
    tell them apart; the growth during a side's timed run is its working set (activations, gradients, buffers)
    on top of what was already resident (both models' weights, the data)."""

    def __init__(self, interval: float = 0.005):
        self.interval = interval
        self.peak = self.start = 0.0

    def __enter__(self):
        self.start = self.peak = rss_mb()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self):
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, rss_mb())

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_mb())
        return False

    @property
    def growth(self) -> float:
        return self.peak - self.start


def paired_rates(sides: dict[str, Callable[[], int]], rounds: int, warmup: int = 1) -> dict:
    """Run each side's ``fn`` (returns the number of items it processed) ``rounds`` times, interleaved with the
    order alternating each round, after ``warmup`` untimed calls each. Returns per side the list of rates
    (items/s), the median rate, the peak RSS growth (MB); plus ``ratio`` (first side / second side, median of
    the per-round ratios) when there are two sides."""
    names = list(sides)
    for _ in range(warmup):
        for name in names:
            sides[name]()
    rates = {n: [] for n in names}
    growth = {n: 0.0 for n in names}
    peak = {n: 0.0 for n in names}
    for r in range(rounds):
        for name in (names if r % 2 == 0 else names[::-1]):
            with PeakRSS() as mem:
                start = time.perf_counter()
                items = sides[name]()
                seconds = time.perf_counter() - start
            rates[name].append(items / seconds)
            growth[name] = max(growth[name], mem.growth)
            peak[name] = max(peak[name], mem.peak)
    out = {n: {"rates": rates[n], "median": statistics.median(rates[n]), "rss_growth_mb": growth[n],
               "rss_peak_mb": peak[n]} for n in names}
    if len(names) == 2:
        a, b = names
        out["ratio"] = statistics.median(x / y for x, y in zip(rates[a], rates[b]))
    return out


def finite_positive(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


# --------------------------------------------------------------------------------------------------------------
# Reporting
# --------------------------------------------------------------------------------------------------------------


def markdown_table(header: list[str], rows: list[list]) -> str:
    """A Markdown table; the first column is left-aligned, the others right-aligned."""
    def cell(v):
        if isinstance(v, float):
            return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.2f}"
        return str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" + "---:|" * (len(header) - 1)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def environment() -> dict:
    return {"python": platform.python_version(), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "cpus": os.cpu_count(), "load_avg": os.getloadavg()}


def write_result(name: str, result: dict, quick: bool, out_dir: Path | None = None) -> Path:
    """Write ``result`` (plus the environment) to ``bench/results/<name>[_quick].json``; return the path."""
    out_dir = Path(out_dir or RESULTS)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}{'_quick' if quick else ''}.json"
    path.write_text(json.dumps({**result, "environment": environment(), "quick": quick}, indent=2) + "\n")
    return path


def add_common_args(parser) -> None:
    """Flags every benchmark takes."""
    parser.add_argument("--quick", action="store_true", help="tiny sizes, random tokens, few steps (CI smoke run)")
    parser.add_argument("--tiny", action="store_true", help="the smallest possible run, for the tests (implies --quick)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads (default 1: on a shared machine, comparisons are steadier)")
    parser.add_argument("--rounds", type=int, default=None, help="timed rounds per side (default: by mode)")
    parser.add_argument("--out_dir", default=None, help="where the JSON goes (default bench/results)")


def setup(args) -> None:
    if args.tiny:
        args.quick = True
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
