"""What one training run is: its resumable state, its objects (`Run`) and the files it writes.

`hwlm.training.setup` builds a `Run`, `hwlm.training.loop` trains it, `hwlm.training.export` writes its model
folder; each reads and updates the same object, as litgpt's ``setup -> fit -> validate`` share one state.
"""

from __future__ import annotations

import json
import math
import signal
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator

__all__ = [
    "RUN_FILE", "METRICS_FILE", "CURVES_FILE", "BEST_DIR", "TRAIN_WRITES", "MUTABLE_WITHOUT_EFFECT",
    "TrainingDiverged", "TrainerState", "StopRequest", "Run", "write_metrics", "plot_curves", "no_library_bars",
]

RUN_FILE = "hwlm_run.json"
METRICS_FILE = "metrics.jsonl"
CURVES_FILE = "curves.png"
BEST_DIR = "best_model"
BEST_RECORD = "hwlm_best.json"  # in best_model/: the step (and branch) whose weights the folder holds
# top-level names hwlm-train writes (model code files are recorded as they appear)
TRAIN_WRITES = (
    RUN_FILE, "checkpoints", BEST_DIR, METRICS_FILE, "all_results.json", CURVES_FILE, "README.md", "config.json",
    "model.safetensors", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
    "special_tokens_map.json",
)
# resume changes that leave the trajectory as it was (a replay rewrites best_model identically)
MUTABLE_WITHOUT_EFFECT = ("logging_steps", "disable_tqdm", "with_tracking", "report_to", "stop_after_steps",
                          "push_to_hub", "hub_model_id", "hub_private_repo", "license", "save_total_limit",
                          "checkpointing_steps", "preprocessing_num_workers", "overwrite_cache", "ddp_timeout")


class TrainingDiverged(RuntimeError):
    """The loss (or the weights) became NaN or infinite."""


@dataclass
class TrainerState:
    """What the loop needs, beyond accelerate's state, to continue a run exactly (saved in checkpoints)."""

    global_step: int = 0
    epoch: int = 0
    next_window: int = 0  # first micro-batch of ``epoch`` not yet trained on
    best_valid_loss: float = float("inf")
    best_step: int = -1
    train_curve: list = field(default_factory=list)  # [step, loss]
    valid_curve: list = field(default_factory=list)  # [step, perplexity]
    carried: Any = None  # the model's carried state (recurrent state, segment memory) at the checkpoint
    cpu_s_before: float = 0.0  # CPU seconds of the processes before this one: a resumed run continues the count

    def cpu_seconds(self) -> float:
        """The run's CPU seconds so far (every thread counted): earlier processes' plus this process's."""
        return self.cpu_s_before + time.process_time()

    def state_dict(self) -> dict:
        """Everything but ``carried`` (saved per process as safetensors), as JSON-able values; ``cpu_s_before`` is
        the count so far, where the process that resumes from it starts."""
        state = {k: v for k, v in asdict(self).items() if k != "carried"}
        state["cpu_s_before"] = round(self.cpu_seconds(), 2)
        return state

    def load_state_dict(self, state: dict) -> None:
        for key, value in state.items():
            if key != "carried":
                setattr(self, key, value)


class StopRequest:
    """Set by SIGINT/SIGTERM (or ``--stop_after_steps``); the loop reads it between optimiser steps and turns it
    into accelerate's cross-rank trigger, so a signal to one rank stops every rank at the same step."""

    def __init__(self):
        self.requested = False
        self.signal_name = None
        self.signum = 0  # 0: not a signal (--stop_after_steps)

    def __call__(self, signum, frame):
        self.requested = True
        self.signum = int(signum)
        self.signal_name = signal.Signals(signum).name


@dataclass
class Run:
    """Everything a training run holds between `setup.build_run` and `export.export`.

    ``model`` and ``optimizer`` are accelerate-prepared; ``loader`` is a `hwlm.batching.StreamLoader` or
    ``BlockLoader`` (one batch interface); ``scheduler`` has the `hwlm.training.optim` interface.
    """

    accelerator: Any
    model_args: Any
    data_args: Any
    args: Any
    command: str
    settings: dict
    tokenizer: Any
    prepared: Any
    model: Any
    optimizer: Any
    scheduler: Any
    loader: Any
    valid_tokens: Any  # (N,) validation tokens scored during training
    max_steps: int
    num_epochs: int
    state: TrainerState = field(default_factory=TrainerState)
    branch: int = 0  # checkpoint timeline (a resume from an older checkpoint starts a new one)
    last_checkpoint: Path | None = None
    stop: StopRequest = field(default_factory=StopRequest)
    # the validation result of the weights in best_model/, when this process scored them on the whole split
    best_validation: dict | None = None

    @property
    def out(self) -> Path:
        return Path(self.args.output_dir)

    @property
    def unwrapped(self):
        return self.accelerator.unwrap_model(self.model)

    @property
    def vocab_size(self) -> int:
        return self.unwrapped.config.vocab_size

    @property
    def pad_token_id(self) -> int:
        return self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0

    def evaluation_kwargs(self) -> dict[str, Any]:
        """The `hwlm.evaluation.evaluate_perplexity` settings of this run (batch, window, stride, pad id)."""
        a = self.args
        return dict(accelerator=self.accelerator, batch_size=a.per_device_eval_batch_size, bptt=a.bptt,
                    window=self.data_args.block_size, stride=a.eval_stride, pad_token_id=self.pad_token_id)


def write_metrics(out: Path, record: dict, cpu_s: float | None = None) -> None:
    """Append one JSON record to ``metrics.jsonl``, stamped with the wall clock (``time``, Unix seconds) and the
    run's CPU seconds so far (``cpu_s``, every thread counted; `TrainerState.cpu_seconds`, which continues across
    resumes; this process's by default), so curves can be drawn against CPU time."""
    cpu_s = time.process_time() if cpu_s is None else cpu_s
    stamped = {**record, "time": round(time.time(), 3), "cpu_s": round(cpu_s, 2)}
    with open(out / METRICS_FILE, "a") as fh:
        fh.write(json.dumps(stamped) + "\n")


def plot_curves(state: TrainerState, path: Path) -> None:
    """Write train and validation perplexity against the optimiser step as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    if state.train_curve:
        steps, losses = zip(*state.train_curve)
        ax.plot(steps, [math.exp(min(x, 50)) for x in losses], label="train")
    if state.valid_curve:
        steps, ppl = zip(*state.valid_curve)
        ax.plot(steps, ppl, marker="o", label="validation")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("perplexity")
    ax.set_yscale("log")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


@contextmanager
def no_library_bars() -> Iterator[None]:
    """Turn off transformers' (and huggingface_hub's) progress bars for a save or load inside the run.

    ``save_pretrained`` draws "Writing model shards" and ``from_pretrained`` "Loading weights": one bar per best-model
    save would bury the training bar and the one line per evaluation. The previous setting is restored.
    """
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()
