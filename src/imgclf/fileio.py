"""Atomic file writes: a crash at any moment leaves either the old file or the new one."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from .errors import ImgclfError


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # some filesystems (and Windows) cannot open a directory
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_MODE = 0o666 & ~_umask()  # what open() would give a new file; mkstemp alone gives 0600


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write to a temp file beside `path`, fsync it, then rename it over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, _MODE)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def pid_alive(pid: int) -> bool:
    """Whether a process with this id runs on this machine (to tell stale temp files from live ones)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, but belongs to someone else
        return True
    return True


class JsonFileError(ImgclfError, ValueError):
    """A JSON file that does not parse. Also a ValueError, as json's own error is, so callers that
    skip unreadable files (compare does) keep doing so."""


# What to do about a broken JSON file when the caller has nothing more specific to say.
_JSON_FIX = ("fix the file, or recreate it (`imgclf train --overwrite` rewrites a run's JSON files, "
             "`imgclf manifest` a data directory's classes.json)")


def read_json(path: str | Path, fix: str = _JSON_FIX) -> Any:
    """The parsed JSON at `path`; malformed JSON is a JsonFileError naming file, line and column, then `fix`."""
    data = Path(path).read_bytes()
    try:
        return json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise JsonFileError(f"{path}: not UTF-8 text (byte {e.start}), so not JSON; {fix}") from None
    except json.JSONDecodeError as e:
        raise JsonFileError(f"{path} line {e.lineno} column {e.colno}: not valid JSON ({e.msg}); {fix}") from None


def ensure_dir_target(path: str | Path, flag: str) -> None:
    """Refuse a `path` (or a parent of it) that exists as a file where a folder must go."""
    for p in (Path(path), *Path(path).parents):
        if p.exists():
            if not p.is_dir():
                raise ImgclfError(f"{p}: is a file, not a folder; give {flag} a folder path "
                                  "(new or existing), or move the file away")
            return


class BackgroundWriter:
    """Runs file writes on one thread, in the order they were submitted.

    Callers serialise on their own thread (a snapshot), then hand over the bytes: training goes
    on while the writes and their fsyncs happen. `flush` waits for all of them and re-raises the
    first error (a full disk, say); every later submit and the final flush do so too.
    """

    def __init__(self) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="imgclf-writer")
        self._pending: list = []

    def submit(self, fn, *args) -> None:
        self._raise_done()
        self._pending.append(self._pool.submit(fn, *args))

    def _raise_done(self) -> None:
        still = []
        for f in self._pending:
            if f.done():
                f.result()
            else:
                still.append(f)
        self._pending = still

    def flush(self) -> None:
        pending, self._pending = self._pending, []
        for f in pending:
            f.result()

    def close(self) -> None:
        try:
            self.flush()
        finally:
            self._pool.shutdown(wait=True)


def run_now_or_later(writer: "BackgroundWriter | None", fn, *args) -> None:
    """fn(*args) on the writer's thread when there is one, else right here."""
    if writer is None:
        fn(*args)
    else:
        writer.submit(fn, *args)
