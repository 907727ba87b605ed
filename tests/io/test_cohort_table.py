from __future__ import annotations

import pytest

from femurseg.errors import InputError
from femurseg.io.cohort_table import case_column, read_cohort_table


def test_reads_rows_strips_values_and_accepts_bom(tmp_path):
    p = tmp_path / "cohort.csv"
    p.write_bytes("\ufeffcase_id, sex ,age\nA01, F ,61\nA02,M,\n".encode("utf-8"))
    rows = read_cohort_table(p)
    assert rows == [{"case_id": "A01", "sex": "F", "age": "61"}, {"case_id": "A02", "sex": "M", "age": ""}]
    assert case_column(p, "sex") == {"A01": "F", "A02": "M"}


@pytest.mark.parametrize(
    "text, match",
    [
        ("id,sex\nA,F\n", "needs a 'case_id' column"),
        ("case_id,sex\nA,F\nA,M\n", "appears more than once"),
        ("case_id,sex\nA,F\n,M\n", "line 3 has an empty case_id"),
    ],
)
def test_refuses_bad_tables(tmp_path, text, match):
    p = tmp_path / "cohort.csv"
    p.write_text(text, encoding="utf-8")
    with pytest.raises(InputError, match=match):
        read_cohort_table(p)


def test_missing_file_unknown_column_and_bad_encoding(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        read_cohort_table(tmp_path / "cohort.csv")
    p = tmp_path / "cohort.csv"
    p.write_text("case_id,sex\nA,F\n", encoding="utf-8")
    with pytest.raises(InputError, match="no column 'age'; it has sex"):
        case_column(p, "age")
    p.write_bytes(b"case_id,sex\nA,\xff\xfe\n")
    with pytest.raises(InputError, match="not a readable UTF-8 CSV"):
        read_cohort_table(p)
