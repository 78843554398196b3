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

from hwlm.errors import UserError

__all__ = ["read_curves", "plot_runs", "AXES", "run_protocols", "protocol_section", "update_protocol_sections"]

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
        raise UserError(f"x={x!r} is not one of {sorted(AXES)}")
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
            raise UserError(f"{path} has {record['type']} records without {key!r} (logged before hwlm recorded it);"
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


# --- What each logged run's figures measured --------------------------------------------------------------------
#
# Every results README under docs/results/ carries a section generated from the run's own record (hwlm_run.json and
# all_results.json for hwlm-train, the command in eval.log and eval_results.json for hwlm-eval, run.json for a
# reference run from another code base, course.json for the course comparison, protocols.json for a run scored under
# several protocols), so the protocol a README states cannot drift from the one that produced its figures.

PROTOCOL_BEGIN = ("<!-- evaluation protocol: generated from this folder's records by "
                  "hwlm.research.results.update_protocol_sections; do not edit by hand -->")
PROTOCOL_END = "<!-- end of the generated evaluation protocol -->"


def _flag(command: str, name: str, default=None):
    """The value of ``--name value`` (or ``--name=value``) in a logged command line, else ``default``."""
    import re

    found = re.search(rf"--{name}(?:=|\s+)(\S+)", command)
    return found.group(1) if found else default


def run_protocols(run: str | Path) -> list[tuple[str, str]]:
    """``[(which figures, how they were measured), ...]`` for one run folder, read from its records only.

    Raises:
        FileNotFoundError: the folder holds no record this function reads.
    """
    import re

    from hwlm.evaluation import describe_protocol
    from hwlm.model_building import parse_config_overrides

    run = Path(run)
    found: list[tuple[str, str]] = []
    if (run / "hwlm_run.json").is_file():
        record = json.loads((run / "hwlm_run.json").read_text())
        settings = record["settings"]
        results = json.loads((run / "all_results.json").read_text())
        overrides = parse_config_overrides(settings.get("config_overrides"))
        processes = int(settings.get("num_processes") or 1)
        if results["eval_method"] == "stream":
            text = describe_protocol(
                "stream", streams=int(settings["per_device_eval_batch_size"]) * processes,
                memory_length=overrides.get("memory_length"), num_layers=overrides.get("num_hidden_layers"),
            )
        else:  # hwlm-train's evaluation: windows of --block_size, stride --eval_stride (default block_size // 2)
            window = int(settings["block_size"])
            stride = int(settings.get("eval_stride") or max(window // 2, 1))
            text = describe_protocol("sliding_window", window=window, stride=stride)
        found.append(("validation during training and at the end, test (`all_results.json`, `metrics.jsonl`; "
                      "hwlm-train's evaluation)", text))
    if (run / "eval.log").is_file():
        command = (run / "eval.log").read_text().splitlines()[0]
        results = json.loads((run / "eval_results.json").read_text())
        if results["eval_method"] == "stream":
            streams = int(_flag(command, "per_device_eval_batch_size", 1)) * int(results.get("num_processes", 1))
            memory = None
            if (run / "hwlm_run.json").is_file():
                overrides = parse_config_overrides(json.loads((run / "hwlm_run.json").read_text())["settings"]
                                                   .get("config_overrides"))
                memory = overrides.get("memory_length"), overrides.get("num_hidden_layers")
            text = describe_protocol("stream", streams=streams, memory_length=memory and memory[0],
                                     num_layers=memory and memory[1])
        elif results["eval_method"] == "chunks":  # hwlm-eval --eval_protocol chunks: chunk = --eval_window or --bptt
            text = describe_protocol("chunks", streams=int(_flag(command, "per_device_eval_batch_size", 1)),
                                     window=int(_flag(command, "eval_window", _flag(command, "bptt", 100))))
        else:
            text = describe_protocol("sliding_window", window=int(_flag(command, "eval_window")),
                                     stride=int(_flag(command, "eval_stride")))
        tune = _flag(command, "tune_max_tokens")
        tuned = (f"; settings tuned on the first {int(tune):,} validation tokens read the same way" if tune
                 else "")
        methods = ": plain, neural cache, dynamic evaluation" if "--neural_cache" in command or \
            "--dynamic_eval" in command else ""
        found.append((f"`eval_results.json` (hwlm-eval, command in `eval.log`{methods})", text + tuned))
    if (run / "run.json").is_file():  # a reference run from pytorch/examples' word_language_model
        record = json.loads((run / "run.json").read_text())
        streams = int(re.search(r"eval batch (\d+)", record["env"]).group(1))
        chunk = int(re.search(r"bptt (\d+)", record["env"]).group(1))
        found.append(("validation per epoch and test (`run.json`, `train.log`; the example's own `evaluate()`)",
                      describe_protocol("chunks", streams=streams, window=chunk) + "; the example drops the tail "
                      f"that does not fill {streams} equal streams and does not score the first token of each"))
    if (run / "course.json").is_file():
        settings = json.loads((run / "course.json").read_text())["settings"]
        windows, length = int(settings["max_eval_windows"]), int(settings["bptt"])
        found.append(("validation perplexity, past only (`course.json`)",
                      f"the first {windows} disjoint {length}-token windows of the validation split "
                      f"({windows * length:,} targets of one stream, not the whole split): "
                      + describe_protocol("sliding_window", window=length, stride=length).split(": ", 1)[1]
                      + "; the training perplexity is the mean training loss of the last 25 steps, with dropout"))
    if (run / "protocols.json").is_file():
        for entry in json.loads((run / "protocols.json").read_text())["protocols"]:
            found.append((entry["figures"], describe_protocol(entry["protocol"], streams=entry.get("streams", 1),
                                                              window=entry.get("window"), stride=entry.get("stride"))))
    if (run / "bench_small_job.json").is_file():  # bench/bench_small_job.py: both sides' LSTMs, their own evaluation
        streams = 10  # upstream main.py's eval_batch_size; hwlm-train is given --per_device_eval_batch_size 10
        carried = describe_protocol("stream", streams=streams)
        found.append(("the upstream side's test perplexity (`bench_small_job.json`, its `main.py` `evaluate()`)",
                      carried + f"; the example drops the tail that does not fill {streams} equal streams and does not "
                      "score the first token of each"))
        found.append(("the hwlm side's test perplexity (`bench_small_job.json`, hwlm-train's evaluation)", carried))
    if not found:
        raise FileNotFoundError(f"{str(run)!r} holds none of hwlm_run.json, eval.log, run.json, course.json, "
                                "protocols.json, bench_small_job.json: nothing says how its figures were measured")
    return found


def protocol_section(run: str | Path) -> str:
    """The generated Markdown block (markers included) stating how ``run``'s figures were measured."""
    lines = [PROTOCOL_BEGIN, "**Evaluation protocol** (perplexity per token, `<eos>` included):", ""]
    lines += [f"- {figures}: {text}." for figures, text in run_protocols(run)]
    return "\n".join(lines + [PROTOCOL_END])


def update_protocol_sections(results_dir: str | Path, *, check: bool = False) -> list[Path]:
    """Write (or, with ``check``, only compare) the generated protocol block of every ``README.md`` under
    ``results_dir``: replaced between its markers, or appended before the closing "Files:" paragraph.

    Returns the READMEs that were (or, with ``check``, would be) changed.
    """
    changed = []
    for readme in sorted(Path(results_dir).glob("*/README.md")):
        text = readme.read_text()
        block = protocol_section(readme.parent)
        if PROTOCOL_BEGIN in text:
            head, rest = text.split(PROTOCOL_BEGIN, 1)
            tail = rest.split(PROTOCOL_END, 1)[1]
            new = head + block + tail
        elif "\nFiles: " in text:
            head, tail = text.rsplit("\nFiles: ", 1)
            new = head.rstrip("\n") + "\n\n" + block + "\n\nFiles: " + tail
        else:
            new = text.rstrip("\n") + "\n\n" + block + "\n"
        if new != text:
            changed.append(readme)
            if not check:
                readme.write_text(new)
    return changed
