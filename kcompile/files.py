"""Small file helpers shared by the stages."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

ENV_CACHE = "KCOMPILE_CACHE"


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
