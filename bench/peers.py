"""The peers the capture bench measures mailsync against, each timed on its own fresh output.

- mbsync (isync) pulling the folder into a Maildir, its default fsync;
- the floor: a bare imapclient loop, `UID FETCH BODY.PEEK[]` in batches of 500, each message written
  to a file and one `syncfs` per batch (the durability mailsync's capture promises per batch);
- `notmuch new` indexing mbsync's Maildir (a fresh notmuch database each time);
- bare mail-parser (`parse_from_bytes`) over the same messages, in this process.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
import textwrap
import time
from pathlib import Path
from typing import TYPE_CHECKING

from imapclient import IMAPClient

if TYPE_CHECKING:
    from collections.abc import Sequence

    from tests.support.dovecot import DovecotServer

FETCH_BATCH = 500
MBSYNC_STATE = (
    ".mbsyncstate",
    ".mbsyncstate.journal",
    ".mbsyncstate.new",
    ".mbsyncstate.lock",
    ".uidvalidity",
)
_LIBC = ctypes.CDLL("libc.so.6", use_errno=True)


class PeerMissingError(RuntimeError):
    """A peer's program is not installed."""


def _need(program: str) -> str:
    found = shutil.which(program)
    if found is None:
        raise PeerMissingError(f"{program} is not installed: run scripts/install-system-deps.sh")
    return found


def mbsync(server: DovecotServer, user: str, password: str, folder: str, out: Path) -> float:
    """Seconds for mbsync to pull `folder` into the Maildir `out`/INBOX."""
    binary = _need("mbsync")
    out.mkdir(parents=True)
    rc = out / "mbsyncrc"
    rc.write_text(
        textwrap.dedent(f"""\
            IMAPAccount dovecot
            Host {server.host}
            Port {server.port}
            User {user}
            Pass {password}
            SSLType None
            AuthMechs LOGIN

            IMAPStore remote
            Account dovecot

            MaildirStore local
            Path {out}/
            Inbox {out}/INBOX
            SubFolders Verbatim

            Channel pull
            Far :remote:{folder}
            Near :local:INBOX
            Create Near
            Sync Pull
            SyncState *
            """)
    )
    began = time.perf_counter()
    subprocess.run([binary, "-q", "-c", str(rc), "pull"], check=True, stderr=subprocess.DEVNULL)
    return time.perf_counter() - began


def bare_fetch(server: DovecotServer, user: str, password: str, folder: str, out: Path) -> float:
    """Seconds for the floor: fetch every message, write it to a file, `syncfs` once per batch."""
    out.mkdir(parents=True)
    began = time.perf_counter()
    with IMAPClient(server.host, port=server.port, ssl=False) as client:
        client.login(user, password)
        client.select_folder(folder, readonly=True)
        uids = client.search("ALL")
        directory = os.open(out, os.O_RDONLY | os.O_DIRECTORY)
        try:
            for start in range(0, len(uids), FETCH_BATCH):
                for uid, data in client.fetch(uids[start : start + FETCH_BATCH], ["BODY.PEEK[]"]).items():
                    fd = os.open(out / f"{uid}.eml", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                    try:
                        os.write(fd, data[b"BODY[]"])
                    finally:
                        os.close(fd)
                if _LIBC.syncfs(directory) != 0:  # the batch's files and their names, in one call
                    raise OSError(ctypes.get_errno(), "syncfs failed")
        finally:
            os.close(directory)
    return time.perf_counter() - began


def count_maildir(maildir: Path) -> int:
    return sum(1 for sub in ("cur", "new") for _ in (maildir / sub).iterdir())


def notmuch_new(maildir: Path) -> float:
    """Seconds for `notmuch new` to index `maildir` into a fresh database (the old one is removed)."""
    binary = _need("notmuch")
    shutil.rmtree(maildir / ".notmuch", ignore_errors=True)
    config = maildir.parent / "notmuch-config"
    config.write_text(
        f"[database]\npath={maildir}\n\n[new]\ntags=unread;inbox;\nignore={';'.join(MBSYNC_STATE)}\n"
        "\n[maildir]\nsynchronize_flags=true\n"
    )
    env = {**os.environ, "NOTMUCH_CONFIG": str(config)}
    began = time.perf_counter()
    subprocess.run([binary, "new", "--quiet"], check=True, env=env, stdout=subprocess.DEVNULL)
    return time.perf_counter() - began


def bare_mailparser(messages: Sequence[bytes]) -> float:
    """Seconds for mail-parser's `parse_from_bytes` over every message, reading its text and attachments."""
    import mailparser  # noqa: PLC0415 - only this peer needs it

    began = time.perf_counter()
    for raw in messages:
        parsed = mailparser.parse_from_bytes(raw)
        _ = (parsed.text_plain, parsed.text_html, parsed.attachments, parsed.headers)
    return time.perf_counter() - began
