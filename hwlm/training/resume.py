"""Resume, in one place: finding and reading the checkpoint, checking what a resumed run may change, restoring its
state, branching its timeline, and repairing the metrics file.

The order `hwlm.training.loop.train` follows: `find_resume_checkpoint` (before any process group), `read_resume`
(settings checked on every rank alike), then `resume_run` once the run is built (weights, optimiser, RNG, trainer
state, this rank's carried state, the schedule, the branch, the metrics).

A checkpoint records the settings of the run that wrote it (``hwlm_state.json``). On resume:

* settings that fix the model, the batch layout or the data (``FIXED_SETTINGS``, the data flags and the
  number of processes) must be unchanged: a change is refused before any compute, naming the flag, both
  values and the fix;
* every other setting (learning rate, schedule, max steps, logging, evaluation, checkpointing) takes
  effect, and the changes are written to ``metrics.jsonl`` as a ``{"type": "resume", ...}`` record;
* the data itself must be the same: the checkpoint records the fingerprint of the token streams it trained on
  (`data_fingerprint`), and a prepared folder re-prepared from other text, or a ``--train_file`` whose content
  changed under the same name, is refused with both fingerprints named.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from hwlm.training.arguments import parse_config_overrides
from hwlm.training.checkpoint import (
    STATE_NAME,
    CheckpointError,
    checkpoint_branch,
    find_latest_checkpoint,
    list_checkpoints,
    load_carried,
    resolve_checkpoint,
)
from hwlm.training.run import BEST_DIR, BEST_RECORD, METRICS_FILE, MUTABLE_WITHOUT_EFFECT, Run, write_metrics
from hwlm.errors import UserError

__all__ = [
    "FIXED_SETTINGS",
    "best_from_another_future",
    "find_resume_checkpoint",
    "next_branch",
    "read_resume",
    "restore_state",
    "resume_run",
    "set_aside_future_best",
    "MUTABLE_DATA_SETTINGS",
    "changed_settings",
    "check_data_fingerprint",
    "check_resume_settings",
    "data_fingerprint",
    "read_checkpoint_state",
    "repair_metrics",
    "truncate_metrics",
]

# model shape, batch layout, data order and optimiser type: a change would silently train another run
FIXED_SETTINGS = (
    "model_type", "config_name", "config_overrides", "model_name_or_path",
    "batching", "bptt", "variable_bptt", "per_device_train_batch_size", "gradient_accumulation_steps",
    "seed", "optimizer", "mixed_precision", "prepared_data_dir", "num_processes",
)
# data flags that do not change the data itself (every other DataArguments field does)
MUTABLE_DATA_SETTINGS = ("preprocessing_num_workers", "overwrite_cache")
# where the run is, not what it is
IGNORED_SETTINGS = ("output_dir", "resume_from_checkpoint", "overwrite_output_dir", "data_fingerprint")


def read_checkpoint_state(path: str | Path) -> dict[str, Any]:
    """The JSON state hwlm saved in a checkpoint (trainer state, schedule progress, settings)."""
    try:
        return json.loads((Path(path) / STATE_NAME).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise CheckpointError(f"checkpoint {str(path)!r}: {STATE_NAME} is missing or not JSON ({err})") from err


def _normal(key: str, value: Any) -> Any:
    return parse_config_overrides(value) if key == "config_overrides" else value


def changed_settings(old: dict[str, Any], new: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``{name: {"from": old, "to": new}}`` for every setting whose value differs (ignoring the folder flags)."""
    changes = {}
    for key in sorted(set(old) | set(new)):
        if key in IGNORED_SETTINGS:
            continue
        a, b = _normal(key, old.get(key)), _normal(key, new.get(key))
        if a != b:
            changes[key] = {"from": old.get(key), "to": new.get(key)}
    return changes


def check_resume_settings(old: dict[str, Any], new: dict[str, Any], data_fields: set[str], checkpoint: Path) -> dict:
    """Refuse changes that cannot apply to a resumed run; return the changes that may (to be recorded).

    Args:
        old / new: flat settings of the checkpoint's run and of this run (``num_processes`` included).
        data_fields: the names of the data settings (``DataArguments`` fields).
        checkpoint: the checkpoint folder, for the message.
    Raises:
        ValueError: a model, batch-layout or data setting differs.
    """
    changes = changed_settings(old, new)
    fixed = set(FIXED_SETTINGS) | (set(data_fields) - set(MUTABLE_DATA_SETTINGS))
    refused = {k: v for k, v in changes.items() if k in fixed}
    if refused:
        what = "; ".join(f"--{k} was {v['from']!r} and is {v['to']!r} now" for k, v in refused.items())
        raise UserError(
            f"cannot resume from {str(checkpoint)!r} with these changes: {what}. They change the model, the batch "
            "layout or the data, so the checkpoint's weights, optimiser and position would not fit. Resume with the "
            "checkpoint's values, or start a new run in another --output_dir."
        )
    return changes


def data_fingerprint(prepared) -> str:
    """A SHA-256 (16 hex digits) of what training reads: the tokenizer's fingerprint, the block size and every
    split's token stream, byte for byte (the token file when there is one, read at disk speed, ~0.8 GB/s).

    Args:
        prepared: a `hwlm.data.PreparedData`.
    """
    digest = hashlib.sha256(f"{prepared.tokenizer_fingerprint}|{prepared.block_size}".encode())
    for split in sorted(prepared.streams):
        digest.update(f"|{split}|".encode())
        path = prepared.token_files.get(split)
        if path is not None and Path(path).is_file():
            with open(path, "rb") as fh:
                digest.update(hashlib.file_digest(fh, "sha256").digest())
        else:
            digest.update(hashlib.sha256(prepared.stream_tensor(split).numpy().tobytes()).digest())
    return digest.hexdigest()[:16]


def check_data_fingerprint(saved_settings: dict[str, Any], fingerprint: str, checkpoint: Path, data: str) -> None:
    """Refuse to resume on data other than the checkpoint's (a checkpoint without a fingerprint is not checked).

    Args:
        saved_settings: the checkpoint's settings (``data_fingerprint`` among them).
        fingerprint (`str`): `data_fingerprint` of the data this run loaded.
        checkpoint: the checkpoint folder; data (`str`): where the data comes from, for the message.
    Raises:
        ValueError: naming both fingerprints and the fix.
    """
    before = saved_settings.get("data_fingerprint")
    if before is None or before == fingerprint:
        return
    raise UserError(
        f"cannot resume from {str(checkpoint)!r}: the training data changed since that checkpoint (data fingerprint "
        f"{before} then, {fingerprint} now, for {data}); the run would continue on other text. Resume with the data "
        "the run started with (re-prepare it from the same files), or start a new run in another --output_dir."
    )


def repair_metrics(path: Path) -> list[dict]:
    """Read ``metrics.jsonl``, dropping a last line cut short by a crash; return the records.

    Raises:
        ValueError: a line other than the last is not JSON (the file was edited or corrupted, not cut).
    """
    if not path.exists():
        return []
    lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
    records = []
    for i, line in enumerate(lines):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as err:
            if i == len(lines) - 1:
                break  # a write cut short by the crash: the resumed run rewrites it
            raise UserError(
                f"{str(path)!r} line {i + 1} is not JSON ({err}); only a cut-off last line is repaired on resume. "
                "Fix or remove that line."
            ) from err
    return records


def truncate_metrics(path: Path, step: int, keep_copy_as: Path | None = None) -> None:
    """Keep the records up to ``step`` (the resumed run rewrites the rest), repairing a cut-off last line.

    With ``keep_copy_as``, the file as it was is first copied there (an abandoned timeline's record).
    """
    records = repair_metrics(path)
    if keep_copy_as is not None and path.exists():
        keep_copy_as.write_text("".join(json.dumps(r) + "\n" for r in records))
    kept = [r for r in records if r.get("step", 0) <= step]
    if path.exists():
        path.write_text("".join(json.dumps(r) + "\n" for r in kept))


def find_resume_checkpoint(args, output_dir: Path) -> Path | None:
    """The checkpoint ``--resume_from_checkpoint`` names (``latest``, a step folder, a path), checked deeply (every
    file present, no arbitrary pickles) before any process group exists; None without the flag."""
    if not args.resume_from_checkpoint:
        return None
    return resolve_checkpoint(args.resume_from_checkpoint, output_dir, deep=True)


def read_resume(resume_path: Path | None, settings: dict[str, Any], data_fields: set[str]) -> tuple[dict | None, dict]:
    """``(saved, changes)``: the checkpoint's saved state and the settings this run changes (refused when they
    may not change; see `check_resume_settings`); ``(None, {})`` for a fresh run."""
    if resume_path is None:
        return None, {}
    saved = read_checkpoint_state(resume_path)
    return saved, check_resume_settings(saved["settings"], settings, data_fields, resume_path)


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


def resume_run(run: Run, resume_path: Path, saved: dict, changes: dict) -> None:
    """Load a checkpoint into the run, apply this run's changeable flags, record the resume and its branch."""
    accelerator, optimizer, out = run.accelerator, run.optimizer, run.out
    # accelerate restores the optimiser's hyper-parameters with its state: keep this run's (weight decay,
    # momentum, betas), which the optimiser was just built from; the schedule then sets the rates
    fresh = [{k: v for k, v in g.items() if k not in ("params", "lr", "initial_lr")} for g in optimizer.param_groups]
    accelerator.load_state(str(resume_path))  # weights, optimiser, RNG: read with weights_only=True
    for group, hyper in zip(optimizer.param_groups, fresh):
        group.update(hyper)
    restore_state(saved, resume_path, run.state, run.scheduler, run.args, accelerator.process_index,
                  accelerator.device)
    branch, new_branch = next_branch(resume_path, out)
    run.branch = branch
    aside = None
    if new_branch or any(k not in MUTABLE_WITHOUT_EFFECT for k in changes):
        aside = set_aside_future_best(accelerator, out / BEST_DIR, run.state, branch)
    accelerator.print(f"resumed from {resume_path} at step {run.state.global_step}"
                      + (f" on new branch {branch} (the later checkpoints are kept)" if new_branch else ""))
    if accelerator.is_main_process:
        keep = out / f"metrics-before-branch{branch}.jsonl" if new_branch else None
        truncate_metrics(out / METRICS_FILE, run.state.global_step, keep_copy_as=keep)
        write_metrics(out, {"type": "resume", "step": run.state.global_step, "from": str(resume_path),
                            "branch": branch, "changed": changes, "lr": run.scheduler.get_last_lr()[0],
                            **({"best_model_set_aside": str(aside)} if aside else {})}, cpu_s=run.state.cpu_seconds())
    accelerator.wait_for_everyone()
