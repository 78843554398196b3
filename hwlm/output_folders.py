"""Output folders belong to the user: hwlm writes only where it may, records what it wrote, and locks.

Over 500 lines on purpose: every rule about which path hwlm may write, replace or delete (markers, hashes, links,
locks, staged swaps) is in this one module, so one review covers all of them.

A command (``hwlm-train``, ``hwlm-tokenizer``) writes into its ``--output_dir`` only when the folder

* does not exist yet (the command creates it),
* is empty, or
* holds this command's own earlier output, recognised by the command's marker file (``hwlm_run.json``
  for training, ``hwlm_tokenizer.json`` for a tokenizer).

Anything else is refused before any work, naming the files the command would have replaced. The marker's
``"written"`` list holds the top-level entries the command created (only names the command itself writes, never
a file the user saved there meanwhile), with the SHA-256 of each such file as it was when the command finished,
so ``--overwrite_output_dir`` removes exactly those and never a file the user put there; one the user changed
since is refused, not removed.

Nothing outside the folder is touched, whatever the folder holds: a ``"written"`` entry must be one plain name
(no ``/``, no ``..``, not absolute), a symbolic link is removed as a link and never followed, and a folder where
the command would write through a link is refused. A marker is trusted for deletion only in the folder that
wrote it (it records that folder's device and inode): a marker copied or downloaded with a folder (a Hub repo)
deletes nothing. The lock and the markers are opened with ``O_NOFOLLOW``.

While a command writes, ``<output_dir>/.hwlm.lock`` holds its process id and host. The lock is an
``fcntl.flock`` on that file, so the operating system releases it when the owner dies (``kill -9``
included): a second run is refused while the owner lives and takes the lock over once it is dead. The
file is removed when the owner exits normally.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import shutil
import socket
import stat
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterable, Iterator

from hwlm.errors import UserError

__all__ = [
    "LOCK_NAME",
    "OutputDirError",
    "OutputLock",
    "check_output_dir",
    "check_no_links",
    "clear_written",
    "contained_entry",
    "marker_trusted",
    "recover_staged",
    "staged_output",
    "staging_paths",
    "read_marker",
    "record_written",
    "tracked_writes",
]

LOCK_NAME = ".hwlm.lock"


class OutputDirError(UserError):
    """``--output_dir`` is not one hwlm may write into (someone else's files, another command, a live lock)."""


def _read_nofollow(path: Path) -> bytes | None:
    """The bytes of the regular file at ``path``, or None when it is absent, a link or not a regular file."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:  # ELOOP (a link), ENOENT, EACCES, ...
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        with os.fdopen(fd, "rb", closefd=False) as fh:
            return fh.read()
    finally:
        os.close(fd)


def read_marker(folder: str | os.PathLike, marker: str) -> dict | None:
    """The marker's JSON content, or None when the folder has no such marker (or it is a link, or not JSON)."""
    raw = _read_nofollow(Path(folder) / marker)
    if raw is None:
        return None
    try:
        data = json.loads(raw.decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) else None


def _folder_id(folder: Path) -> dict:
    st = os.stat(folder)
    return {"dev": st.st_dev, "ino": st.st_ino}


def marker_trusted(folder: str | os.PathLike, data: dict | None) -> bool:
    """True when the marker ``data`` was written in ``folder`` itself (same device and inode), so its
    ``"written"`` list may direct deletions. A marker copied or downloaded with a folder is not."""
    if not data or not isinstance(data.get("folder_id"), dict):
        return False
    try:
        return data["folder_id"] == _folder_id(Path(folder))
    except OSError:
        return False


def contained_entry(folder: str | os.PathLike, name: str) -> Path:
    """``folder/name`` after checking that ``name`` is one plain entry of ``folder``: not empty, not ``.`` or
    ``..``, no path separator, not absolute (so the path cannot leave the folder; a link is never followed by
    the callers).

    Raises:
        OutputDirError: naming the entry.
    """
    if (not isinstance(name, str) or name in ("", ".", "..") or "/" in name or "\\" in name or "\0" in name
            or os.path.isabs(name)):
        raise OutputDirError(
            f"{str(folder)!r}: the entry {name!r} in hwlm's record does not name a file inside the folder; hwlm "
            "touches nothing outside its output folder. The record was edited or comes from elsewhere: remove "
            "the run's files yourself, or choose another --output_dir."
        )
    return Path(folder) / name


def _sha256(path: Path) -> str | None:
    """SHA-256 of a regular file (not followed through a link), or None for anything else."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        with os.fdopen(fd, "rb", closefd=False) as fh:
            return hashlib.file_digest(fh, "sha256").hexdigest()
    finally:
        os.close(fd)


def check_no_links(folder: str | os.PathLike, names: Iterable[str]) -> None:
    """Refuse a folder where hwlm would write through a symbolic link: any of ``names`` (top-level entries the
    command writes, the lock) that is a link, or a link anywhere inside those of them that are folders.

    Raises:
        OutputDirError: naming the link.
    """
    out = Path(folder)
    for name in sorted(set(names) | {LOCK_NAME}):
        path = out / name
        links = [path] if path.is_symlink() else []
        if not links and path.is_dir():
            for root, dirs, files in os.walk(path):  # os.walk does not descend into links
                links += [Path(root) / n for n in dirs + files if (Path(root) / n).is_symlink()]
        if links:
            raise OutputDirError(
                f"{str(links[0])!r} in --output_dir is a symbolic link; hwlm writes only inside its output folder "
                "and never through a link. Remove the link, or choose another --output_dir."
            )


def _entries(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir() if p.name != LOCK_NAME} if folder.is_dir() else set()


def _written(folder: Path, marker: str, legacy: Iterable[str]) -> list[str]:
    """What hwlm wrote into ``folder``: the marker's list, or for a marker written before that list existed,
    the command's known output names that are present."""
    data = read_marker(folder, marker) or {}
    if isinstance(data.get("written"), list):
        return [n if isinstance(n, str) else repr(n) for n in data["written"]]
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
    check_no_links(out, [*would_write, marker])
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

    Every entry is checked to be a plain name inside the folder (`contained_entry`) before anything is removed;
    a link is removed as a link, never followed. Files the user added to the folder afterwards stay.

    Raises:
        OutputDirError: the marker was not written in this folder (copied or downloaded with it: its list is
            not trusted), names an entry outside the folder, or lists a file whose SHA-256 differs from the one
            recorded when hwlm finished writing it (the user changed it since); nothing is removed then.
    """
    out = Path(folder)
    data = read_marker(out, marker)
    if data is not None and isinstance(data.get("written"), list) and not marker_trusted(out, data):
        raise OutputDirError(
            f"{str(out / marker)!r} was not written in this folder (it was copied or downloaded with it, or written "
            "by an older hwlm), so --overwrite_output_dir will not delete what it lists. Remove the earlier run's "
            "files yourself, or choose another --output_dir."
        )
    names = _written(out, marker, legacy)
    paths = [contained_entry(out, name) for name in names]  # all checked before the first removal
    _refuse_changed(out, marker, data, names)
    removed = []
    for name, path in sorted(zip(names, paths), key=lambda np: np[0] == marker):
        if path.is_symlink() or path.is_file():
            path.unlink()
        elif path.is_dir():
            shutil.rmtree(path)  # removes links inside as links (fd-based on Linux)
        else:
            continue
        removed.append(name)
    return removed


def _refuse_changed(out: Path, marker: str, data: dict | None, names: list[str]) -> None:
    """Refuse (before anything is removed) when a file hwlm wrote was changed since: it is the user's now, and
    hwlm would neither delete it nor overwrite it."""
    hashes = (data or {}).get("sha256")
    hashes = hashes if isinstance(hashes, dict) else {}
    changed = [n for n in names if n != marker and hashes.get(n) is not None and not (out / n).is_symlink()
               and (out / n).is_file() and _sha256(out / n) != hashes[n]]
    if changed:
        raise OutputDirError(
            f"{', '.join(changed)} in {str(out)!r} changed since hwlm wrote {'them' if len(changed) > 1 else 'it'} "
            f"(the SHA-256 differs from the one in {marker}), so --overwrite_output_dir neither deletes nor replaces "
            "it. Move it out of the folder (or delete it yourself), or choose another --output_dir."
        )


def write_atomic(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` through a fresh temporary file in the same folder (``O_EXCL``: never through
    a link placed there) renamed over ``path`` (a link at ``path`` is replaced, not followed)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def record_written(folder: str | os.PathLike, marker: str, names: Iterable[str], payload: dict | None = None,
                   *, hash_files: bool = False) -> None:
    """Add ``names`` to the marker's ``"written"`` list (creating the marker, with ``payload``, if needed).

    The marker records the folder's identity (`marker_trusted`); a marker from elsewhere starts a new list. With
    ``hash_files`` the SHA-256 of every listed file is recorded (the command has finished writing them);
    otherwise the recorded hashes are dropped (the command is about to rewrite its files). The marker is
    replaced atomically (`write_atomic`).
    """
    out = Path(folder)
    data = read_marker(out, marker) or {}
    trusted = marker_trusted(out, data)
    if payload:
        data.update(payload)
    written = (set(data.get("written") or []) if trusted else set()) | set(names) | {marker}
    for name in written:
        contained_entry(out, name)
    data["written"] = sorted(written)
    data["folder_id"] = _folder_id(out)
    data["sha256"] = {}
    if hash_files:
        data["sha256"] = {n: h for n in sorted(written - {marker}) if (h := _sha256(out / n)) is not None}
    write_atomic(out / marker, json.dumps(data, indent=2, default=str, ensure_ascii=False) + "\n")


@contextmanager
def tracked_writes(folder: str | os.PathLike, marker: str, owns: Callable[[str], bool]) -> Iterator[None]:
    """Record in the marker the top-level entries that appear in ``folder`` inside the ``with`` block and that
    the command writes (``owns(name)``), with their hashes: a file the user saves into the folder meanwhile is
    not the command's and is never recorded."""
    out = Path(folder)
    before = _entries(out)
    try:
        yield
    finally:
        new = {n for n in _entries(out) - before if owns(n)}
        record_written(out, marker, new, hash_files=True)


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
            data = json.loads((_read_nofollow(self.path) or b"").decode("utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            return {}
        return data if isinstance(data, dict) else {}

    def _open(self) -> int:
        """Open (or create) the lock file itself, never a file a link there points to."""
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK, 0o644)
        except OSError as err:
            if err.errno != errno.ELOOP:
                raise
            fd = None
        if fd is not None and stat.S_ISREG(os.fstat(fd).st_mode):
            return fd
        if fd is not None:
            os.close(fd)
        raise OutputDirError(
            f"{str(self.path)!r} is a symbolic link or not a regular file; hwlm will not write its lock through it. "
            "Remove it, or choose another --output_dir."
        )

    def acquire(self) -> "OutputLock":
        for _ in range(5):  # retry only when the file was replaced between open and flock (see below)
            fd = self._open()
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


# ----------------------------------------------------------------------------------- staged (atomic) output

STAGING_FLAG = ".hwlm-staging"  # in a staging folder from its creation: the folder is hwlm's to remove
COMPLETE_FLAG = ".hwlm-complete"  # in a staging folder whose output is whole, written just before the swap
REPLACED_FLAG = ".hwlm-replaced"  # in a previous output moved aside by the swap, to be removed


def staging_paths(folder: str | os.PathLike) -> tuple[Path, Path]:
    """``(staging, previous)``: the siblings of ``folder`` where a staged output is written and where the
    previous output waits during the swap (``.<name>.hwlm-staging`` and ``.<name>.hwlm-previous``)."""
    out = Path(folder).resolve()  # "." and "..", whose names are empty
    return out.with_name(f".{out.name}.hwlm-staging"), out.with_name(f".{out.name}.hwlm-previous")


def _is_hwlm_folder(path: Path, flag: str) -> bool:
    return path.is_dir() and not path.is_symlink() and (path / flag).is_file() and not (path / flag).is_symlink()


def _give_back(stage: Path, out: Path, own: set[str]) -> None:
    """Move the user's entries a swap had moved into ``stage`` back to ``out`` (where absent)."""
    if not out.is_dir():
        return
    for entry in stage.iterdir():
        name = entry.name
        if name in own or name in (LOCK_NAME, STAGING_FLAG, COMPLETE_FLAG) or (out / name).exists():
            continue
        os.rename(entry, out / name)


def recover_staged(folder: str | os.PathLike, own: Iterable[str]) -> None:
    """Finish or undo what an interrupted staged write (`staged_output`) left next to ``folder``.

    A whole staged output whose swap was cut between its two renames is put in place; otherwise the previous
    output moved aside is put back; a partial staging folder (``kill -9``, power loss) is removed after
    returning any user entry the swap had moved into it. Only folders carrying hwlm's flag files are touched.

    Raises:
        OutputDirError: a staging folder is locked by a live run, or a sibling with hwlm's name is not hwlm's.
    """
    out = Path(folder).resolve()
    stage, previous = staging_paths(out)
    for path, flag in ((stage, STAGING_FLAG), (previous, REPLACED_FLAG)):
        if (path.exists() or path.is_symlink()) and not _is_hwlm_folder(path, flag):
            raise OutputDirError(
                f"{str(path)!r} is in the way of hwlm's staged write of {str(out)!r} but was not made by hwlm; "
                "move it, or choose another --output_dir."
            )
    if previous.exists() and not out.exists():
        if stage.exists() and (stage / COMPLETE_FLAG).is_file():
            os.rename(stage, out)
            (out / COMPLETE_FLAG).unlink()
        else:
            os.rename(previous, out)
            (out / REPLACED_FLAG).unlink()
    if previous.exists():
        shutil.rmtree(previous)
    if stage.exists():
        with OutputLock(stage, "hwlm"):  # refused while the run writing it lives
            _give_back(stage, out, set(own))
        shutil.rmtree(stage)


@contextmanager
def staged_output(folder: str | os.PathLike, command: str, own: Iterable[str]) -> Iterator[Path]:
    """Write a command's whole output into a fresh sibling folder and move it into place only when complete.

    Yields the staging folder. On a clean exit the user's entries of ``folder`` (everything but the names in
    ``own``) are moved into it, and it replaces ``folder`` by two renames (the old output is then removed). On
    any error, Ctrl-C or a full disk the staging folder is removed and ``folder`` is as it was; after a
    ``kill -9`` the next call cleans up first (`recover_staged`). Both folders are locked meanwhile.

    Raises:
        OutputDirError: the disk filled up (one line, naming the folder kept), or see `recover_staged`.
    """
    out = Path(folder).resolve()
    own = set(own)
    stage, previous = staging_paths(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    recover_staged(out, own)
    old_lock = OutputLock(out, command).acquire() if out.is_dir() else None
    try:
        stage.mkdir()
        (stage / STAGING_FLAG).write_text(command)
        with OutputLock(stage, command) as lock:
            try:
                yield stage
            except OSError as err:
                if err.errno not in (errno.ENOSPC, errno.EDQUOT):
                    raise
                raise OutputDirError(
                    f"no space left on the device while writing {str(out)!r} ({err.strerror}); "
                    f"{'the folder is unchanged' if out.exists() else 'nothing was written'}. Free some space "
                    "(or choose an --output_dir on another disk) and run the command again."
                ) from None
            if out.is_dir():
                for entry in out.iterdir():
                    if entry.name not in own and entry.name != LOCK_NAME:
                        os.rename(entry, stage / entry.name)
            (stage / COMPLETE_FLAG).write_text(command)
            if out.is_dir():
                (out / REPLACED_FLAG).write_text(command)
                os.rename(out, previous)
            os.rename(stage, out)
            lock.path = out / LOCK_NAME  # the lock file moved with its folder
            (out / STAGING_FLAG).unlink()
            (out / COMPLETE_FLAG).unlink()
    except BaseException:
        if previous.exists() and not out.exists():  # cut between the two renames: the old output goes back
            os.rename(previous, out)
        (out / REPLACED_FLAG).unlink(missing_ok=True)
        if _is_hwlm_folder(stage, STAGING_FLAG):
            _give_back(stage, out, own)
            shutil.rmtree(stage, ignore_errors=True)
        raise
    finally:
        if old_lock is not None:
            old_lock.path = previous / LOCK_NAME if previous.exists() else old_lock.path
            old_lock.release()
    if previous.exists():
        shutil.rmtree(previous)
