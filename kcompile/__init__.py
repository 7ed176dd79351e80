"""kcompile: compile a trained KirchhoffNet into a SPICE circuit and verify it.

Data flows one way, one stage per module::

    knet (load/validate) -> reference (NumPy ODE)      \\
                         -> netlist (Jinja) -> ngspice -> compare -> report

The Python API (docs/api.md)::

    import kcompile
    b = kcompile.build("examples/random_relu.npz", "build/example")  # a path or an in-memory KNet
    x = b.recorded("inputs")[:4]
    spice = b.simulate(x)                                # ngspice, with the CLI's defaults
    ideal = kcompile.integrate(b.knet, x)                # the NumPy reference
    result = kcompile.verify("flows/ci.yaml")            # a verification flow

The names below are imported on first use, so ``import kcompile`` itself
loads neither NumPy nor any stage. ``kcompile.build``, ``kcompile.verify``
and ``kcompile.compare`` are functions; the stage modules of the same names
are reached with ``from kcompile.build import ...`` or
``importlib.import_module("kcompile.build")``.
"""

import importlib as _importlib
import sys as _sys
import types as _types

__version__ = "0.1.0"

#: public name -> (module, name there)
_EXPORTS = {
    "load": ("knet", "load_knet"),
    "make_knet": ("knet", "make_knet"),
    "random_knet": ("knet", "random_knet"),
    "KNet": ("knet", "KNet"),
    "build": ("api", "build"),
    "open_build": ("build", "open_build"),
    "Build": ("build", "Build"),
    "Scaling": ("scaling", "Scaling"),
    "integrate": ("reference", "integrate"),
    "Trajectory": ("reference", "Trajectory"),
    "SpiceResult": ("simulate", "SpiceResult"),
    "compare": ("compare", "compare"),
    "Comparison": ("compare", "Comparison"),
    "verify": ("api", "verify"),
    "FlowResult": ("verify", "FlowResult"),
    "KCompileError": ("errors", "KCompileError"),
    "InputError": ("errors", "InputError"),
    "SimulatorError": ("errors", "SimulatorError"),
    "WeightsError": ("errors", "WeightsError"),
}
_SUBMODULES = ("interop",)  # reachable as attributes without an import of their own

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    if name in _SUBMODULES:
        return _importlib.import_module(f"{__name__}.{name}")
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module, attr = _EXPORTS[name]
    value = getattr(_importlib.import_module(f"{__name__}.{module}"), attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS) | set(_SUBMODULES))


class _Package(_types.ModuleType):
    """Importing the stage module ``kcompile.build`` must not replace the function ``kcompile.build``.

    The import system binds every submodule as an attribute of its package;
    for the exported names that are also module names (build, verify,
    compare) this keeps the function.
    """

    def __setattr__(self, name, value):
        if name in _EXPORTS and isinstance(value, _types.ModuleType):
            return
        super().__setattr__(name, value)


_sys.modules[__name__].__class__ = _Package
