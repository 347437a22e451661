"""Capture throughput: mailsync's sync against mbsync, a plain imapclient loop and notmuch, same mailbox.

    python -m bench.capture_bench [--messages 2000] [--profile]

Starts a private Dovecot (tests.support.dovecot; needs root as on the project's machines), loads N
realistic 5-20 KB messages by APPEND, then times in one run: (a) mbsync pulling INBOX to a Maildir
(default fsync); (b) the floor: imapclient FETCH BODY.PEEK[] in batches of 500, write + fsync each
file; (c) mailsync's `sync_mailbox` into a fresh SQLite DB + archive (archive, parse, thread, match,
propose) with the demo CRM imported; (d) `notmuch new` indexing the mbsync Maildir. `--profile`
repeats (c) into another fresh DB under cProfile and prints the top functions and the stages.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import cProfile
import csv
import io
import os
import pstats
import random
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from email.utils import format_datetime
from pathlib import Path
from typing import TYPE_CHECKING

if __package__ in {None, ""}:  # `python bench/capture_bench.py`; tests.support lives at the root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from imapclient import IMAPClient
from rich.console import Console
from rich.table import Table

from bench.synth import Crm, Mail, make_mail
from storage.records import ContactRef, CrmSnapshot
from tests.support.config import imap_mailbox
from tests.support.dovecot import DovecotServer, missing_requirement

if TYPE_CHECKING:
    from collections.abc import Callable

    from config.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
DEMO_CRM = ROOT / "fixtures" / "demo" / "crm"
USER, PASSWORD = "bob", "bobpw"
ENV_VAR = "BENCH_IMAP_PW"  # the environment variable mailsync reads the IMAP password from
FETCH_BATCH = 500
STAGES = (  # (label, file suffix, function name) looked up in the profile
    ("archive.put (compress + fsync)", "storage/archive.py", "put"),
    ("identify", "mailsync/mail/identity.py", "identify"),
    ("parse (worker round trip)", "mailsync/mail/parse_worker.py", "parse"),
    ("match_message", "nlp/match.py", "match_message"),
    ("fill_parsed", "storage/mailstore.py", "fill_parsed"),
    ("assign_thread", "storage/mailstore.py", "assign_thread"),
    ("_propose (re-match thread + propose + save)", "mailsync/pipeline/ingest.py", "_propose"),
    ("propose", "nlp/propose.py", "propose"),
    ("session commit", "sqlalchemy/orm/session.py", "commit"),
    ("IMAP fetch", "mailsync/mail/sources/imap.py", "fetch"),
)


# -- the mailbox -------------------------------------------------------------------------------


def _demo_crm() -> Crm:
    """The demo CRM's addresses and domains, enough for make_mail to write to and from them."""
    with (DEMO_CRM / "accounts.csv").open(encoding="utf-8") as f:
        domains = tuple(d for row in csv.DictReader(f) for d in row["domain"].split(";"))
    pairs: list[tuple[str, ContactRef]] = []
    with (DEMO_CRM / "contacts.csv").open(encoding="utf-8") as f:
        for i, row in enumerate(csv.DictReader(f), 1):
            pairs.extend((e, ContactRef(i, row["name"], None, None)) for e in row["email"].split(";"))
    return Crm(snapshot=CrmSnapshot(), contacts=tuple(pairs), domains=domains)


def _html(mail: Mail) -> str:
    paras = "".join(f"<p>{p}</p>" for p in mail.body.split("\n\n"))
    return f'<html><body style="font-family: Arial"><div dir="ltr">{paras}</div></body></html>'


def _to_bytes(mail: Mail, i: int, rng: random.Random, parent: str | None) -> bytes:
    def fmt(addr: object) -> str:
        return f'"{addr.name}" <{addr.email}>'  # type: ignore[attr-defined]

    boundary = f"=_b{i:06d}"
    headers = [
        f"From: {fmt(mail.sender)}",
        f"To: {', '.join(fmt(a) for a in mail.to)}",
        *([f"Cc: {', '.join(fmt(a) for a in mail.cc)}"] if mail.cc else []),
        f"Subject: {mail.subject}",
        f"Date: {format_datetime(mail.sent_at)}",
        f"Message-ID: <bench-{i}@{mail.sender.domain}>",
        *([f"In-Reply-To: <{parent}>", f"References: <{parent}>"] if parent else []),
        "MIME-Version: 1.0",
        "X-Mailer: bench",
        *(
            f"Received: from mx{k}.example (mx{k}.example [192.0.2.{k}]) by mx.example; "
            f"{format_datetime(mail.sent_at)}"
            for k in range(rng.randint(2, 6))
        ),
        f'Content-Type: multipart/mixed; boundary="{boundary}"',
    ]
    alt = f"=_a{i:06d}"
    body = (
        f'--{boundary}\nContent-Type: multipart/alternative; boundary="{alt}"\n\n'
        f"--{alt}\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\n{mail.body}\n"
        f"--{alt}\nContent-Type: text/html; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\n{_html(mail)}\n"
        f"--{alt}--\n"
    )
    parts = [body]
    size = sum(len(p) for p in parts) + 600
    target = rng.randint(5_000, 20_000)
    if target > size:  # an attachment brings it to 5-20 KB, as real business mail is
        blob = base64.encodebytes(rng.randbytes((target - size) * 3 // 4)).decode()
        parts.append(
            f'--{boundary}\nContent-Type: application/pdf; name="doc{i}.pdf"\n'
            f'Content-Disposition: attachment; filename="doc{i}.pdf"\n'
            f"Content-Transfer-Encoding: base64\n\n{blob}"
        )
    return ("\n".join(headers) + "\n\n" + "".join(parts) + f"--{boundary}--\n").encode()


def make_mailbox(count: int) -> list[bytes]:
    """`count` messages to and from the demo CRM's people, threaded (about half are replies)."""
    rng = random.Random(42)  # noqa: S311 - synthetic, deterministic data
    mails = make_mail(_demo_crm(), count, seed=11, long=True)
    out: list[bytes] = []
    ids: list[str] = []
    for i, mail in enumerate(mails):
        parent = rng.choice(ids[-20:]) if ids and mail.subject.startswith("Re:") else None
        out.append(_to_bytes(mail, i, rng, parent))
        ids.append(f"bench-{i}@{mail.sender.domain}")
    return out


# -- the contestants ---------------------------------------------------------------------------


def _timed(run: Callable[[], object]) -> float:
    began = time.perf_counter()
    run()
    return time.perf_counter() - began


def run_mbsync(server: DovecotServer, work: Path) -> tuple[float, Path]:
    local = work / "mbsync"
    local.mkdir()
    rc = work / "mbsyncrc"
    rc.write_text(
        textwrap.dedent(f"""\
            IMAPAccount dovecot
            Host {server.host}
            Port {server.port}
            User {USER}
            Pass {PASSWORD}
            SSLType None
            AuthMechs LOGIN

            IMAPStore remote
            Account dovecot

            MaildirStore local
            Path {local}/
            Inbox {local}/INBOX
            SubFolders Verbatim

            Channel pull
            Far :remote:
            Near :local:
            Patterns INBOX
            Create Near
            Sync Pull
            SyncState *
            """)
    )
    seconds = _timed(
        lambda: subprocess.run(["mbsync", "-q", "-c", str(rc), "pull"], check=True, stderr=subprocess.DEVNULL)
    )
    return seconds, local


def run_floor(server: DovecotServer, work: Path) -> float:
    out = work / "floor"
    out.mkdir()

    def pull() -> None:
        with IMAPClient(server.host, port=server.port, ssl=False) as client:
            client.login(USER, PASSWORD)
            client.select_folder("INBOX", readonly=True)
            uids = client.search("ALL")
            for start in range(0, len(uids), FETCH_BATCH):
                batch = uids[start : start + FETCH_BATCH]
                for uid, data in client.fetch(batch, ["BODY.PEEK[]"]).items():
                    fd = os.open(out / f"{uid}.eml", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                    try:
                        os.write(fd, data[b"BODY[]"])
                        os.fsync(fd)
                    finally:
                        os.close(fd)

    return _timed(pull)


def _mailsync_setup(server: DovecotServer, work: Path) -> Settings:
    from config.settings import load_settings  # noqa: PLC0415 - app imports only where they are timed
    from mailsync.cli import main  # noqa: PLC0415
    from mailsync.logs import configure_logging  # noqa: PLC0415

    work.mkdir()
    os.environ[ENV_VAR] = PASSWORD
    config = work / "mailsync.toml"
    config.write_text(
        'database_url = "sqlite:///var/mailsync.db"\ninternal_domains = ["northwind.example"]\n'
        + imap_mailbox(server, USER, password_env=ENV_VAR, name="bench")
    )
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        for argv in (["db", "upgrade"], ["crm", "import", str(DEMO_CRM)]):
            code = main(["-c", str(config), *argv])
            if code:
                raise RuntimeError(f"mailsync {' '.join(argv)} exited {code}")
    configure_logging(json=False, level="warning")
    return load_settings(config)


def run_mailsync(
    server: DovecotServer, work: Path, profile_to: Path | None = None
) -> tuple[float, dict[str, int]]:
    from config.settings import ParseLimits  # noqa: PLC0415
    from mailsync.mail.parse_worker import ParseWorker  # noqa: PLC0415
    from mailsync.mail.sources.imap import ImapSource  # noqa: PLC0415
    from mailsync.pipeline.ingest import Pipeline  # noqa: PLC0415
    from mailsync.pipeline.sync import sync_mailbox  # noqa: PLC0415
    from storage.archive import Archive  # noqa: PLC0415
    from storage.repo import Repo  # noqa: PLC0415

    settings = _mailsync_setup(server, work)
    mailbox = settings.mailbox("bench")
    repo = Repo(settings.database_url)
    outcomes: dict[str, int] = {}
    try:
        with ParseWorker(ParseLimits()) as parser:
            pipeline = Pipeline(settings, repo, Archive(settings.archive_dir), parser)
            pipeline.refresh_crm()  # the daemon holds its snapshot; loading it is not per message

            def sync() -> None:
                with ImapSource(mailbox, batch_size=200) as source:
                    for result in sync_mailbox(mailbox, pipeline, source):
                        for k, v in result.outcomes.items():
                            outcomes[k] = outcomes.get(k, 0) + v

            if profile_to is None:
                seconds = _timed(sync)
            else:
                profiler = cProfile.Profile()
                seconds = _timed(lambda: profiler.runcall(sync))
                profiler.dump_stats(profile_to)
    finally:
        repo.dispose()
    return seconds, outcomes


def run_notmuch(maildir: Path, work: Path) -> float | None:
    if shutil.which("notmuch") is None:
        return None
    config = work / "notmuch-config"
    config.write_text(
        f"[database]\npath={maildir}\n\n[new]\ntags=unread;inbox;\n"
        "ignore=.mbsyncstate;.mbsyncstate.journal;.mbsyncstate.new;.mbsyncstate.lock;.uidvalidity\n"
        "\n[maildir]\nsynchronize_flags=true\n"
    )
    env = {**os.environ, "NOTMUCH_CONFIG": str(config)}
    return _timed(
        lambda: subprocess.run(["notmuch", "new", "--quiet"], check=True, env=env, stdout=subprocess.DEVNULL)
    )


# -- reporting ---------------------------------------------------------------------------------


def print_profile(path: Path, console: Console, top: int = 15) -> None:
    stats = pstats.Stats(str(path))
    total = max(ct for (_, _, _, ct, _) in stats.stats.values())  # type: ignore[attr-defined]
    table = Table(title=f"mailsync capture stages (cProfile, cumulative; {total:.1f} s profiled)")
    table.add_column("stage")
    table.add_column("calls", justify="right")
    table.add_column("seconds", justify="right")
    table.add_column("share", justify="right")
    for label, suffix, name in STAGES:
        found = [
            (nc, ct)
            for (file, _, func), (_, nc, _, ct, _) in stats.stats.items()  # type: ignore[attr-defined]
            if func == name and file.endswith(suffix)
        ]
        if found:
            calls, cum = max(found, key=lambda f: f[1])
            table.add_row(label, f"{calls:,}", f"{cum:.2f}", f"{cum / total:.0%}")
    console.print(table)
    console.print(f"[bold]top {top} by cumulative time[/] (full profile: {path})")
    buffer = io.StringIO()
    pstats.Stats(str(path), stream=buffer).strip_dirs().sort_stats("cumulative").print_stats(top)
    console.print(buffer.getvalue().split("\n", 4)[-1].strip("\n"), highlight=False, markup=False)


def run(messages: int = 2_000, profile: bool = False, console: Console | None = None) -> dict[str, float]:
    """Run the benchmark and print its tables; returns msgs/s per contestant."""
    console = console or Console()
    reason = missing_requirement()
    if reason is not None:
        console.print(f"[yellow]capture bench skipped:[/] {reason}")
        return {}
    rates: dict[str, float] = {}
    base = Path(tempfile.mkdtemp(prefix="mailsync-bench-", dir="/tmp"))
    base.chmod(0o755)
    try:
        with DovecotServer(users={USER: PASSWORD}, base_dir=base / "dovecot") as server:
            data = make_mailbox(messages)
            megabytes = sum(map(len, data)) / 1e6
            load_s = _timed(lambda: server.append_many(USER, "INBOX", data, batch=200))
            console.print(
                f"mailbox: {messages:,} messages, {megabytes:.1f} MB "
                f"(mean {megabytes * 1e3 / messages:.1f} KB), "
                f"loaded by APPEND at {messages / load_s:,.0f} msgs/s"
            )
            rows: list[tuple[str, float | None, str]] = []
            mbsync_s, maildir = run_mbsync(server, base)
            rows.append(("mbsync (isync, default fsync)", mbsync_s, "Maildir"))
            rows.append(("imapclient FETCH 500 + write + fsync (floor)", run_floor(server, base), "files"))
            ms_s, outcomes = run_mailsync(server, base / "mailsync")
            rows.append(
                (
                    "mailsync sync_mailbox (full pipeline)",
                    ms_s,
                    ", ".join(f"{k} {v}" for k, v in outcomes.items()),
                )
            )
            notmuch_s = run_notmuch(maildir, base)
            rows.append(
                ("notmuch new (index mbsync's Maildir)", notmuch_s, "" if notmuch_s else "not installed")
            )

            table = Table(title=f"capture: {messages:,} messages from a local Dovecot, same run")
            for col, justify in (("contestant", "left"), ("seconds", "right"), ("msgs/s", "right")):
                table.add_column(col, justify=justify)  # type: ignore[arg-type]
            table.add_column("vs mbsync", justify="right")
            table.add_column("note")
            mbsync_rate = messages / mbsync_s
            for name, seconds, note in rows:
                if seconds is None:
                    table.add_row(name, "-", "-", "-", note)
                    continue
                rate = messages / seconds
                rates[name] = rate
                table.add_row(name, f"{seconds:.2f}", f"{rate:,.0f}", f"{rate / mbsync_rate:.2f}×", note)
            console.print(table)
            if profile:
                path = Path(tempfile.gettempdir()) / "mailsync-capture.prof"
                seconds, _ = run_mailsync(server, base / "mailsync-profiled", profile_to=path)
                console.print(f"profiled mailsync run: {messages / seconds:,.0f} msgs/s under cProfile")
                print_profile(path, console)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return rates


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=2_000)
    parser.add_argument("--profile", action="store_true", help="also profile mailsync's run (cProfile)")
    args = parser.parse_args(argv)
    run(args.messages, args.profile)
    return 0  # reports, never gates


if __name__ == "__main__":
    sys.exit(main())
