"""Write-then-replace: the repository's one way to write a file that is a product.

A reader (or a run that was killed at any point, SIGKILL included) sees a product file either as
it was before or complete, never half-written: the bytes go to a hidden temporary name next to the
destination (``.<name>.<pid>.<thread>.tmp``, unique per process and thread, so runs side by side may
write one file at once) and ``os.replace`` moves it onto the destination in one step. A failed or
interrupted write leaves the destination as it was and removes the temporary file (only SIGKILL can
leave one behind; it is hidden and never read).

The result has the mode ``open(path, "w")`` would give it: a new file honours the umask
(``0o666 & ~umask``: 0644 under umask 0022; the temporary file alone would keep a stricter mode,
e.g. ``tempfile.mkstemp``'s 0600), a replaced file keeps its own permission bits.

Imports nothing but the standard library, so data_prep, the evaluation, the recipe and the micro
package share it without importing verl.

* ``write_atomically(path, write)``: ``write(tmp_path)`` then replace (any writer that takes a path:
  ``pq.write_table``, ``fig.savefig``, ``Path.write_text``);
* ``write_text_atomically`` / ``write_bytes_atomically`` / ``save_figure_atomically`` (matplotlib);
* ``AtomicFile``: a streaming writer's temporary file, ``commit()`` / ``abort()`` (a context manager
  that commits on normal exit);
* ``check_destination(path)``: a one-line ``DestinationError`` before any work when ``path`` cannot
  be written (a directory, a parent that is a file, an unwritable or missing place).
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable
from pathlib import Path

__all__ = [
    "DestinationError",
    "AtomicFile",
    "check_destination",
    "created_file_mode",
    "published_mode",
    "save_figure_atomically",
    "tmp_path_for",
    "write_atomically",
    "write_bytes_atomically",
    "write_text_atomically",
]

_UMASK_LOCK = threading.Lock()


class DestinationError(OSError):
    """The destination of a write cannot be written (the message names it and why)."""


def current_umask() -> int:
    """The process umask, read without changing it where Linux allows (``/proc/self/status``)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _UMASK_LOCK:  # os.umask can only be read by setting it
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def created_file_mode() -> int:
    """The mode ``open(path, "w")`` gives a new file: ``0o666 & ~umask``."""
    return 0o666 & ~current_umask()


def tmp_path_for(path: str | os.PathLike) -> Path:
    """The hidden temporary name next to ``path`` for this process and thread."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")


def check_destination(path: str | os.PathLike) -> Path:
    """``path`` (absolute) when a file can be written there, creating missing parent folders; else a
    one-line ``DestinationError`` naming ``path`` and the reason. Call it before expensive work."""
    path = Path(os.path.abspath(os.fspath(path)))
    if path.is_dir():
        raise DestinationError(f"{path} is a directory; give a file name")
    for parent in path.parents:  # the nearest existing ancestor must be a folder
        if parent.exists():
            if not parent.is_dir():
                raise DestinationError(f"cannot write {path}: {parent} is a file, not a folder")
            break
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DestinationError(f"cannot create the folder of {path}: {e.strerror or e}") from None
    probe = tmp_path_for(path)
    try:  # the only reliable test: create (and remove) the temporary file the write will use
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path  # a leftover of this very process/thread: the place is writable
    except OSError as e:
        raise DestinationError(f"cannot write {path}: {e.strerror or e}") from None
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(probe)
    return path


def _fsync(path: Path) -> None:
    with contextlib.suppress(OSError):  # best effort: some file systems refuse fsync on a read fd
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def published_mode(path: str | os.PathLike) -> int:
    """The mode the file at ``path`` has after a write, as with ``open(path, "w")``: an existing
    file's own permission bits, else ``created_file_mode()``."""
    try:
        return os.stat(path).st_mode & 0o7777
    except OSError:
        return created_file_mode()


def _publish(tmp: Path, path: Path, fsync: bool) -> None:
    os.chmod(tmp, published_mode(path))
    if fsync:
        _fsync(tmp)
    os.replace(tmp, path)


def write_atomically(path: str | os.PathLike, write: Callable[[Path], object], *, fsync: bool = True) -> Path:
    """``write(tmp)`` to a hidden temporary name next to ``path``, then ``os.replace`` it onto ``path``
    (module docstring): a reader sees the old file or the whole new one, never a partial one. A failed
    ``write`` (exception, KeyboardInterrupt) leaves ``path`` as it was and no temporary file. Missing
    parent folders are created; an unwritable destination raises ``DestinationError`` before
    ``write`` runs. ``write`` must write to the path it is given (a format-sniffing writer
    needs its format named: the temporary name ends in ``.tmp``). Returns ``path`` (absolute)."""
    path = check_destination(path)
    tmp = tmp_path_for(path)
    try:
        write(tmp)
        _publish(tmp, path, fsync)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_text_atomically(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> Path:
    """``text`` to ``path`` through ``write_atomically``."""
    return write_atomically(path, lambda tmp: tmp.write_text(text, encoding=encoding))


def write_bytes_atomically(path: str | os.PathLike, data: bytes) -> Path:
    """``data`` to ``path`` through ``write_atomically``."""
    return write_atomically(path, lambda tmp: tmp.write_bytes(data))


def save_figure_atomically(fig, path: str | os.PathLike, **savefig_kwargs) -> Path:
    """``fig.savefig`` (a matplotlib figure) to ``path`` through ``write_atomically``, in the format
    that ``path``'s suffix names (``.png``, ``.pdf``, ...)."""
    fmt = Path(path).suffix.lstrip(".").lower() or "png"
    return write_atomically(path, lambda tmp: fig.savefig(tmp, format=fmt, **savefig_kwargs))


class AtomicFile:
    """The temporary file of a streaming writer: write to ``tmp_path`` (or ``open()`` it), then
    ``commit()`` moves it onto ``path``; ``abort()`` (or leaving the ``with`` block with an
    exception) removes it and leaves ``path`` untouched. ``check_destination`` runs first, so an
    unwritable destination fails before any work with a one-line ``DestinationError``."""

    def __init__(self, path: str | os.PathLike, *, fsync: bool = True):
        self.path = check_destination(path)
        self.tmp_path = tmp_path_for(self.path)
        self.fsync = fsync
        self.done = False

    def commit(self) -> Path:
        if self.done:
            raise RuntimeError(f"{self.path}: already committed or aborted")
        try:
            _publish(self.tmp_path, self.path, self.fsync)
        finally:
            self.done = True
            self.tmp_path.unlink(missing_ok=True)
        return self.path

    def abort(self) -> None:
        if not self.done:
            self.done = True
            with contextlib.suppress(OSError):
                self.tmp_path.unlink(missing_ok=True)

    def __enter__(self) -> AtomicFile:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None and not self.done:
            self.commit()
        else:
            self.abort()
