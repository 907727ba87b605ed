from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from femurseg.config import from_dict, load_json, save_json, to_dict
from femurseg.errors import InputError
from femurseg.models.preprocessing import Preprocessing


@dataclass(frozen=True)
class _Inner:
    a: int = 1
    b: tuple[float, float] = (0.5, 1.5)


@dataclass(frozen=True)
class _Outer:
    name: str = "x"
    inner: _Inner = field(default_factory=_Inner)
    opt: float | None = None


def test_round_trip_nested(tmp_path):
    obj = _Outer(name="y", inner=_Inner(a=3, b=(2.0, 4.0)), opt=0.25)
    assert from_dict(_Outer, to_dict(obj)) == obj
    path = save_json(obj, tmp_path / "c.json")
    assert load_json(_Outer, path) == obj


def test_defaults_fill_missing_keys():
    assert from_dict(_Outer, {"inner": {"a": 7}}) == _Outer(inner=_Inner(a=7))


@pytest.mark.parametrize(
    "data, fragment",
    [({"nme": "x"}, "unknown key"), ({"inner": {"a": "3"}}, "inner.a"), ({"inner": {"b": [1.0]}}, "expected 2"),
     ({"opt": "big"}, "opt")],
)
def test_bad_values_are_refused_with_the_key(data, fragment):
    with pytest.raises(InputError, match=fragment):
        from_dict(_Outer, data)


def test_preprocessing_validates():
    with pytest.raises(InputError):
        from_dict(Preprocessing, {"hu_window": [100.0, -100.0]})
    assert from_dict(Preprocessing, to_dict(Preprocessing())) == Preprocessing()


def test_saved_json_is_readable_by_others(tmp_path):
    path = save_json(_Outer(), tmp_path / "c.json")
    assert path.stat().st_mode & 0o777 == 0o644
