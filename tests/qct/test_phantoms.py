"""Phantom specs: presets, certificates, JSON phantoms, units."""

from __future__ import annotations

import json

import pytest

from femurseg.errors import InputError
from femurseg.qct.phantoms import (
    MINDWAYS_K2HPO4,
    MINDWAYS_WATER,
    PRESETS,
    PhantomSpec,
    RodSpec,
    load_phantom_spec,
    mindways_model3,
    phantom_spec,
)
from femurseg.qct.units import Material


def test_units_name_their_material() -> None:
    assert Material.K2HPO4.unit == "mg/cm³ K2HPO4"
    assert Material.HA.unit == "mg/cm³ HA"
    assert Material.K2HPO4 != Material.HA


def test_mindways_default_certificate_is_ogo_example() -> None:
    spec = PRESETS["mindways_model3"]
    assert spec.model == "two-component" and spec.material is Material.K2HPO4
    assert [r.density for r in spec.rods] == list(MINDWAYS_K2HPO4)
    assert [r.water_density for r in spec.rods] == list(MINDWAYS_WATER)
    assert spec.rods[0].density == -51.83 and spec.rods[4].water_density == 923.20


def test_mindways_with_own_certificate() -> None:
    k = [-50.0, -52.0, 60.0, 150.0, 370.0]
    spec = mindways_model3(k2hpo4=k, water=MINDWAYS_WATER)
    assert [r.density for r in spec.rods] == k and spec.source == "user certificate"
    with pytest.raises(InputError, match="5 rods"):
        mindways_model3(k2hpo4=k[:4])


def test_ha_presets_are_linear_in_ha() -> None:
    for name in ("qrm_bdc", "image_analysis_cha", "qrm_esp"):
        spec = phantom_spec(name)
        assert spec.material is Material.HA and spec.model == "linear" and spec.unit == "mg/cm³ HA"
    assert [r.density for r in PRESETS["qrm_esp"].rods] == [50.0, 100.0, 200.0]
    assert not PRESETS["qrm_esp"].detectable


def test_json_phantom_round_trip(tmp_path) -> None:
    path = tmp_path / "mine.json"
    path.write_text(json.dumps({"name": "mine", "material": "HA", "model": "linear",
                                "rods": [{"name": "lo", "density": 0}, {"name": "hi", "density": 150}],
                                "rod_radius_mm": [4, 9], "pitch_mm": [25, 45]}), encoding="utf-8")
    spec = phantom_spec(path)
    assert spec.name == "mine" and spec.material is Material.HA
    assert spec.rod_radius_mm == (4.0, 9.0) and spec.pitch_mm == (25.0, 45.0)
    again = tmp_path / "again.json"
    again.write_text(json.dumps(spec.to_dict()), encoding="utf-8")
    assert load_phantom_spec(again) == spec


@pytest.mark.parametrize("data, match", [
    ({"material": "calcium", "rods": [{"name": "a", "density": 0}, {"name": "b", "density": 1}]}, "material"),
    ({"material": "HA"}, "rods"),
    ({"material": "K2HPO4", "model": "two-component",
      "rods": [{"name": "a", "density": 0}, {"name": "b", "density": 100}]}, "water density"),
    ({"material": "HA", "rods": [{"name": "a", "density": 0}]}, "at least 2 rods"),
])
def test_bad_json_phantoms_are_refused(tmp_path, data, match) -> None:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(InputError, match=match):
        load_phantom_spec(path)


def test_unknown_phantom_is_refused() -> None:
    with pytest.raises(InputError, match="unknown phantom"):
        phantom_spec("no_such_phantom")
    with pytest.raises(InputError, match="does not exist"):
        load_phantom_spec("/nonexistent/phantom.json")
    with pytest.raises(InputError, match="repeated"):
        PhantomSpec("x", Material.HA, "linear", (RodSpec("a", 0.0), RodSpec("a", 1.0)))
