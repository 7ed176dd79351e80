"""The two functions of the Python API that compose stages: ``kcompile.build`` and ``kcompile.verify``.

Everything else the package exports is a stage's own public function or
class, re-exported by name (``kcompile/__init__.py``; docs/api.md).
"""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path
from typing import Callable

from .build import Build
from .build import build as _build_directory
from .errors import InputError, WeightsError
from .flow import Flow, load_flow
from .knet import KNet, save_knet
from .scaling import Scaling
from .verify import FlowResult, run_flow


def build(weights: str | Path | KNet, out_dir: str | Path, scaling: Scaling | None = None,
          **options) -> Build:
    """Compile a network into the build directory ``out_dir`` and return it opened (:class:`~kcompile.build.Build`).

    Parameters
    ----------
    weights : str, Path or KNet
        A ``kcompile.knet/1`` weights file, or a network in memory (from
        :func:`kcompile.load`, :func:`kcompile.make_knet`, ...). An in-memory
        network is written to a temporary weights file and read back with
        every check a file gets, so one that breaks the contract is refused
        the same way; it records no test inputs.
    out_dir : str or Path
        The build directory (replaced only if empty or an earlier build).
    scaling : Scaling, optional
        Volts, amperes and farads per model unit (default: identity for
        behavioural cells, the PDK's for transistor cells).
    **options
        The other options of :func:`kcompile.build.build`: ``cells``, ``pdk``,
        ``corner``, ``allow_clipped``, ``points_per_layer``, ``refine_steps``,
        ``solver``, and for transistor cells ``scaling_mode``, ``calibration``,
        ``max_error``, ``allow_out_of_budget``, ``max_devices``, ``cell_area``.
    """
    if not isinstance(weights, KNet):
        return _build_directory(weights, out_dir, scaling, **options)
    with tempfile.TemporaryDirectory(prefix="kcompile-in-memory-") as tmp:
        path = Path(tmp) / "knet.npz"
        save_knet(weights, path)
        try:
            return _build_directory(path, out_dir, scaling, **options)
        except WeightsError as exc:
            raise InputError(str(exc).replace(str(path), "the in-memory KNet")) from None


def verify(flow: str | Path | Flow, *, jobs: int | None = None, scheduler: str | None = None,
           cache: str | Path | None = None, progress: Callable[[str, int, int], None] | None = None,
           work_dir: str | Path | None = None) -> FlowResult:
    """Run a verification flow (``flows/NAME.yaml``, docs/verification.md) and return its result.

    Parameters
    ----------
    flow : str, Path or Flow
        A flow file (loaded and validated with :func:`kcompile.flow.load_flow`) or a loaded flow.
    jobs, scheduler, cache
        Replace the flow's own (as ``kcompile verify``'s ``--jobs``, ``--scheduler``, ``--cache`` do).
    progress : callable, optional
        ``progress(label, done, total)`` as samples finish.
    work_dir : str or Path, optional
        Keep the flow's builds there (default: a temporary directory, removed).

    Returns
    -------
    FlowResult
        ``.passed``, ``.gates``, ``.levels`` (outputs and states of every level), ``.monte_carlo``.
    """
    flow = flow if isinstance(flow, Flow) else load_flow(flow)
    overrides = {"jobs": jobs, "scheduler": scheduler, "cache": None if cache is None else Path(cache)}
    flow = dataclasses.replace(flow, **{k: v for k, v in overrides.items() if v is not None})
    return run_flow(flow, progress=progress, work_dir=None if work_dir is None else Path(work_dir))
