"""Atomic file writes: an interrupted or failed step never leaves a partial output behind.

One file: `atomic_path` / `write_*_atomic`. A set of files that belong together (a model and its manifest, a
plan and its sidecar): `OutputSet`, which also locks the folders it writes. Outputs that would overwrite an
input: `refuse_overwrite`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from foundry_edge.errors import FoundryError


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it over `path` only if the block succeeds.

    The temporary file lives in the same folder so the final rename is atomic on POSIX.
    """
    final = Path(path)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    except OSError as exc:  # a parent that is a file, a read-only folder, no space
        why = "a file, not a folder" if isinstance(exc, FileExistsError) else exc.strerror
        raise FoundryError(f"expected a writable folder for {final}, found {exc.filename or final.parent} "
                           f"({why}): choose another output path") from None
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp creates 0600; give the artifact the permissions a plain open() would have.
        umask = os.umask(0)
        os.umask(umask)
        if tmp_path.exists():
            os.chmod(tmp_path, 0o666 & ~umask)
        os.replace(tmp_path, final)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json_atomic(path: str | os.PathLike, obj) -> Path:
    return write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in chunks (plans and checkpoints can be large)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


LOCK_NAME = ".foundry-edge.lock"
STAGING_PREFIX = ".foundry-edge-staging-"


def refuse_overwrite(output: str | os.PathLike, inputs, *, folder: bool = False, option: str = "-o") -> None:
    """Refuse an output path that is one of `inputs` (a model, a cloud, a manifest...) or the wrong kind of path:
    an existing folder where a file is written, or an existing file where a folder is."""
    out = Path(output)
    if folder and out.exists() and not out.is_dir():
        raise FoundryError(f"expected {option} to name a folder, found the file {out}: pass a folder path")
    if not folder and out.is_dir():
        raise FoundryError(f"expected {option} to name a file, found the folder {out}: pass a file path "
                           "(a new name, or an old output to replace)")
    for source in (Path(p) for p in inputs if p is not None):
        if _same_file(out, source):
            raise FoundryError(f"{option} {out} is the input {source}: writing it would destroy the input; "
                               "pass another output path")


def _same_file(a: Path, b: Path) -> bool:
    if a.exists() and b.exists():
        return os.path.samefile(a, b)
    return os.path.realpath(a) == os.path.realpath(b)


class FolderLock:
    """`<folder>/.foundry-edge.lock` (pid and command) for the life of a write; a second writer is refused,
    naming the first. A lock whose process is gone is taken over."""

    def __init__(self, folder: str | os.PathLike, command: str):
        self.folder, self.command = Path(folder), command
        self.path = self.folder / LOCK_NAME

    def acquire(self) -> "FolderLock":
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = _lock_holder(self.path)
                if holder is not None and not _pid_alive(holder.get("pid")):
                    self.path.unlink(missing_ok=True)  # its writer died without cleaning up
                    continue
                who = (f"pid {holder['pid']}, {holder.get('command', 'unknown command')}" if holder
                       else "an unreadable lock")
                raise FoundryError(f"another foundry-edge process is writing to {self.folder} ({who}): wait for it to "
                                   f"finish or pass another output path (remove {self.path} if no such process "
                                   "runs)") from None
            except OSError as exc:
                raise FoundryError(f"expected a writable folder at {self.folder}, could not create a lock file "
                                   f"there ({exc.strerror}): choose another output path") from None
            with os.fdopen(fd, "w") as fh:
                json.dump({"pid": os.getpid(), "command": self.command}, fh)
            return self
        raise FoundryError(f"could not take the lock {self.path}: remove it if no foundry-edge process runs")

    def release(self) -> None:
        holder = _lock_holder(self.path)
        if holder is not None and holder.get("pid") == os.getpid():
            self.path.unlink(missing_ok=True)

    def __enter__(self) -> "FolderLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _lock_holder(path: Path):
    try:
        holder = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return holder if isinstance(holder, dict) and isinstance(holder.get("pid"), int) else None


def _pid_alive(pid) -> bool:
    if pid <= 0:  # os.kill(0, ...) would signal our own process group
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


class OutputSet:
    """Files that belong together (a model and its manifest, a plan and its sidecar), written as one set.

    Each destination folder is locked (FolderLock) and gets a hidden staging folder inside it; callers write
    to `path(final)` (or into `folder(dest)`), and when the block ends without an error every staged file is
    renamed over its destination, signals held (foundry_edge.interrupts.deferred). On an error or a signal
    nothing is renamed: the staging folders, the locks and any folder the set created go, the old files stay.
    """

    def __init__(self, command: str, folders):
        self.command = command
        self.folders = list(dict.fromkeys(Path(f) for f in folders))
        self._staging: dict = {}  # destination folder -> staging folder
        self._locks: list = []
        self._created: list = []  # folders this set made, deepest last
        self.committed = False

    def __enter__(self) -> "OutputSet":
        try:
            for dest in self.folders:
                self._make_folder(dest)
                self._locks.append(FolderLock(dest, self.command).acquire())
                self._staging[dest] = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=dest))
        except BaseException:
            self._clean()
            raise
        return self

    def _make_folder(self, dest: Path) -> None:
        missing = [p for p in [dest, *dest.parents] if not p.exists()]
        try:
            dest.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            why = "a file, not a folder" if isinstance(exc, (FileExistsError, NotADirectoryError)) else exc.strerror
            raise FoundryError(f"expected a writable folder at {dest}, found {exc.filename or dest} ({why}): "
                               "choose another output path") from None
        self._created += reversed(missing)

    def folder(self, dest) -> Path:
        """The staging folder whose files go into `dest` (one of the set's folders)."""
        return self._staging[Path(dest)]

    def path(self, final) -> Path:
        """Where to write what will become `final`."""
        final = Path(final)
        return self.folder(final.parent) / final.name

    def final(self, staged) -> Path:
        """The destination of a staged path."""
        staged = Path(staged)
        dest = next(d for d, s in self._staging.items() if s == staged.parent)
        return dest / staged.name

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                self._commit()
        finally:
            self._clean()

    def _commit(self) -> None:
        from foundry_edge.interrupts import deferred

        moves = [(staged, dest / staged.name) for dest, folder in self._staging.items()
                 for staged in sorted(folder.iterdir())]
        done = []  # (final, its old version parked in the staging folder, or None)
        with deferred():
            try:
                for staged, final in moves:
                    old = None
                    if final.exists() and not final.is_dir():
                        old = staged.with_name(f".old-{final.name}")
                        os.replace(final, old)
                    os.replace(staged, final)
                    done.append((final, old))
            except OSError as exc:
                for final, old in reversed(done):
                    if old is not None:
                        os.replace(old, final)
                    else:
                        final.unlink(missing_ok=True)
                raise FoundryError(f"could not move the new files into place ({exc}); the old files are kept: "
                                   "check the output folder's permissions and free space") from None
            self.committed = bool(moves)  # an empty set leaves no folder behind either

    def _clean(self) -> None:
        for folder in self._staging.values():
            shutil.rmtree(folder, ignore_errors=True)
        for lock in reversed(self._locks):
            lock.release()
        if not self.committed:
            for folder in reversed(self._created):
                with contextlib.suppress(OSError):
                    folder.rmdir()  # only if still empty
