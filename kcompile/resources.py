"""Where kcompile's data files live: Jinja templates and MOSFET model cards.

In a checkout they are the repository's top-level ``templates/`` and
``pdk_models/``; an installed wheel carries the same files as package data
(``kcompile/templates``, ``kcompile/pdk_models``). ``KCOMPILE_TEMPLATES``
points at another template tree.
"""

from __future__ import annotations

import os
from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def _data_dir(name: str) -> Path:
    """``name`` shipped inside the package (a wheel), else the checkout's top-level folder."""
    for candidate in (_PACKAGE / name, _PACKAGE.parent / name):
        if candidate.is_dir():
            return candidate
    return _PACKAGE.parent / name


TEMPLATE_DIR = Path(os.environ.get("KCOMPILE_TEMPLATES") or _data_dir("templates"))
PDK_MODELS_DIR = _data_dir("pdk_models")
