"""Crash-safe training checkpoints on top of ``accelerator.save_state``.

Layout under ``<output_dir>/checkpoints/``::

    step_00000120/            a complete checkpoint (accelerate state + hwlm_checkpoint.json)
    step_00000240/
    .tmp-step_00000360/       a write in progress (or one that crashed): never resumed from

A checkpoint is written into a temporary folder, its manifest (``hwlm_checkpoint.json``: step, epoch,
and the size of every file) is written last, and only then is the folder renamed to its final name.
A crash at any point leaves the previous checkpoints untouched and usable. The manifest lets
:func:`validate_checkpoint` detect partial or truncated checkpoints before any compute is spent.
The folders of several processes must be on a shared filesystem (as accelerate itself requires).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "CheckpointError",
    "MANIFEST_NAME",
    "checkpoint_dir",
    "find_latest_checkpoint",
    "list_checkpoints",
    "resolve_checkpoint",
    "save_checkpoint",
    "validate_checkpoint",
    "state_tensors",
    "load_state_tensors",
]

MANIFEST_NAME = "hwlm_checkpoint.json"
_STEP_RE = re.compile(r"^step_(\d+)$")


class CheckpointError(ValueError):
    """A checkpoint is missing, partial or corrupt."""


def checkpoint_dir(output_dir: str | os.PathLike) -> Path:
    return Path(output_dir) / "checkpoints"


def list_checkpoints(output_dir: str | os.PathLike) -> list[Path]:
    """Complete-looking checkpoint folders (``step_N``), oldest first. Temporary folders are skipped."""
    root = checkpoint_dir(output_dir)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := _STEP_RE.match(p.name))]
    return [p for _, p in sorted(found)]


def find_latest_checkpoint(output_dir: str | os.PathLike) -> Path | None:
    """The newest ``step_N`` folder under ``output_dir/checkpoints`` or None."""
    ckpts = list_checkpoints(output_dir)
    return ckpts[-1] if ckpts else None


def validate_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Check that ``path`` is a complete checkpoint; return its manifest.

    Raises:
        CheckpointError: the folder is missing, has no manifest (a write that never finished), lacks a file
            the manifest lists, holds a file of the wrong size (truncated), or a safetensors file whose
            header does not parse.
    """
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    manifest_path = path / MANIFEST_NAME
    if not manifest_path.is_file():
        raise CheckpointError(
            f"checkpoint {str(path)!r} is partial: it has no {MANIFEST_NAME}, so its write never finished. "
            "Resume from an earlier checkpoint (or --resume_from_checkpoint latest, which skips it)."
        )
    try:
        manifest = json.loads(manifest_path.read_text())
    except json.JSONDecodeError as err:
        raise CheckpointError(f"checkpoint {str(path)!r} is corrupt: {MANIFEST_NAME} is not JSON ({err})") from err
    for name, size in manifest.get("files", {}).items():
        f = path / name
        if not f.is_file():
            raise CheckpointError(f"checkpoint {str(path)!r} is corrupt: file {name!r} listed in {MANIFEST_NAME} is missing")
        actual = f.stat().st_size
        if actual != size:
            raise CheckpointError(
                f"checkpoint {str(path)!r} is corrupt: {name!r} has {actual} bytes, the manifest says {size} "
                "(truncated or overwritten). Resume from an earlier checkpoint."
            )
        if name.endswith(".safetensors"):
            from safetensors import safe_open

            try:
                with safe_open(str(f), framework="pt") as handle:
                    handle.keys()
            except Exception as err:  # safetensors raises several error types
                raise CheckpointError(f"checkpoint {str(path)!r} is corrupt: {name!r} does not parse ({err})") from err
    return manifest


def resolve_checkpoint(value: str, output_dir: str | os.PathLike) -> Path:
    """Turn ``--resume_from_checkpoint`` (a folder or ``latest``) into a validated checkpoint folder."""
    if value == "latest":
        latest = find_latest_checkpoint(output_dir)
        if latest is None:
            raise CheckpointError(
                f"--resume_from_checkpoint latest: no checkpoint under {str(checkpoint_dir(output_dir))!r}"
            )
        path = latest
    else:
        path = Path(value)
    validate_checkpoint(path)
    return path


def _manifest(folder: Path, meta: dict[str, Any]) -> dict[str, Any]:
    files = {
        str(p.relative_to(folder)): p.stat().st_size for p in sorted(folder.rglob("*")) if p.is_file()
    }
    return {**meta, "files": files}


def save_checkpoint(accelerator, output_dir: str | os.PathLike, step: int, meta: dict[str, Any], keep_last: int) -> Path:
    """Save the accelerate state atomically as ``checkpoints/step_{step}``; keep the newest ``keep_last``.

    Must be called on every process (``save_state`` writes per-process RNG states).
    """
    root = checkpoint_dir(output_dir)
    final = root / f"step_{step:08d}"
    tmp = root / f".tmp-step_{step:08d}"
    if accelerator.is_main_process:
        root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        manifest = _manifest(tmp, {"step": step, **meta})
        with open(tmp / MANIFEST_NAME, "w") as fh:
            json.dump(manifest, fh, indent=2)
            fh.flush()
            os.fsync(fh.fileno())
        if final.exists():  # e.g. an interrupt right after a periodic save of the same step
            old = root / f".old-step_{step:08d}"
            shutil.rmtree(old, ignore_errors=True)
            os.rename(final, old)
            os.rename(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, final)
        for stale in list_checkpoints(output_dir)[: -max(keep_last, 1)]:
            shutil.rmtree(stale, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def state_tensors(obj: Any) -> list[torch.Tensor]:
    """The tensors inside a recurrent state object, in a fixed traversal order.

    Works for tensors, tuples/lists/dicts of them and objects whose attributes hold them, so the training
    loop can checkpoint whatever state object a model returns without knowing its class (and without pickling).
    """
    if obj is None:
        return []
    if torch.is_tensor(obj):
        return [obj]
    if isinstance(obj, (list, tuple)):
        return [t for item in obj for t in state_tensors(item)]
    if isinstance(obj, dict):
        return [t for key in sorted(obj, key=str) for t in state_tensors(obj[key])]
    if hasattr(obj, "__dict__"):
        return [t for key in sorted(vars(obj)) for t in state_tensors(vars(obj)[key])]
    return []


def load_state_tensors(template: Any, tensors: list[torch.Tensor]) -> Any:
    """Copy ``tensors`` into the tensors of ``template`` (same structure, e.g. a fresh state); return it."""
    targets = state_tensors(template)
    if len(targets) != len(tensors) or any(t.shape != s.shape for t, s in zip(targets, tensors)):
        raise CheckpointError(
            "the recurrent state saved in the checkpoint does not match the model's state layout "
            f"({[tuple(s.shape) for s in tensors]} vs {[tuple(t.shape) for t in targets]}); "
            "was the checkpoint written with another batch size or model?"
        )
    with torch.no_grad():
        for t, s in zip(targets, tensors):
            t.copy_(s.to(t.device, t.dtype))
    return template
