"""The paper's splits: a stratified hold-out and K folds, the same hold-out subjects in the sex experiments."""

from __future__ import annotations

from collections import Counter

import pytest

from femurseg.errors import InputError
from femurseg.evaluation.splits import Subject, normalise_sex, protocol_splits, read_splits, write_splits


def _paper_like(n_f: int = 216, n_m: int = 181, one_hip: int = 20) -> list[Subject]:
    out = [Subject(f"f{i:03d}", "F", 1 if i < one_hip // 2 else 2) for i in range(n_f)]
    return out + [Subject(f"m{i:03d}", "M", 1 if i < one_hip // 2 else 2) for i in range(n_m)]


def test_the_paper_design_on_397_subjects() -> None:
    subjects = _paper_like()
    s = protocol_splits(subjects, folds=10, test_fraction=0.1, seed=7)
    assert len(s["holdout"]) == 40  # 10 % of 397
    sex = Counter(c[0] for c in s["holdout"])
    assert abs(sex["f"] - 40 * 216 / 397) <= 1 and abs(sex["m"] - 40 * 181 / 397) <= 1
    folds = s["cohorts"]["all"]["folds"]
    sizes = [len(f) for f in folds]
    assert len(folds) == 10 and max(sizes) - min(sizes) <= 1 and sum(sizes) == 357
    everyone = set(s["holdout"]) | {c for f in folds for c in f}
    assert everyone == {x.case_id for x in subjects}
    assert not set(s["holdout"]) & {c for f in folds for c in f}
    for f in folds:  # each fold keeps the cohort's share of women (±1 subject)
        assert abs(sum(c[0] == "f" for c in f) - len(f) * 216 / 397) <= 1.5
    # The sex experiments: the same hold-out subjects of their sex, the whole cohort's folds restricted.
    for cohort, letter in (("male", "m"), ("female", "f")):
        c = s["cohorts"][cohort]
        assert c["holdout"] == [x for x in s["holdout"] if x[0] == letter]
        assert c["folds"] == [[x for x in f if x[0] == letter] for f in folds]


def test_splits_are_fixed_by_the_seed() -> None:
    subjects = _paper_like(30, 25)
    assert protocol_splits(subjects, seed=3) == protocol_splits(list(reversed(subjects)), seed=3)
    assert protocol_splits(subjects, seed=3)["holdout"] != protocol_splits(subjects, seed=4)["holdout"]


def test_sex_experiments_need_a_sex_column_and_enough_subjects() -> None:
    no_sex = [Subject(f"c{i}") for i in range(30)]
    with pytest.raises(InputError, match="sex column"):
        protocol_splits(no_sex, folds=5)
    assert protocol_splits(no_sex, folds=5, cohorts=("all",))["cohorts"]["all"]["folds"]
    with pytest.raises(InputError, match="fewer folds"):
        protocol_splits(_paper_like(6, 6, 0), folds=10)
    with pytest.raises(InputError, match="unique"):
        protocol_splits([Subject("a", "F"), Subject("a", "M")])


def test_sex_spellings_and_the_json_round_trip(tmp_path) -> None:
    assert [normalise_sex(v) for v in ("M", "male", " Female ", "w", "", None)] == ["M", "M", "F", "F", None, None]
    with pytest.raises(InputError):
        normalise_sex("x")
    s = protocol_splits(_paper_like(20, 20, 0), folds=5, seed=1)
    path = write_splits(s, tmp_path / "splits.json")
    assert read_splits(path) == s
    with pytest.raises(InputError, match="exists"):
        write_splits(s, path)
