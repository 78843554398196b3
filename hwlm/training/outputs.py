"""Output folders belong to the user: hwlm writes only where it may, records what it wrote, and locks.

A command (``hwlm-train``, ``hwlm-tokenizer``) writes into its ``--output_dir`` only when the folder

* does not exist yet (the command creates it),
* is empty, or
* holds this command's own earlier output, recognised by the command's marker file (``hwlm_run.json``
  for training, ``hwlm_tokenizer.json`` for a tokenizer).

Anything else is refused before any work, naming the files the command would have replaced. The marker's
``"written"`` list holds the top-level entries the command created, so ``--overwrite_output_dir`` removes
exactly those and never a file the user put there.

While a command writes, ``<output_dir>/.hwlm.lock`` holds its process id and host. The lock is an
``fcntl.flock`` on that file, so the operating system releases it when the owner dies (``kill -9``
included): a second run is refused while the owner lives and takes the lock over once it is dead. The
file is removed when the owner exits normally.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import socket
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator

__all__ = [
    "LOCK_NAME",
    "OutputDirError",
    "OutputLock",
    "check_output_dir",
    "clear_written",
    "read_marker",
    "record_written",
    "tracked_writes",
]

LOCK_NAME = ".hwlm.lock"


class OutputDirError(ValueError):
    """``--output_dir`` is not one hwlm may write into (someone else's files, another command, a live lock)."""


def read_marker(folder: str | os.PathLike, marker: str) -> dict | None:
    """The marker's JSON content, or None when the folder has no such marker (or it is not JSON)."""
    path = Path(folder) / marker
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) else None


def _entries(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir() if p.name != LOCK_NAME} if folder.is_dir() else set()


def _written(folder: Path, marker: str, legacy: Iterable[str]) -> list[str]:
    """What hwlm wrote into ``folder``: the marker's list, or for a marker written before that list existed,
    the command's known output names that are present."""
    data = read_marker(folder, marker) or {}
    if isinstance(data.get("written"), list):
        return [str(n) for n in data["written"]]
    present = _entries(folder)
    return sorted({marker, *legacy} & present)


def check_output_dir(
    folder: str | os.PathLike,
    *,
    command: str,
    marker: str,
    would_write: Iterable[str],
    overwrite: bool = False,
    resume: bool = False,
    rewrite_own: bool = False,
) -> None:
    """Refuse an output folder the command may not write into; write nothing.

    Args:
        folder: the ``--output_dir``.
        command (`str`): the command's name, for messages (``hwlm-train``).
        marker (`str`): the command's marker file name.
        would_write: top-level names the command writes (to name what it would replace).
        overwrite (`bool`): ``--overwrite_output_dir``: the command's own earlier output may be replaced.
        resume (`bool`): the run continues the folder's own earlier run.
        rewrite_own (`bool`): the command may rewrite its own earlier output without ``overwrite``
            (a tokenizer rebuild).
    Raises:
        OutputDirError: the folder holds files hwlm did not write, or the output of another run without
            ``overwrite``/``resume``.
    """
    out = Path(folder)
    if out.exists() and not out.is_dir():
        raise OutputDirError(f"--output_dir {str(out)!r} is a file, not a folder; choose a folder path.")
    present = _entries(out)
    if not present:
        return
    if read_marker(out, marker) is None:
        replaced = sorted(present & set(would_write))
        what = (f"it would replace {', '.join(replaced)}" if replaced
                else f"it holds {', '.join(sorted(present)[:8])}{' ...' if len(present) > 8 else ''}")
        raise OutputDirError(
            f"--output_dir {str(out)!r} holds files that {command} did not write ({what}). {command} writes only "
            f"into a new or empty folder or one of its own earlier outputs (marked by {marker}); "
            "--overwrite_output_dir removes only what hwlm wrote, so choose another --output_dir or move those files."
        )
    clash = sorted((present & set(would_write)) - set(_written(out, marker, would_write)))
    if clash:
        raise OutputDirError(
            f"--output_dir {str(out)!r} holds {', '.join(clash)}, which {command} did not write there (added since "
            f"its last run, per {marker}); {command} would replace them. Move them or choose another --output_dir."
        )
    if resume or overwrite or rewrite_own or not present - {marker}:  # only the marker: a run that failed early
        return
    raise OutputDirError(
        f"--output_dir {str(out)!r} already holds a run ({', '.join(sorted(present)[:8])}). Pass "
        "--overwrite_output_dir to replace what that run wrote, --resume_from_checkpoint latest to continue it, "
        "or choose another --output_dir."
    )


def clear_written(folder: str | os.PathLike, marker: str, legacy: Iterable[str] = ()) -> list[str]:
    """Remove the entries the marker says hwlm wrote (the marker itself last); return their names.

    Files the user added to the folder afterwards stay.
    """
    out = Path(folder)
    names = _written(out, marker, legacy)
    for name in sorted(names, key=lambda n: n == marker):
        path = out / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()
    return names


def record_written(folder: str | os.PathLike, marker: str, names: Iterable[str], payload: dict | None = None) -> None:
    """Add ``names`` to the marker's ``"written"`` list (creating the marker, with ``payload``, if needed).

    The marker is replaced atomically (write to a temporary file, then rename).
    """
    out = Path(folder)
    data = read_marker(out, marker) or {}
    if payload:
        data.update(payload)
    written = set(data.get("written") or []) | set(names) | {marker}
    data["written"] = sorted(written)
    tmp = out / f".{marker}.tmp"
    tmp.write_text(json.dumps(data, indent=2, default=str, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, out / marker)


@contextmanager
def tracked_writes(folder: str | os.PathLike, marker: str) -> Iterator[None]:
    """Record in the marker every top-level entry that appears in ``folder`` inside the ``with`` block."""
    out = Path(folder)
    before = _entries(out)
    try:
        yield
    finally:
        new = _entries(out) - before - {f".{marker}.tmp"}
        if new:
            record_written(out, marker, new)


class OutputLock:
    """``<folder>/.hwlm.lock``: held by one process at a time, released by the OS when the owner dies.

    Use as a context manager; ``acquire`` raises `OutputDirError` naming the owner's pid while it lives.
    """

    def __init__(self, folder: str | os.PathLike, command: str):
        self.path = Path(folder) / LOCK_NAME
        self.command = command
        self._fd: int | None = None

    def owner(self) -> dict:
        """The lock file's content (pid, host, command), or {} when it is absent or unreadable."""
        try:
            return json.loads(self.path.read_text())
        except (OSError, json.JSONDecodeError):
            return {}

    def acquire(self) -> "OutputLock":
        for _ in range(5):  # retry only when the file was replaced between open and flock (see below)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                owner = self.owner()
                raise OutputDirError(
                    f"{str(self.path.parent)!r} is in use by another run ({owner.get('command', 'hwlm')}, pid "
                    f"{owner.get('pid', '?')} on {owner.get('host', '?')}); wait for it to finish or choose another "
                    "--output_dir."
                ) from None
            # The previous owner may have unlinked the file after we opened it: then we hold a lock on a
            # file nobody else sees, and must retry on the path's current file.
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            previous = self.owner()
            os.ftruncate(fd, 0)
            record = {"pid": os.getpid(), "host": socket.gethostname(), "command": self.command}
            if previous.get("pid"):
                record["took_over_from"] = previous  # its owner died without cleaning up
            os.write(fd, json.dumps(record).encode())
            os.fsync(fd)
            self._fd = fd
            return self
        raise OutputDirError(f"could not take {str(self.path)!r}: it keeps being replaced by another process")

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass
        os.close(self._fd)  # closing releases the flock
        self._fd = None

    def __enter__(self) -> "OutputLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
