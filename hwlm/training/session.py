"""The parts of a training run around the loop: launch checks, the output folder's claim, hwlm's own
checkpoint state (JSON + safetensors, never pickles), resume branches and divergence checks.

Kept out of ``loop.py`` so that the loop reads as the loop.
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path
from typing import Any

from hwlm.training.checkpoint import (
    STATE_NAME,
    checkpoint_branch,
    find_latest_checkpoint,
    list_checkpoints,
    load_carried,
    save_carried,
)
from hwlm.training.outputs import OutputDirError, OutputLock, clear_written, record_written
from hwlm.training.run import TRAIN_WRITES

__all__ = [
    "BEST_RECORD",
    "USELESS_LOSS_FACTOR",
    "set_aside_future_best",
    "check_launch",
    "claim_output_dir",
    "is_useless_loss",
    "next_branch",
    "owned_by_train",
    "process_table",
    "start_accelerator",
    "StartupTimeout",
    "restore_state",
    "state_writer",
]

BEST_RECORD = "hwlm_best.json"  # in best_model/: the step (and branch) whose weights the folder holds

# A model that guesses uniformly scores ln(vocab_size); a loss several times that is no model at all, even
# when it is finite (a perplexity of 1e300 is a diverged run, not a result).
USELESS_LOSS_FACTOR = 3.0


def is_useless_loss(loss: float, vocab_size: int) -> bool:
    """True for a NaN/inf loss or one above ``USELESS_LOSS_FACTOR * ln(vocab_size)``."""
    return not math.isfinite(loss) or loss > USELESS_LOSS_FACTOR * math.log(max(vocab_size, 2))


def check_launch(accelerator) -> None:
    """Refuse a multi-process launch that accelerate turned into independent single-process copies.

    ``accelerate launch --multi_gpu`` on a machine without GPUs starts N processes with ``WORLD_SIZE=N``, but
    unless ``ACCELERATE_USE_CPU=1`` is set each one runs alone, all writing into one folder.
    """
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world > 1 and accelerator.num_processes == 1:
        raise ValueError(
            f"launched as {world} processes (WORLD_SIZE={world}) but accelerate set up a single-process run, so "
            f"{world} independent copies would train into one folder. On CPUs launch with "
            f"ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes {world} ...; on GPUs check that "
            "torch sees them (torch.cuda.device_count())."
        )


# entries hwlm-train writes besides TRAIN_WRITES: the model code save_pretrained copies (a file of hwlm/models),
# an abandoned timeline's copies (resume), and accelerate's tracker folders (--with_tracking)
_TIMELINE_COPIES = re.compile(r"^(metrics-before-branch\d+\.jsonl|best_model-before-branch\d+)$")
_TRACKER_DIRS = ("hwlm", "runs")


def owned_by_train(name: str) -> bool:
    """True for a top-level name hwlm-train itself writes into its output folder (recorded in its marker)."""
    import hwlm.models

    if name in TRAIN_WRITES or name in _TRACKER_DIRS or _TIMELINE_COPIES.match(name):
        return True
    return name.endswith(".py") and (Path(hwlm.models.__file__).parent / name).is_file()


class StartupTimeout(ValueError):
    """The other processes of a multi-process run did not join within ``--ddp_timeout`` seconds."""


def start_accelerator(args, **kwargs):
    """The run's `accelerate.Accelerator`, whose process group waits at most ``args.ddp_timeout`` seconds for
    the other processes (a machine that failed before start-up ends this one instead of hanging it for the
    default 30 minutes). A start-up that times out is a one-line `StartupTimeout`.
    """
    from datetime import timedelta

    from accelerate import Accelerator
    from accelerate.utils import InitProcessGroupKwargs

    timeout = InitProcessGroupKwargs(timeout=timedelta(seconds=args.ddp_timeout))
    try:
        return Accelerator(kwargs_handlers=[timeout], **kwargs)
    except RuntimeError as err:  # torch's DistNetworkError / DistStoreError are RuntimeErrors
        if "timeout" not in str(err).lower() and "timed out" not in str(err).lower():
            raise
        world = os.environ.get("WORLD_SIZE", "?")
        raise StartupTimeout(
            f"the other processes of this {world}-process run did not join within --ddp_timeout {args.ddp_timeout} "
            f"s ({type(err).__name__}); a machine failed before start-up or cannot reach MASTER_ADDR "
            f"{os.environ.get('MASTER_ADDR', '?')}:{os.environ.get('MASTER_PORT', '?')}. See the other machines' "
            "errors; every machine needs the same files and paths (README, 'Several machines')."
        ) from None


def process_table(accelerator) -> list[dict]:
    """``[{"rank", "pid", "host", "device"}]`` of every process of the run (gathered; the same on every rank)."""
    import socket

    from accelerate.utils import gather_object

    me = {"rank": accelerator.process_index, "pid": os.getpid(), "host": socket.gethostname(),
          "device": str(accelerator.device)}
    return gather_object([me]) if accelerator.num_processes > 1 else [me]


def claim_output_dir(accelerator, args, *, marker: str, writes: tuple, check, resume: bool, payload: dict):
    """On the main process: create the folder, take its lock, re-check it under the lock, clear the previous
    run's files for ``--overwrite_output_dir``, and record what this run will write. Returns the lock (main
    process) or None; every process raises the main process's `OutputDirError` alike.
    """
    from accelerate.utils import broadcast_object_list

    out = Path(args.output_dir)
    lock, error = None, None
    if accelerator.is_main_process:
        try:
            out.mkdir(parents=True, exist_ok=True)
            lock = OutputLock(out, "hwlm-train").acquire()
            check(args)  # again, now that no other run can write here
            if args.overwrite_output_dir and not resume:
                clear_written(out, marker, legacy=writes)
            new = [n for n in writes if not (out / n).exists()]
            record_written(out, marker, new, payload=payload)
        except (OutputDirError, OSError) as err:  # every error, so no other rank waits for a broadcast forever
            error = str(err)
            if lock is not None:
                lock.release()
                lock = None
    error = broadcast_object_list([error])[0] if accelerator.num_processes > 1 else error
    if error:
        raise OutputDirError(error)
    return lock


def next_branch(resume_path: Path, output_dir: Path) -> tuple[int, bool]:
    """``(branch, new)``: resuming from the newest checkpoint continues its branch; from an older one starts
    a new branch after the highest existing, so the older timeline's checkpoints are neither overwritten
    nor pruned and ``latest`` follows the new one."""
    latest = find_latest_checkpoint(output_dir)
    if latest is not None and Path(resume_path).resolve() == latest.resolve():
        return checkpoint_branch(resume_path), False
    if latest is None:  # a checkpoint from another folder
        return checkpoint_branch(resume_path), False
    return max(checkpoint_branch(p) for p in list_checkpoints(output_dir)) + 1, True


def state_writer(accelerator, state, scheduler, settings: dict):
    """``write_extra`` for `save_checkpoint`: hwlm's state as JSON (main process) and this process's carried
    recurrent state as safetensors (every process: each rank carries its own streams)."""

    def write(folder: Path) -> None:
        if accelerator.is_main_process:
            payload = {"trainer": state.state_dict(), "scheduler": scheduler.state_dict(),
                       "scheduler_kind": settings.get("lr_scheduler_type"), "settings": settings}
            (folder / STATE_NAME).write_text(json.dumps(payload, indent=2, default=str))
        save_carried(folder, accelerator.process_index, state.carried)

    return write


def restore_state(saved: dict[str, Any], resume_path: Path, state, scheduler, args, rank: int, device="cpu") -> None:
    """Restore the trainer state, this rank's carried state (on ``device``) and the schedule's progress from a
    checkpoint.

    The schedule's rates are recomputed from this run's flags; when ``--lr_scheduler_type`` changed, the new
    schedule starts from the run's position (step, epoch, best loss) instead of the old schedule's state.
    """
    state.load_state_dict(saved["trainer"])
    state.carried = load_carried(resume_path, rank, device)
    progress: dict[str, Any] = {"step": state.global_step, "epoch": state.epoch, "best": state.best_valid_loss,
                                "num_decays": 0}
    if saved.get("scheduler_kind") == args.lr_scheduler_type:
        progress.update(saved.get("scheduler") or {})
    scheduler.load_state_dict(progress)


def best_from_another_future(best_dir: Path, step: int) -> bool:
    """True when ``best_dir`` was written after optimiser step ``step`` (by the timeline being abandoned)."""
    try:
        record = json.loads((best_dir / BEST_RECORD).read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return record.get("step", -1) > step


def set_aside_future_best(accelerator, best_dir: Path, state, branch: int) -> Path | None:
    """On a resume whose timeline differs from the one that wrote ``best_dir`` after the checkpoint (a new branch,
    or changed flags), move ``best_dir`` aside (main process) and forget the best loss (every process): its
    weights come from a future this run will not replay, so `finish` must not publish them. Returns the new
    place of the folder, or None.
    """
    future = best_from_another_future(best_dir, state.global_step)
    accelerator.wait_for_everyone()  # every rank has read the record before the main process moves it
    if not future:
        return None
    aside = best_dir.with_name(f"{best_dir.name}-before-branch{branch}")
    if accelerator.is_main_process:
        if aside.exists():
            import shutil

            shutil.rmtree(aside)
        os.rename(best_dir, aside)
    state.best_valid_loss, state.best_step = float("inf"), -1
    accelerator.wait_for_everyone()
    return aside
