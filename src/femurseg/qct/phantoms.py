"""Calibration phantoms: their rods, certificate densities, model and layout.

A :class:`PhantomSpec` says what a phantom holds (rods and their certificate densities, in one material), which
model maps its rods to HU (the Mindways two-component model or a plain line) and the layout the detector looks
for (rods parallel to the scanner's z axis, in one row at a constant pitch, listed in their order along the row).

Presets (:data:`PRESETS`; certificate values are defaults, every phantom's own certificate differs: pass yours):

- ``"mindways_model3"``: Mindways Model 3 CT phantom, K2HPO4 in water-equivalent resin, rods A–E, two-component
  model.  Default certificate: the example values used as defaults by the open-source Bonelab *Ogo* tool.
- ``"qrm_bdc"``: QRM bone density calibration phantom, 0/100/200 mg HA/cm³ (verify against your certificate).
- ``"image_analysis_cha"``: Image Analysis CHA phantom, about 0/75/150 mg HA/cm³ (verify).
- ``"qrm_esp"``: QRM European Spine Phantom, 50/100/200 mg HA/cm³; its inserts are vertebrae stacked along z,
  not rods, so it cannot be found automatically: measure the inserts and use
  :func:`femurseg.qct.calibration.fit_calibration`.

A phantom of your own is a small JSON file (:func:`load_phantom_spec`)::

    {"name": "my phantom", "material": "HA", "model": "linear",
     "rods": [{"name": "R0", "density": 0}, {"name": "R100", "density": 100}, {"name": "R200", "density": 200}],
     "rod_radius_mm": [4, 10], "pitch_mm": [20, 60]}

with ``"water"`` [mg/cm³] on every rod for ``"model": "two-component"``.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Sequence

from femurseg.errors import InputError
from femurseg.qct.units import Material

__all__ = [
    "RodSpec",
    "PhantomSpec",
    "MODELS",
    "MINDWAYS_K2HPO4",
    "MINDWAYS_WATER",
    "mindways_model3",
    "PRESETS",
    "phantom_spec",
    "load_phantom_spec",
]

#: Calibration models: ``"two-component"`` (Mindways: HU = ρ_water + σ_ref·ρ + β_ref per rod) and ``"linear"``
#: (HU = intercept + slope·ρ).
MODELS: tuple[str, ...] = ("two-component", "linear")

#: Example certificate of a Mindways Model 3 phantom, rods A–E (Bonelab Ogo's defaults; see docs/qct.md):
#: K2HPO4 density [mg/cm³ K2HPO4] and water-equivalent density [mg/cm³].
MINDWAYS_K2HPO4: tuple[float, ...] = (-51.83, -53.40, 58.88, 157.05, 375.83)
MINDWAYS_WATER: tuple[float, ...] = (1012.25, 1056.95, 1103.57, 1119.52, 923.20)


@dataclass(frozen=True)
class RodSpec:
    """One rod of a phantom's certificate.

    Attributes
    ----------
    name : str
        The rod's name on the certificate (``"A"``, ``"HA100"``, ...).
    density : float
        Its density [mg/cm³ of the phantom's material].
    water_density : float, optional
        Its water-equivalent density [mg/cm³] (two-component phantoms only).
    """

    name: str
    density: float
    water_density: float | None = None


@dataclass(frozen=True)
class PhantomSpec:
    """A calibration phantom: certificate, model and the layout the detector searches for.

    Attributes
    ----------
    name : str
        A name for reports.
    material : Material
        The material of every rod density (and of the calibrated densities).
    model : {"two-component", "linear"}
        How rods map to HU (see :data:`MODELS`).
    rods : tuple of RodSpec
        The rods in their order along the row (either end first).
    rod_radius_mm : (2,) tuple of float
        Range of the rods' radius [mm] searched.
    pitch_mm : (2,) tuple of float
        Range of the centre-to-centre distance of neighbouring rods [mm] searched.
    detectable : bool
        Whether the rods run along z in one row (so :func:`~femurseg.qct.calibration.calibrate` can find them).
    water_displacement : float
        Two-component model: water-equivalent mass displaced per mass of K2HPO4 in bone (Mindways: 0.2174).
    water_density : float
        Two-component model: water-equivalent density of mineral-free bone tissue [mg/cm³] (Mindways: 999.6).
    source : str
        Where the certificate values come from.
    """

    name: str
    material: Material
    model: str
    rods: tuple[RodSpec, ...]
    rod_radius_mm: tuple[float, float] = (4.0, 12.0)
    pitch_mm: tuple[float, float] = (20.0, 80.0)
    detectable: bool = True
    water_displacement: float = 0.2174
    water_density: float = 999.6
    source: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "material", _material(self.material))
        object.__setattr__(self, "rods", tuple(self.rods))
        if self.model not in MODELS:
            raise InputError(f"phantom model must be one of {', '.join(MODELS)}, not {self.model!r}")
        if len(self.rods) < 2:
            raise InputError(f"phantom {self.name!r} needs at least 2 rods, it lists {len(self.rods)}")
        names = [r.name for r in self.rods]
        if len(set(names)) != len(names):
            raise InputError(f"phantom {self.name!r} has repeated rod names: {names}")
        for r in self.rods:
            if not math.isfinite(r.density):
                raise InputError(f"rod {r.name} of phantom {self.name!r} has no finite density")
            if self.model == "two-component" and (r.water_density is None or not math.isfinite(r.water_density)):
                raise InputError(f"rod {r.name} of the two-component phantom {self.name!r} needs a water density")
        for what, (lo, hi) in (("rod radius", self.rod_radius_mm), ("pitch", self.pitch_mm)):
            if not 0.0 < lo <= hi:
                raise InputError(f"{what} range {lo}–{hi} mm of phantom {self.name!r} must be positive, low ≤ high")

    @property
    def unit(self) -> str:
        """The unit of the rod densities, e.g. ``"mg/cm³ K2HPO4"``."""
        return self.material.unit

    def to_dict(self) -> dict[str, Any]:
        """JSON-able, in the format :func:`load_phantom_spec` reads."""
        rods = [{"name": r.name, "density": r.density} | ({} if r.water_density is None else {"water": r.water_density})
                for r in self.rods]
        return {"name": self.name, "material": self.material.value, "model": self.model, "rods": rods,
                "rod_radius_mm": list(self.rod_radius_mm), "pitch_mm": list(self.pitch_mm),
                "detectable": self.detectable, "water_displacement": self.water_displacement,
                "water_density": self.water_density, "source": self.source}


def _material(value: Any) -> Material:
    try:
        return Material(value)
    except ValueError:
        raise InputError(f"material must be one of {', '.join(m.value for m in Material)}, not {value!r}") from None


def mindways_model3(*, k2hpo4: Sequence[float] = MINDWAYS_K2HPO4,
                    water: Sequence[float] = MINDWAYS_WATER) -> PhantomSpec:
    """A Mindways Model 3 CT phantom (rods A–E) with your certificate's densities.

    Parameters
    ----------
    k2hpo4 : (5,) sequence of float
        K2HPO4 density of rods A–E [mg/cm³ K2HPO4]; default: the example certificate :data:`MINDWAYS_K2HPO4`.
    water : (5,) sequence of float
        Water-equivalent density of rods A–E [mg/cm³]; default :data:`MINDWAYS_WATER`.

    Returns
    -------
    PhantomSpec
        Two-component model, material K2HPO4.

    Examples
    --------
    >>> spec = mindways_model3()
    >>> [r.name for r in spec.rods], spec.unit
    (['A', 'B', 'C', 'D', 'E'], 'mg/cm³ K2HPO4')
    """
    if len(k2hpo4) != 5 or len(water) != 5:
        raise InputError(f"a Mindways Model 3 has 5 rods; got {len(k2hpo4)} K2HPO4 and {len(water)} water values")
    rods = tuple(RodSpec(n, float(k), float(w)) for n, k, w in zip("ABCDE", k2hpo4, water))
    default = tuple(k2hpo4) == MINDWAYS_K2HPO4 and tuple(water) == MINDWAYS_WATER
    return PhantomSpec(
        name="mindways_model3", material=Material.K2HPO4, model="two-component", rods=rods,
        rod_radius_mm=(5.0, 11.0), pitch_mm=(35.0, 75.0),
        source="example certificate (Bonelab Ogo defaults)" if default else "user certificate",
    )


def _ha_line(name: str, densities: tuple[float, ...], source: str, *, detectable: bool = True) -> PhantomSpec:
    rods = tuple(RodSpec(f"HA{d:g}", d) for d in densities)
    return PhantomSpec(name=name, material=Material.HA, model="linear", rods=rods, detectable=detectable,
                       source=source)


#: Named phantoms; certificate values are defaults (see the module's docstring and docs/qct.md).
PRESETS: dict[str, PhantomSpec] = {
    "mindways_model3": mindways_model3(),
    "qrm_bdc": _ha_line("qrm_bdc", (0.0, 100.0, 200.0), "typical QRM-BDC inserts (verify)"),
    "image_analysis_cha": _ha_line("image_analysis_cha", (0.0, 75.0, 150.0), "typical CHA phantom (verify)"),
    "qrm_esp": _ha_line("qrm_esp", (50.0, 100.0, 200.0), "European Spine Phantom inserts", detectable=False),
}


#: Short names accepted wherever a preset's name is (``femurseg qct --phantom mindways``).
ALIASES: dict[str, str] = {"mindways": "mindways_model3", "qrm": "qrm_bdc", "cha": "image_analysis_cha"}


def phantom_spec(phantom: PhantomSpec | str | os.PathLike[str]) -> PhantomSpec:
    """Resolve a phantom given as a spec, a preset's name or the path of a JSON file.

    Examples
    --------
    >>> phantom_spec("qrm_bdc").unit
    'mg/cm³ HA'
    """
    if isinstance(phantom, PhantomSpec):
        return phantom
    if isinstance(phantom, str) and ALIASES.get(phantom, phantom) in PRESETS:
        return PRESETS[ALIASES.get(phantom, phantom)]
    path = Path(phantom)
    if path.suffix.lower() == ".json" or path.is_file():
        return load_phantom_spec(path)
    raise InputError(f"unknown phantom {str(phantom)!r}: give one of {', '.join([*PRESETS, *ALIASES])} or a JSON file")


def load_phantom_spec(path: str | os.PathLike[str]) -> PhantomSpec:
    """Read a phantom's certificate from JSON (format: the module's docstring).

    Parameters
    ----------
    path : str or PathLike
        The JSON file.

    Returns
    -------
    PhantomSpec

    Raises
    ------
    InputError
        If the file is missing, not JSON, or lacks a material, model or rods.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"phantom file {path} does not exist") from None
    except (OSError, ValueError) as err:
        raise InputError(f"phantom file {path} is not readable JSON: {err}") from None
    try:
        rods = tuple(RodSpec(str(r["name"]), float(r["density"]),
                             None if r.get("water") is None else float(r["water"])) for r in data["rods"])
        spec = PhantomSpec(name=str(data.get("name", path.stem)), material=data["material"],
                           model=str(data.get("model", "linear")), rods=rods, source=str(data.get("source", path.name)))
    except (KeyError, TypeError, ValueError) as err:
        raise InputError(f"phantom file {path} needs 'material' and 'rods' with 'name' and 'density': {err}") from None
    extra = {k: data[k] for k in ("detectable", "water_displacement", "water_density") if k in data}
    for key in ("rod_radius_mm", "pitch_mm"):
        if key in data:
            extra[key] = tuple(float(v) for v in data[key])
    return replace(spec, **extra) if extra else spec
