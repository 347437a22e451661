"""A throwaway real Dovecot IMAP server on a loopback port, for integration tests."""

from __future__ import annotations

import contextlib
import ctypes
import datetime as dt
import grp
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

from imapclient import IMAPClient

HOST = "127.0.0.1"
VMAIL_USER = "vmail"
INSTALL_HINT = "run scripts/install-system-deps.sh"
STARTUP_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0

_BARE_LF = re.compile(rb"(?<!\r)\n")
_APPENDUID_RE = re.compile(rb"\[APPENDUID (\d+) ([\d:,]+)\]")
_USERNAME_RE = re.compile(r"^[A-Za-z0-9._@+-]+$")


class DovecotError(RuntimeError):
    """Dovecot could not be started or stopped."""


def find_dovecot() -> str | None:
    """Path of the dovecot binary; /usr/sbin is often not on a non-root PATH."""
    found = shutil.which("dovecot")
    if found:
        return found
    fallback = "/usr/sbin/dovecot"
    return fallback if os.access(fallback, os.X_OK) else None


def missing_requirement() -> str | None:
    """Why a DovecotServer cannot run on this machine, or None if it can."""
    if find_dovecot() is None:
        return f"dovecot not installed: {INSTALL_HINT}"
    if os.geteuid() == 0:
        for user in (VMAIL_USER, "dovecot", "dovenull"):
            try:
                pwd.getpwnam(user)
            except KeyError:
                return f"system user {user!r} missing: {INSTALL_HINT}"
    return None


def free_port() -> int:
    """A currently unused loopback TCP port (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _load_libc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL("libc.so.6", use_errno=True)
    except OSError:
        return None


# Loaded here, not in the forked child, where dlopen could deadlock.
_LIBC = _load_libc()
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    # If the test process is killed outright (e.g. a thread-method timeout),
    # take the master down too instead of leaving it on the port. Linux only.
    if _LIBC is not None:
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)


def _group_alive(pgid: int) -> bool:
    """Whether a live (non-zombie) process is left in the group."""
    proc_root = Path("/proc")
    if not (proc_root / "self" / "stat").exists():
        # No procfs: signal 0 also counts zombies, but is the best there is.
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        return True
    for entry in proc_root.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_bytes()
        except OSError:  # exited meanwhile
            continue
        # Fields after the parenthesised command: state, ppid, pgrp, ...
        fields = stat[stat.rfind(b")") + 2 :].split()
        if int(fields[2]) == pgid and fields[0] != b"Z":
            return True
    return False


def _sleep_to_next_second() -> None:
    time.sleep(1.02 - time.time() % 1.0)


def _parse_uid_set(uid_set: bytes) -> list[int]:
    uids: list[int] = []
    for part in uid_set.split(b","):
        lo, _, hi = part.partition(b":")
        uids.extend(range(int(lo), int(hi or lo) + 1))
    return uids


class DovecotServer:
    """A private Dovecot (plain IMAP, PLAIN/LOGIN auth) with Maildir users.

    Run as root it uses Debian's `dovecot`/`dovenull` users and stores mail as
    `vmail`; as another user it runs everything as that user (no chroot).
    """

    def __init__(
        self,
        users: dict[str, str] | None = None,
        base_dir: str | os.PathLike[str] | None = None,
        port: int | None = None,
        extra_config: str = "",
    ) -> None:
        binary = find_dovecot()
        if binary is None:
            raise DovecotError(f"dovecot not installed: {INSTALL_HINT}")
        self.binary: str = binary
        self.host: str = HOST
        self.port: int = port or free_port()
        self.passwords: dict[str, str] = {}
        self.extra_config = extra_config
        self._initial_users = dict(users or {})
        self._own_base_dir = base_dir is None
        self._base_dir_arg = Path(base_dir) if base_dir is not None else None
        self.base_dir: Path | None = None
        self.startup_seconds: float | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._stderr_file: Path | None = None
        self._as_root = os.geteuid() == 0

    # -- paths -----------------------------------------------------------

    def _dir(self) -> Path:
        if self.base_dir is None:
            raise DovecotError("server was never started")
        return self.base_dir

    @property
    def config_path(self) -> Path:
        return self._dir() / "dovecot.conf"

    @property
    def passwd_dir(self) -> Path:
        return self._dir() / "passwd.d"

    @property
    def mail_root(self) -> Path:
        return self._dir() / "mail"

    @property
    def log_path(self) -> Path:
        return self._dir() / "dovecot.log"

    def maildir(self, user: str) -> Path:
        """The user's Maildir on disk (created by Dovecot on first login)."""
        return self.mail_root / user / "Maildir"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    # -- lifecycle -------------------------------------------------------

    def start(self) -> None:
        """Write config and data (first time only), start Dovecot, wait for `* OK`."""
        if self.running:
            return
        if self.base_dir is None:
            self._prepare()
        self._write_config()
        assert self.base_dir is not None
        self._stderr_file = self.base_dir / "dovecot.stderr"
        began = time.monotonic()
        with self._stderr_file.open("ab") as err:
            self._proc = subprocess.Popen(
                [self.binary, "-F", "-c", str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=err,
                stderr=err,
                preexec_fn=_die_with_parent,  # noqa: PLW1509 - only calls prctl()
                # Own process group, so stop() can reach every Dovecot process.
                start_new_session=True,
            )
        try:
            self._wait_for_greeting(began + STARTUP_TIMEOUT)
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - began

    def stop(self) -> None:
        """Stop every Dovecot process and wait; data and port are kept for start().

        Signalling only the master is not an outage: its imap processes keep
        serving logged-in clients as orphans. So the whole process group gets
        SIGTERM (SIGKILL after STOP_TIMEOUT), and open connections drop.
        """
        proc, self._proc = self._proc, None
        if proc is None:
            return
        pgid = proc.pid  # start_new_session made the master a group leader
        _signal_group(pgid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        try:
            proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            _signal_group(pgid, signal.SIGKILL)
            proc.wait(timeout=STOP_TIMEOUT)
        while _group_alive(pgid):
            if time.monotonic() > deadline:
                _signal_group(pgid, signal.SIGKILL)
                deadline = time.monotonic() + STOP_TIMEOUT
            time.sleep(0.01)

    def restart(self) -> None:
        """Stop and start again on the same port with the same mail (outage tests)."""
        self.stop()
        self.start()

    def close(self) -> None:
        """Stop and delete the base directory if this object created it."""
        self.stop()
        if self._own_base_dir and self.base_dir is not None:
            shutil.rmtree(self.base_dir, ignore_errors=True)
            self.base_dir = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _prepare(self) -> None:
        if self._base_dir_arg is None:
            # pytest's tmp_path root is 0700, which the dovecot/vmail users
            # cannot traverse; a fresh 0755 dir straight under /tmp can be.
            base = Path(tempfile.mkdtemp(prefix="mailsync-dovecot-", dir="/tmp"))
        else:
            base = self._base_dir_arg
            base.mkdir(parents=True, exist_ok=True)
        base.chmod(0o755)
        self.base_dir = base
        for sub in ("run", "state", "passwd.d"):
            (base / sub).mkdir(exist_ok=True)
        self.mail_root.mkdir(exist_ok=True)
        if self._as_root:
            vmail = pwd.getpwnam(VMAIL_USER)
            os.chown(self.mail_root, vmail.pw_uid, vmail.pw_gid)
        self.mail_root.chmod(0o755)
        self.passwords = {**self._initial_users, **self.passwords}
        for name, password in self.passwords.items():
            self._make_home(name)
            self._write_passwd(name, password)

    def _write_config(self) -> None:
        base = self._dir()
        if self._as_root:
            mail_uid = pwd.getpwnam(VMAIL_USER).pw_uid
            identity = "default_internal_user = dovecot\ndefault_login_user = dovenull\n"
            userdb_args = f"uid={VMAIL_USER} gid={VMAIL_USER} home={base}/mail/%u"
            no_chroot = ""
        else:
            mail_uid = os.geteuid()
            me = pwd.getpwuid(mail_uid).pw_name
            my_group = grp.getgrgid(os.getegid()).gr_name
            identity = (
                f"default_internal_user = {me}\n"
                f"default_internal_group = {my_group}\n"
                f"default_login_user = {me}\n"
            )
            userdb_args = f"home={base}/mail/%u"
            # chroot needs root; without it login/anvil refuse to start.
            no_chroot = "  chroot =\n"
        config = f"""\
# Generated by tests/support/dovecot.py; throwaway.
protocols = imap
listen = {HOST}
base_dir = {base}/run
state_dir = {base}/state
log_path = {base}/dovecot.log
info_log_path = {base}/dovecot-info.log
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
# Tests exercise bad logins; the default 2 s delay only slows them (Dovecot
# still answers failures on a 0.5 s tick).
auth_failure_delay = 0
auth_verbose = yes
{identity}\
# Debian's default (500) would refuse a low system uid for vmail.
first_valid_uid = {mail_uid}
# Throwaway data: skip fsync so bulk APPENDs are fast.
mail_fsync = never
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {base}/passwd.d/%u
}}
userdb {{
  driver = static
  args = {userdb_args}
}}
mail_location = maildir:~/Maildir
namespace inbox {{
  inbox = yes
  mailbox Sent {{
    special_use = \\Sent
    auto = create
  }}
  mailbox Drafts {{
    special_use = \\Drafts
  }}
  mailbox Trash {{
    special_use = \\Trash
  }}
}}
service imap-login {{
  inet_listener imap {{
    address = {HOST}
    port = {self.port}
  }}
  inet_listener imaps {{
    port = 0
  }}
{no_chroot}}}
service anvil {{
{no_chroot}  # No per-IP brute-force penalty: tests log in wrongly on purpose, and the
  # penalty (4-15 s) would land on whichever test logs in next.
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
protocol imap {{
  mail_max_userip_connections = 50
}}
{self.extra_config}
"""
        self.config_path.write_text(config)

    def _wait_for_greeting(self, deadline: float) -> None:
        # A misconfigured Dovecot may accept TCP and close silently, so only
        # the IMAP greeting proves readiness.
        last_error = "no attempt"
        while time.monotonic() < deadline:
            assert self._proc is not None
            if self._proc.poll() is not None:
                raise DovecotError(
                    f"dovecot exited with status {self._proc.returncode} during startup\n" + self.log_tail()
                )
            try:
                with socket.create_connection((self.host, self.port), timeout=1.0) as sock:
                    line = sock.makefile("rb").readline()
                if line.startswith(b"* OK"):
                    return
                last_error = f"unexpected greeting {line!r}"
            except OSError as exc:
                last_error = repr(exc)
            time.sleep(0.02)
        raise DovecotError(
            f"dovecot gave no '* OK' greeting on {self.host}:{self.port} within "
            f"{STARTUP_TIMEOUT:.0f} s (last: {last_error})\n" + self.log_tail()
        )

    def log_tail(self, lines: int = 30) -> str:
        """Last lines of Dovecot's logs and stderr, for error messages."""
        parts: list[str] = []
        if self.base_dir is None:
            return "(no logs: server never prepared)"
        for name in ("dovecot.stderr", "dovecot.log", "dovecot-info.log"):
            path = self.base_dir / name
            if path.exists():
                text = path.read_text(errors="replace").splitlines()[-lines:]
                if text:
                    parts.append(f"--- {path} ---\n" + "\n".join(text))
        return "\n".join(parts) or "(dovecot logs are empty)"

    # -- users -----------------------------------------------------------

    def add_user(self, name: str, password: str) -> None:
        """Add a user, or change a password; takes effect at once, even while running.

        Changing an existing user's password on a running server takes 1-2 s;
        adding a new user is instant.
        """
        if not _USERNAME_RE.match(name) or name.startswith("."):
            raise ValueError(f"unsupported IMAP test username {name!r}")
        if any(c in password for c in ":\n\r"):
            raise ValueError("password may not contain ':' or newlines (passwd-file)")
        existed = name in self.passwords
        self.passwords[name] = password
        if self.base_dir is None:
            self._initial_users[name] = password
            return
        self._make_home(name)
        if existed and self.running:
            # Dovecot re-stats a passwd-file at most once per second and reloads
            # only if mtime (1 s resolution) or size changed: write in a fresh
            # second and return only once a later lookup must see it.
            _sleep_to_next_second()
            self._write_passwd(name, password)
            _sleep_to_next_second()
        else:
            self._write_passwd(name, password)

    def _make_home(self, name: str) -> None:
        home = self.mail_root / name
        home.mkdir(exist_ok=True)
        if self._as_root:
            vmail = pwd.getpwnam(VMAIL_USER)
            os.chown(home, vmail.pw_uid, vmail.pw_gid)

    def _write_passwd(self, name: str, password: str) -> None:
        # One passwd-file per user (the passdb path is passwd.d/%u): a single
        # shared file is re-read at most once per second, so a user added right
        # after another login would be "unknown".
        path = self.passwd_dir / name
        tmp = path.with_name(f".{name}.tmp")
        tmp.write_text(f"{name}:{{PLAIN}}{password}::::::\n")
        if self._as_root:
            # Read by the auth process, which runs as user dovecot.
            os.chown(tmp, 0, grp.getgrnam("dovecot").gr_gid)
        tmp.chmod(0o640)
        tmp.replace(path)  # never let auth read a half-written file

    # -- IMAP helpers ----------------------------------------------------

    def client(self, user: str, timeout: float = 30.0) -> IMAPClient:
        """A logged-in plain-IMAP client; use as `with server.client(u) as c:`."""
        client = IMAPClient(self.host, port=self.port, ssl=False, timeout=timeout)
        try:
            client.login(user, self.passwords[user])
        except BaseException:
            client.shutdown()
            raise
        return client

    def append(
        self,
        user: str,
        folder: str,
        raw: bytes,
        flags: Sequence[bytes | str] = (),
        internal_date: dt.datetime | None = None,
    ) -> int:
        """APPEND one message; returns its UID (from UIDPLUS APPENDUID)."""
        with self.client(user) as client:
            response = client.append(folder, raw, flags=tuple(flags), msg_time=internal_date)
        return _parse_appenduid(response)[0]

    def append_many(
        self,
        user: str,
        folder: str,
        messages: Iterable[bytes],
        flags: Sequence[bytes | str] = (),
        batch: int = 200,
    ) -> list[int]:
        """APPEND messages in order on one connection (MULTIAPPEND batches); returns UIDs."""
        uids: list[int] = []
        chunk: list[bytes] = []
        with self.client(user) as client:
            for raw in messages:
                chunk.append(raw)
                if len(chunk) >= batch:
                    uids.extend(self._multiappend(client, folder, chunk, flags))
                    chunk = []
            if chunk:
                uids.extend(self._multiappend(client, folder, chunk, flags))
        return uids

    @staticmethod
    def _multiappend(
        client: IMAPClient, folder: str, chunk: list[bytes], flags: Sequence[bytes | str]
    ) -> list[int]:
        msgs = [{"msg": raw, "flags": tuple(flags)} for raw in chunk]
        # imapclient returns (typ, [response]) here, unlike append()'s bare bytes.
        _typ, lines = client.multiappend(folder, msgs)
        uids = _parse_appenduid(b" ".join(lines))
        if len(uids) != len(chunk):
            raise DovecotError(f"APPENDUID gave {len(uids)} UIDs for {len(chunk)} messages")
        return uids

    def append_file(self, user: str, folder: str, path: Path) -> int:
        """APPEND the file at `path` without holding it in memory; returns its UID.

        imaplib builds the whole literal (and a CRLF copy of it) in memory: for a 150 MB message that
        was 860 MB in the test process. Here the literal is streamed in 1 MB pieces, bare LF sent as
        CRLF as imaplib would, over a plain socket speaking just LOGIN, APPEND and LOGOUT.
        """
        size = sum(len(piece) for piece in _crlf_pieces(path))
        with (
            socket.create_connection((self.host, self.port), timeout=60) as sock,
            sock.makefile("rb") as lines,
        ):
            lines.readline()  # the greeting

            def reply(tag: bytes) -> bytes:
                while not (line := lines.readline()).startswith(tag + b" "):
                    if not line:
                        raise DovecotError(f"connection closed before the reply to {tag!r}")
                if not line.startswith(tag + b" OK"):
                    raise DovecotError(f"{tag!r} failed: {line!r}")
                return line

            login = b'a1 LOGIN "%s" "%s"\r\n' % (user.encode(), self.passwords[user].encode())
            sock.sendall(login)
            reply(b"a1")
            sock.sendall(b'a2 APPEND "%s" {%d}\r\n' % (folder.encode(), size))
            if not lines.readline().startswith(b"+"):
                raise DovecotError("APPEND: no continuation from the server")
            for piece in _crlf_pieces(path):
                sock.sendall(piece)
            sock.sendall(b"\r\n")  # ends the APPEND command
            done = reply(b"a2")
            sock.sendall(b"a3 LOGOUT\r\n")
        return _parse_appenduid(done)[0]

    def create_folder(self, user: str, folder: str) -> None:
        with self.client(user) as client:
            client.create_folder(folder)

    def delete_folder(self, user: str, folder: str) -> None:
        with self.client(user) as client:
            client.delete_folder(folder)


def _parse_appenduid(response: bytes | str) -> list[int]:
    data = response.encode() if isinstance(response, str) else response
    match = _APPENDUID_RE.search(data)
    if match is None:
        raise DovecotError(f"no APPENDUID in APPEND response {response!r}")
    return _parse_uid_set(match.group(2))


def _crlf_pieces(path: Path, size: int = 1024 * 1024) -> Iterable[bytes]:
    """The file in pieces with every bare LF as CRLF (a CR ending one piece pairs with the next LF)."""
    after_cr = False
    with path.open("rb") as source:
        while raw := source.read(size):
            lead, rest = (b"\n", raw[1:]) if after_cr and raw.startswith(b"\n") else (b"", raw)
            yield lead + _BARE_LF.sub(b"\r\n", rest)
            after_cr = raw.endswith(b"\r")
