"""Curves of logged runs side by side: validation (and training) perplexity against CPU time or optimiser step.

A run's ``metrics.jsonl`` (written by `hwlm.training`) holds one JSON record per log line; since records carry
``cpu_s`` (the training process's CPU seconds, every thread counted), runs of different models, batch layouts
and thread counts can be compared at equal compute. A reference run from another code base joins the comparison
as a ``metrics.jsonl`` of ``{"type": "eval", "perplexity": ..., "cpu_s": ...}`` records.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

__all__ = ["read_curves", "plot_runs", "AXES"]

#: x-axis name -> (record field, scale, label)
AXES = {
    "cpu_hours": ("cpu_s", 1 / 3600, "training CPU time (hours; one thread = one CPU)"),
    "step": ("step", 1, "optimiser step"),
}


def read_curves(run: str | Path, x: str = "cpu_hours") -> dict[str, list[tuple[float, float]]]:
    """``{"train": [(x, perplexity), ...], "validation": [...]}`` from a run folder or its ``metrics.jsonl``.

    Raises:
        FileNotFoundError: no metrics.jsonl there.
        ValueError: an unknown ``x``, or records without the field ``x`` reads (runs logged before ``cpu_s``).
    """
    if x not in AXES:
        raise ValueError(f"x={x!r} is not one of {sorted(AXES)}")
    path = Path(run)
    path = path / "metrics.jsonl" if path.is_dir() else path
    if not path.is_file():
        raise FileNotFoundError(f"{str(path)!r} has no metrics.jsonl; pass a training run's output folder")
    key, scale, _ = AXES[x]
    curves: dict[str, list[tuple[float, float]]] = {"train": [], "validation": []}
    for line in path.read_text().splitlines():
        record = json.loads(line)
        kind = {"train": "train", "eval": "validation"}.get(record.get("type"))
        if kind is None or record.get("split", "validation") != "validation":
            continue
        if key not in record:
            raise ValueError(f"{path} has {record['type']} records without {key!r} (logged before hwlm recorded it);"
                             f" plot it with x='step'")
        curves[kind].append((record[key] * scale, record.get("perplexity", math.exp(min(record["loss"], 50)))))
    return curves


def plot_runs(runs: dict[str, str | Path], path: str | Path, *, x: str = "cpu_hours", title: str | None = None,
              smooth: int = 50) -> dict[str, dict]:
    """Draw every run's validation perplexity (markers) and training perplexity (thin line, running mean of
    ``smooth`` log records) against ``x`` into one PNG; return the curves drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=100)
    ax.set_yscale("log")  # before any limit: limits set on a linear axis do not survive the switch
    drawn, lows, highs = {}, [], []
    for (label, run), color in zip(runs.items(), plt.rcParams["axes.prop_cycle"].by_key()["color"] * 4):
        curves = drawn[label] = read_curves(run, x)
        if curves["train"]:
            xs, ppl = zip(*curves["train"])
            logs = [math.log(p) for p in ppl]
            mean = [math.exp(sum(logs[max(0, i - smooth + 1): i + 1]) / len(logs[max(0, i - smooth + 1): i + 1]))
                    for i in range(len(logs))]
            ax.plot(xs, mean, color=color, linewidth=0.8, alpha=0.6)
            lows.append(min(mean))
        if curves["validation"]:
            xs, ppl = zip(*curves["validation"])
            ax.plot(xs, ppl, color=color, marker="o", markersize=3, label=f"{label} (valid {min(ppl):.1f})")
            lows.append(min(ppl))
            highs.append(max(ppl))
    if highs:  # the first training steps (perplexity ~ vocabulary size) would squash the curves worth reading
        ax.set_ylim(0.9 * min(lows), 2 * max(highs))
    ax.set_xlabel(AXES[x][2])
    ax.set_ylabel("perplexity (markers: validation; lines: training)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return drawn
