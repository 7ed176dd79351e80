"""Small file helpers shared by the stages: hashes, the cache root, and atomic writes.

Every file kcompile writes for a user (results, reports, weights, cached
runs) goes through :func:`atomic_write`: a temporary sibling, flushed and
fsynced, renamed over the target. An interrupted write (Ctrl-C, SIGTERM, a
full disk, a crash) leaves the previous file intact and no temporary behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from pathlib import Path
from typing import IO, Iterator

import yaml

from .errors import InputError

ENV_CACHE = "KCOMPILE_CACHE"
#: the largest YAML file read (flows and configs are a few hundred bytes)
MAX_YAML_BYTES = 1 << 20


def sha256(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def cache_dir() -> Path:
    """Root of kcompile's cache: ``$KCOMPILE_CACHE`` or ``~/.cache/kcompile``."""
    env = os.environ.get(ENV_CACHE)
    return Path(env) if env else Path.home() / ".cache" / "kcompile"


def umask() -> int:
    """The process's umask, read without changing it where the system allows (Linux ``/proc``)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def check_output_file(path: str | Path, what: str = "output file") -> Path:
    """Refuse, before any work, an output path that a write would fail on or should not replace.

    A symbolic link (replacing it would cut the link), a directory, a
    write-protected file (no write bit: refused even for root), or a path
    below an existing file raise :class:`~kcompile.errors.InputError`.
    Missing parent directories are fine: :func:`atomic_write` creates them.
    """
    path = Path(path)
    if path.is_symlink():
        raise InputError(f"{path}: the {what} is a symbolic link; kcompile replaces output files whole and would "
                         "replace the link itself: give the real path")
    if path.is_dir():
        raise InputError(f"{path}: the {what} is a directory; give a file name")
    if path.exists() and not path.stat().st_mode & 0o222:
        raise InputError(f"{path}: the {what} is write-protected; make it writable or choose another path")
    check_writable_parent(path, what)
    return path


def check_writable_parent(path: str | Path, what: str = "output file") -> None:
    """Refuse, before any work, a ``path`` whose nearest existing parent is not a directory that takes new files.

    The parent is probed by creating and removing a temporary file in it, so a
    read-only file system, ``/proc`` or a directory the user cannot write (root
    included, where the file system refuses) is caught here rather than after a
    simulation. Raises :class:`~kcompile.errors.InputError` naming ``path``.
    """
    path = Path(path)
    parent = next((p for p in path.absolute().parents if p.exists()), Path("/"))
    if not parent.is_dir():
        raise InputError(f"{path}: {parent} is not a directory, so the {what} cannot be written there")
    try:
        fd, probe = tempfile.mkstemp(prefix=".kcompile-probe.", dir=parent)
    except OSError as exc:
        raise InputError(f"{path}: the {what} cannot be written there ({parent} refuses new files: "
                         f"{exc.strerror or exc}); choose another path") from None
    os.close(fd)
    os.unlink(probe)


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):  # some file systems cannot sync a directory; the rename is still atomic
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_write(path: str | Path, mode: str = "wb", what: str = "output file") -> Iterator[IO]:
    """Open ``path`` for writing so that it appears whole or not at all.

    Parameters
    ----------
    path : str or Path
        The file to write; missing parent directories are created. Checked
        first with :func:`check_output_file`.
    mode : {"wb", "w"}
        Binary or text (UTF-8).
    what : str
        How messages name the file (e.g. ``"JUnit report"``).

    Yields
    ------
    file object
        A temporary file in the same directory. When the block ends it is
        flushed, fsynced and renamed over ``path``; on any exception it is
        removed and ``path`` is left as it was. The new file gets the mode an
        ordinary ``open`` would give (0o666 less the umask).
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"The 'mode' parameter of atomic_write must be 'wb' or 'w'. Got {mode!r} instead.")
    path = check_output_file(path, what)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~umask())
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            fd = -1  # the file object owns it now
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


class _NoAliasLoader(yaml.SafeLoader):
    """PyYAML's safe loader without anchors and aliases: ``&a``/``*a`` expand before anything can be checked
    (a 384-byte "billion laughs" flow grew to 72 MB), and no hand-written flow needs them."""

    def compose_node(self, parent, index):
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise yaml.composer.ComposerError(None, None, "anchors and aliases (&name, *name) are not allowed; "
                                              "write the values out", event.start_mark)
        return super().compose_node(parent, index)


def read_yaml(path: str | Path, what: str = "YAML file"):
    """Parse a small, hand-written YAML file safely: UTF-8, at most :data:`MAX_YAML_BYTES`, no tags, anchors
    or aliases, bounded nesting.

    Raises
    ------
    InputError
        Naming the file (and the line, where PyYAML knows it) for anything else.
    """
    path = Path(path)
    with open(path, "rb") as f:
        data = f.read(MAX_YAML_BYTES + 1)
    if len(data) > MAX_YAML_BYTES:
        raise InputError(f"{path}: larger than {MAX_YAML_BYTES >> 10} KiB, too large for a {what}")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not UTF-8 text (byte {exc.start}); save the {what} as UTF-8") from None
    try:
        return yaml.load(text, Loader=_NoAliasLoader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = f" at line {mark.line + 1}" if mark else ""
        raise InputError(f"{path}: not valid YAML{line} ({exc.problem or exc.context})") from None
    except yaml.YAMLError as exc:
        raise InputError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    except RecursionError:
        raise InputError(f"{path}: nested too deeply to be a {what}") from None
