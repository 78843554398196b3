"""The parts of a training run around the loop: launch checks, the output folder's claim, hwlm's own
checkpoint state (JSON + safetensors, never pickles) and divergence checks. Resume is `hwlm.training.resume`.

Kept out of ``loop.py`` so that the loop reads as the loop.
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path

from hwlm.training.checkpoint import STATE_NAME, save_carried
from hwlm.output_folders import OutputDirError, OutputLock, clear_written, record_written
from hwlm.training.run import BEST_RECORD, TRAIN_WRITES  # noqa: F401  (BEST_RECORD re-exported)
from hwlm.errors import UserError

__all__ = [
    "BEST_RECORD",
    "USELESS_LOSS_FACTOR",
    "check_launch",
    "claim_output_dir",
    "is_useless_loss",
    "owned_by_train",
    "process_table",
    "start_accelerator",
    "StartupTimeout",
    "state_writer",
]

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
        raise UserError(
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


class StartupTimeout(UserError):
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
