"""``python -m kcompile``: the command line (:mod:`kcompile.cli`)."""

from .cli import main

main()
