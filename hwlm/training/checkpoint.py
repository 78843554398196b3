"""Crash-safe training checkpoints on top of ``accelerator.save_state``.

Layout under ``<output_dir>/checkpoints/``::

    step_00000120/            a complete checkpoint (accelerate state + hwlm_state.json + hwlm_checkpoint.json)
    step_00000240/
    step_00000180-branch1/    a run resumed from an older checkpoint continues on a new branch; the older
                              timeline's checkpoints are kept, and ``latest`` is the newest of the newest branch
    .tmp-step_00000360/       a write in progress (or one that crashed): never resumed from

hwlm's own state (step, position, curves, schedule progress, settings) is JSON (``hwlm_state.json``) and each
process's carried recurrent state is ``carried_rank{r}.safetensors``: nothing of hwlm's is pickled, and on
resume every pickle-based file of accelerate's is first read with ``weights_only=True`` (``validate_checkpoint(
path, deep=True)``), so a crafted file in a checkpoint folder is refused instead of run.

A checkpoint is written into a temporary folder, its manifest (``hwlm_checkpoint.json``: step, epoch,
and the size of every file) is written last, and only then is the folder renamed to its final name.
A crash at any point leaves the previous checkpoints untouched and usable. The manifest lets
:func:`validate_checkpoint` detect partial or truncated checkpoints before any compute is spent.
The folders of several processes must be on a shared filesystem (as accelerate itself requires): each
checkpoint checks that the main process sees every rank's files (`check_shared_folder`), and a resume refuses a
checkpoint that lacks a rank's files.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from torch.utils import _pytree as pytree

from hwlm.errors import UserError

__all__ = [
    "CheckpointError",
    "MANIFEST_NAME",
    "checkpoint_dir",
    "find_latest_checkpoint",
    "list_checkpoints",
    "resolve_checkpoint",
    "save_checkpoint",
    "validate_checkpoint",
    "checkpoint_branch",
    "check_shared_folder",
    "save_carried",
    "load_carried",
    "STATE_NAME",
    "quiet_tied_weights",
    "tied_parameter_names",
]

MANIFEST_NAME = "hwlm_checkpoint.json"
STATE_NAME = "hwlm_state.json"
_STEP_RE = re.compile(r"^step_(\d+)(?:-branch(\d+))?$")


class CheckpointError(UserError):
    """A checkpoint is missing, partial or corrupt."""


def checkpoint_dir(output_dir: str | os.PathLike) -> Path:
    return Path(output_dir) / "checkpoints"


def _key(path: Path) -> tuple[int, int] | None:
    m = _STEP_RE.match(path.name)
    return (int(m.group(2) or 0), int(m.group(1))) if m else None


def checkpoint_branch(path: str | os.PathLike) -> int:
    """The branch a checkpoint folder belongs to (0 for the first timeline)."""
    key = _key(Path(path))
    return key[0] if key else 0


def list_checkpoints(output_dir: str | os.PathLike, branch: int | None = None) -> list[Path]:
    """Complete-looking checkpoint folders, oldest first (by branch, then step); only ``branch`` if given.

    Temporary folders are skipped.
    """
    root = checkpoint_dir(output_dir)
    if not root.is_dir():
        return []
    found = [(k, p) for p in root.iterdir() if p.is_dir() and (k := _key(p)) is not None]
    return [p for k, p in sorted(found) if branch is None or k[0] == branch]


def find_latest_checkpoint(output_dir: str | os.PathLike) -> Path | None:
    """The newest checkpoint of the newest branch under ``output_dir/checkpoints``, or None."""
    ckpts = list_checkpoints(output_dir)
    return ckpts[-1] if ckpts else None


def validate_checkpoint(path: str | os.PathLike, deep: bool = False) -> dict[str, Any]:
    """Check that ``path`` is a complete checkpoint; return its manifest.

    With ``deep=True`` every pickle-based file (``*.bin``, ``*.pkl``) is also read with ``weights_only=True``
    (tensors, numbers, containers and numpy arrays only), and hwlm's own state must be JSON.

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
    _check_every_rank(path)
    if deep:
        _check_no_arbitrary_pickles(path)
    return manifest


def _check_every_rank(path: Path) -> None:
    """A checkpoint of an N-process run holds the RNG state of every rank (one written on unshared folders by an
    older hwlm does not: resuming from it would silently reset the other ranks' carried state)."""
    try:
        processes = int(json.loads((path / STATE_NAME).read_text())["settings"]["num_processes"])
    except (OSError, ValueError, KeyError, TypeError):
        return
    missing = sorted(set(range(processes)) - _rank_files(path))
    if missing and _rank_files(path):
        raise CheckpointError(
            f"checkpoint {str(path)!r} of a {processes}-process run lacks the files of rank(s) {missing} (it was "
            "written into an --output_dir that the machines did not share), so their state would silently restart. "
            "Resume from a checkpoint written into a shared --output_dir, or start the run again."
        )


def _check_no_arbitrary_pickles(path: Path) -> None:
    from accelerate.utils import load

    if not (path / STATE_NAME).is_file():
        raise CheckpointError(
            f"checkpoint {str(path)!r} has no {STATE_NAME}: it was written by an older hwlm that pickled its state, "
            "which hwlm no longer loads. Start a new run (or resume from a checkpoint written by this version)."
        )
    for f in sorted(path.rglob("*")):
        if f.suffix in (".bin", ".pkl", ".pt") and f.is_file():
            try:
                load(str(f), map_location="cpu", weights_only=True)
            except Exception as err:  # UnpicklingError, or what a crafted file raises
                raise CheckpointError(
                    f"checkpoint {str(path)!r}: {f.name!r} holds objects other than tensors, numbers and containers, "
                    f"so loading it would run code from the file; refusing it ({type(err).__name__}). Resume from "
                    "a checkpoint you trust."
                ) from err


def resolve_checkpoint(value: str, output_dir: str | os.PathLike, deep: bool = False) -> Path:
    """Turn ``--resume_from_checkpoint`` (a folder or ``latest``) into a validated checkpoint folder
    (``deep``: see `validate_checkpoint`)."""
    if value == "latest":
        latest = find_latest_checkpoint(output_dir)
        if latest is None:
            raise CheckpointError(
                f"--resume_from_checkpoint latest: no checkpoint under {str(checkpoint_dir(output_dir))!r}"
            )
        path = latest
    else:
        path = Path(value)
    validate_checkpoint(path, deep=deep)
    return path


def _manifest(folder: Path, meta: dict[str, Any]) -> dict[str, Any]:
    files = {
        str(p.relative_to(folder)): p.stat().st_size for p in sorted(folder.rglob("*")) if p.is_file()
    }
    return {**meta, "files": files}


def save_checkpoint(
    accelerator,
    output_dir: str | os.PathLike,
    step: int,
    meta: dict[str, Any],
    keep_last: int,
    *,
    branch: int = 0,
    write_extra: Callable[[Path], None] | None = None,
) -> Path:
    """Save the accelerate state atomically as ``checkpoints/step_{step}[-branch{b}]``; keep the newest ``keep_last``
    of that branch (other branches are never deleted).

    Must be called on every process (``save_state`` writes per-process RNG states). ``write_extra(folder)`` runs
    on every process after ``save_state`` and before the manifest (hwlm's JSON state, per-rank carried state).
    """
    root = checkpoint_dir(output_dir)
    name = f"step_{step:08d}" + (f"-branch{branch}" if branch else "")
    final = root / name
    tmp = root / f".tmp-{name}"
    if accelerator.is_main_process:
        root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    if write_extra is not None:
        write_extra(tmp)
    accelerator.wait_for_everyone()
    check_shared_folder(accelerator, tmp)
    if accelerator.is_main_process:
        manifest = _manifest(tmp, {"step": step, "branch": branch, **meta})
        with open(tmp / MANIFEST_NAME, "w") as fh:
            json.dump(manifest, fh, indent=2)
            fh.flush()
            os.fsync(fh.fileno())
        if final.exists():  # e.g. an interrupt right after a periodic save of the same step
            old = root / f".old-{name}"
            shutil.rmtree(old, ignore_errors=True)
            os.rename(final, old)
            os.rename(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, final)
        for stale in list_checkpoints(output_dir, branch=branch)[: -max(keep_last, 1)]:
            shutil.rmtree(stale, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def _rank_files(folder: Path) -> set[int]:
    """The ranks whose RNG state (``random_states_{r}.pkl``, written by every process's ``save_state``) is here."""
    found = (re.fullmatch(r"random_states_(\d+)\.pkl", p.name) for p in folder.iterdir()) if folder.is_dir() else ()
    return {int(m.group(1)) for m in found if m}


def check_shared_folder(accelerator, folder: Path) -> None:
    """After every process saved into ``folder``: the main process must see every rank's files there.

    On several machines ``--output_dir`` must be one folder shared by all of them (as accelerate requires); with
    a local folder on each, rank r's files land in its own copy, a resume from the main copy would silently reset
    rank r's carried state, and ``.tmp-step_*`` folders pile up on the other machines. Every process raises alike
    (the main process's finding is broadcast) and removes its unshared temporary copy.

    Raises:
        CheckpointError: naming the missing ranks and the fix.
    """
    from accelerate.utils import broadcast_object_list

    missing = None
    if accelerator.is_main_process:
        missing = sorted(set(range(accelerator.num_processes)) - _rank_files(folder))
    if accelerator.num_processes > 1:
        missing = broadcast_object_list([missing])[0]
    if not missing:
        return
    shutil.rmtree(folder, ignore_errors=True)  # each machine's own copy of the partial checkpoint
    raise CheckpointError(
        f"the checkpoint files of rank(s) {missing} are not in {str(folder.parent)!r} as the main process sees it: "
        "--output_dir is not one folder shared by every machine. Training on several machines needs the same "
        "--output_dir path on a shared filesystem (NFS, Lustre, ...) on all of them; see the README, 'Several "
        "machines'."
    )


def save_carried(folder: str | os.PathLike, rank: int, carried: Any) -> None:
    """
    Write one process's carried state (a model's `cache` object) as ``carried_rank{rank}.safetensors``: its tensors
    (the pytree leaves) and, in the file's metadata, its pytree structure, so resume rebuilds the same object
    without knowing its class. Nothing is written when there is no state. Only types registered as pytree nodes
    (hwlm's `RecurrentState`, `SegmentMemory`) can be rebuilt: nothing is unpickled.
    """
    if carried is None:
        return
    from safetensors.torch import save_file

    leaves, spec = pytree.tree_flatten(carried)
    save_file(
        {str(i): t.detach().cpu().contiguous() for i, t in enumerate(leaves)},
        str(Path(folder) / f"carried_rank{rank}.safetensors"),
        metadata={"treespec": pytree.treespec_dumps(spec)},
    )


def load_carried(folder: str | os.PathLike, rank: int, device: torch.device | str = "cpu") -> Any:
    """This process's carried state from a checkpoint, rebuilt on ``device`` (``None`` when it holds none)."""
    path = Path(folder) / f"carried_rank{rank}.safetensors"
    if not path.is_file():
        return None
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        spec = (f.metadata() or {}).get("treespec")
        leaves = [f.get_tensor(str(i)).to(device) for i in range(len(f.keys()))]
    if spec is None:
        raise CheckpointError(
            f"{path} holds no pytree structure: it was written by an older hwlm. Resume from a checkpoint written by "
            "this version, or start the run again."
        )
    return pytree.tree_unflatten(leaves, pytree.treespec_loads(spec))




class _TiedWeightsFilter(logging.Filter):
    """Drop accelerate's "Removed shared tensor {...} while saving" when every name it lists is a tied weight."""

    def __init__(self, tied: set[str]):
        super().__init__()
        self.tied = tied

    def filter(self, record: logging.LogRecord) -> bool:
        found = re.search(r"Removed shared tensor \{(.*?)\} while saving", record.getMessage())  # after "[RANK r] "
        if not found:
            return True
        names = set(re.findall(r"'([^']+)'", found.group(1)))
        return not (names and names <= self.tied)


def tied_parameter_names(model: torch.nn.Module) -> set[str]:
    """Names of parameters that share their tensor with another parameter (e.g. a head tied to the embedding)."""
    by_tensor: dict[int, list[str]] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        by_tensor.setdefault(id(param), []).append(name)
    return {name for names in by_tensor.values() if len(names) > 1 for name in names}


@contextmanager
def quiet_tied_weights(model: torch.nn.Module) -> Iterator[None]:
    """Silence accelerate's warning about shared tensors while saving ``model``'s tied weights, and only that.

    safetensors cannot hold two names for one tensor, so ``save_state`` keeps one of a tied pair and warns on every
    checkpoint. For weights the model ties by design the removal is the intended result (loading re-ties them);
    any other shared tensor is still reported.
    """
    tied = tied_parameter_names(model)
    logger = logging.getLogger("accelerate.utils.other")
    filt = _TiedWeightsFilter(tied)
    logger.addFilter(filt)
    try:
        yield
    finally:
        logger.removeFilter(filt)
