"""reps.csv's optional columns (lead, active, timezone, digest_at, locale): a bad value is a warning."""

from __future__ import annotations

import pytest

from config.settings import load_settings
from mailsync.admin.crm_csv import read_crm_files
from tests.conftest import DEMO, write_config

HEADER = "email,name,team,lead,active,timezone,digest_at,locale\n"


@pytest.fixture
def stage_for(tmp_path):
    return load_settings(write_config(tmp_path)).stage_for


def read(tmp_path, stage_for, text):
    path = tmp_path / "reps.csv"
    path.write_text(text, encoding="utf-8")
    return read_crm_files({"reps": path}, stage_for, known={}), str(path)


def test_optional_columns_are_read_and_normalised(tmp_path, stage_for):
    result, _ = read(
        tmp_path,
        stage_for,
        HEADER + "dana@northwind.example,Dana,East,Mia@Northwind.example,yes,America/New_York,7:05,de-de\n"
        "sam@northwind.example,Sam,West,,FALSE,,,\n"
        "mia@northwind.example,Mia,Management,,,Europe/Berlin,18:30,en_US\n",
    )
    assert (result.errors, result.warnings) == ([], [])
    dana, sam, mia = result.rows["reps"]
    assert dana == {"email": "dana@northwind.example", "name": "Dana", "team": "East", "lead": "mia@northwind.example",
                    "active": True, "timezone": "America/New_York", "digest_at": "07:05", "locale": "de_DE"}  # fmt: skip
    assert (sam["active"], sam["lead"], sam["timezone"], sam["digest_at"], sam["locale"]) == (
        False,
        None,
        None,
        None,
        None,
    )
    assert "active" not in mia  # empty: no statement (a rep deactivated since stays so; a new one is active)
    older, _ = read(tmp_path, stage_for, "email,name,team\ndana@northwind.example,Dana,East\n")
    # Columns a file lacks are left out, so re-importing an older reps.csv keeps what is stored.
    assert older.rows["reps"] == [{"email": "dana@northwind.example", "name": "Dana", "team": "East"}]


def test_a_bad_optional_value_is_a_warning_with_file_line_and_column_and_left_empty(tmp_path, stage_for):
    result, path = read(
        tmp_path,
        stage_for,
        HEADER + "dana@northwind.example,Dana,East,mia at northwind,maybe,Mars/Olympus,25:00,xx_YY\n",
    )
    assert result.errors == []  # the rep is imported...
    [dana] = result.rows["reps"]
    assert (dana["lead"], dana["timezone"], dana["digest_at"], dana["locale"]) == (None, None, None, None)
    assert "active" not in dana  # unreadable: no statement either
    assert result.warnings == [  # ...with every bad value named
        f"{path}:2, column lead: not an email address: 'mia at northwind'; left empty",
        f"{path}:2, column active: not true or false: 'maybe' (write true/false, yes/no or 1/0); left empty",
        f"{path}:2, column timezone: unknown time zone 'Mars/Olympus' (write an IANA name such as Europe/Berlin); left empty",
        f"{path}:2, column digest_at: not a time of day: '25:00' (write HH:MM, e.g. 07:30); left empty",
        f"{path}:2, column locale: unknown locale 'xx_YY' (write a language and region such as en_US or de_DE); left empty",
    ]


def test_a_lead_who_is_no_rep_is_kept_with_a_warning(tmp_path, stage_for):
    result, path = read(tmp_path, stage_for, "email,lead\ndana@northwind.example,boss@northwind.example\n")
    assert result.rows["reps"][0]["lead"] == "boss@northwind.example"
    assert result.warnings == [
        f"{path}:2, column lead: unknown rep 'boss@northwind.example' (not in reps.csv nor in the database); imported anyway"
    ]


def test_the_demo_reps_name_their_lead(stage_for):
    result = read_crm_files({"reps": DEMO / "crm" / "reps.csv"}, stage_for, known={})
    assert result.warnings == []
    assert {r["email"]: r.get("lead") for r in result.rows["reps"]} == {
        "dana@northwind.example": "mia@northwind.example",
        "sam@northwind.example": "mia@northwind.example",
        "mia@northwind.example": None,
    }
