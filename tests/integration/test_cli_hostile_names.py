"""Names an IMAP server decides, printed by the CLI: rich markup in them is shown as written."""

from __future__ import annotations

from mailsync.cli import main
from tests.support.config import imap_config
from tests.support.mail import plain_mail

FOLDER = "[link=javascript:alert(1)]y [red]x :warning:"  # no "." or "/": Dovecot's hierarchy separators


def test_a_folder_name_with_markup_is_printed_literally(dovecot, imap_user, tmp_path, monkeypatch, capsys):
    dovecot.create_folder(imap_user.name, FOLDER)
    dovecot.append(imap_user.name, FOLDER, plain_mail("markup in the folder name"))
    config = str(
        imap_config(tmp_path, dovecot, imap_user.name, imap_user.password, monkeypatch, folders=[FOLDER])
    )
    assert main(["-c", config, "db", "upgrade"]) == 0
    code = main(["-c", config, "sync", "--once"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert f"│ imap    │ {FOLDER} │ 1 " in out
    assert f"{FOLDER} ━" in err  # the progress line
    assert main(["-c", config, "status"]) == 0
    assert f"│ imap    │ {FOLDER} │" in capsys.readouterr().out
