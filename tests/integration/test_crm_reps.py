"""reps.csv's lead, active, timezone, digest_at and locale reach the store; absent columns change nothing."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from mailsync.admin.crm_import import import_crm
from storage import models as m


def import_reps(settings, repo, tmp_path, text):
    folder = tmp_path / f"crm{len(list(tmp_path.glob('crm*')))}"
    folder.mkdir()
    (folder / "reps.csv").write_text(text, encoding="utf-8")
    return import_crm(settings, repo, [folder], {})


def reps(repo):
    with repo.session() as s:
        return {
            r.email: (r.lead, r.active, r.timezone, r.digest_at, r.locale)
            for r in s.scalars(select(m.Rep).order_by(m.Rep.email))
        }


@pytest.mark.both_dbs
def test_rep_columns_are_stored_and_a_file_without_them_keeps_them(settings, repo, tmp_path):
    report = import_reps(
        settings,
        repo,
        tmp_path,
        "email,name,team,lead,active,timezone,digest_at,locale\n"
        "dana@northwind.example,Dana,East,mia@northwind.example,true,America/New_York,07:30,en_US\n"
        "old@northwind.example,Old,East,mia@northwind.example,no,,,\n"
        "mia@northwind.example,Mia,Management,,,Europe/Berlin,bad,de_DE\n",
    )
    assert report.files.errors == []
    assert [w.split(", ", 1)[1] for w in report.files.warnings] == [
        "column digest_at: not a time of day: 'bad' (write HH:MM, e.g. 07:30); left empty"
    ]
    expected = {
        "dana@northwind.example": ("mia@northwind.example", True, "America/New_York", "07:30", "en_US"),
        "mia@northwind.example": (None, True, "Europe/Berlin", None, "de_DE"),
        "old@northwind.example": ("mia@northwind.example", False, None, None, None),  # departed: no digest
    }
    assert reps(repo) == expected
    import_reps(settings, repo, tmp_path, "email,name,team\ndana@northwind.example,Dana W.,East\n")
    assert reps(repo) == expected  # an older reps.csv without the columns keeps what they said
    import_reps(settings, repo, tmp_path, "email,active,timezone\nold@northwind.example,1,\n")
    assert reps(repo)["old@northwind.example"] == ("mia@northwind.example", True, None, None, None)
