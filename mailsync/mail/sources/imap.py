"""IMAP source: reads a mailbox's folders over IMAP and yields raw bytes with provenance; never parses.

The model (RFC 3501, 4551, 2177, 6154):

    connect ─> folders() ─> select(folder) ─> new_uids(last_uid) ─> fetch(status, uids) ─> idle_wait(s)
    (TLS,       (names and    (EXAMINE:         (UID SEARCH UID        (BODY.PEEK[] in        (IDLE until
     LOGIN,      \\Sent-style    read-only,       last+1:*, minus        batches; big mail      EXISTS, or
     ENABLE      SPECIAL-USE     FolderStatus)    the <= last_uid        in 8 MB partial        timeout)
     CONDSTORE)  flags)                           one `*` returns)       pieces to a spool
                                                                         file)

A message is identified by (folder, UIDVALIDITY, UID). UIDs only grow inside one UIDVALIDITY; when the
server changes UIDVALIDITY (folder deleted and re-created, server restore) every UID the caller stored
for that folder is void, so `select()` returns it and the sync state, not this module, decides to resync.
Nothing here changes the server: folders are EXAMINEd and bodies fetched with BODY.PEEK, so \\Seen is
never set. Every imapclient/socket/ssl error is translated here: `SourceUnavailable` for what may pass
(network, timeout, dropped connection, [UNAVAILABLE]), `SourceError` for what will not (`AuthFailed`
for a refused login; missing folder, no STARTTLS, untrusted certificate). A UID that vanished between
SEARCH and FETCH was deleted on the server: it is logged and skipped, not an error.
"""

from __future__ import annotations

import contextlib
import os
import ssl
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

import structlog
from imapclient import IMAPClient
from imapclient.exceptions import CapabilityError, IMAPClientAbortError, IMAPClientError, LoginError

from config.errors import ArchiveError, AuthFailed, SourceError, SourceUnavailable
from storage.private import private_dir
from storage.records import Provenance, RawMessage

if TYPE_CHECKING:
    from collections.abc import Iterator
    from datetime import date
    from types import TracebackType

    from config.settings import MailboxSettings, Settings

log = structlog.get_logger()

PIECE_BYTES = 8 * 1024 * 1024
# Where a server without SPECIAL-USE usually keeps sent mail, tried in this order.
_FALLBACKS: dict[str, tuple[str, ...]] = {
    "\\sent": (
        "Sent",
        "Sent Items",
        "Sent Messages",
        "INBOX.Sent",
        "[Gmail]/Sent Mail",
        "Gesendet",
        "Enviados",
    )
}
_TRANSIENT_CODES = (b"[UNAVAILABLE]", b"[INUSE]", b"[LIMIT]", b"[SERVERBUG]")
_UNSELECTABLE = {b"\\noselect", b"\\nonexistent"}


@dataclass(frozen=True, slots=True)
class FolderStatus:
    """What EXAMINE said about a folder; `uidvalidity` scopes every UID the caller stores."""

    name: str
    uidvalidity: int
    uidnext: int | None
    highest_modseq: int | None  # when CONDSTORE is offered
    exists: int


class ImapSource:
    """One IMAP connection to one configured mailbox; use as a context manager."""

    def __init__(
        self,
        mailbox: MailboxSettings,
        *,
        timeout: float = 60.0,
        batch_size: int = 200,
        batch_bytes: int = 8 * 1024 * 1024,
        max_fetch_bytes: int = 50 * 1024 * 1024,
        spool_dir: Path | None = None,
    ) -> None:
        self.mailbox = mailbox
        self.timeout = timeout
        self.batch_size = batch_size  # messages per UID FETCH (and per capture batch)
        self.batch_bytes = batch_bytes  # and bytes: a batch is held in memory while it is stored
        self.max_fetch_bytes = max_fetch_bytes  # bigger messages are spooled to a file in pieces
        self.spool_dir = spool_dir  # where; None: the system's temporary directory
        self._client: IMAPClient | None = None
        self._caps: frozenset[str] = frozenset()
        self._selected: FolderStatus | None = None
        self._log = log.bind(mailbox=mailbox.name, host=mailbox.host)

    @classmethod
    def configured(cls, mailbox: MailboxSettings, settings: Settings) -> ImapSource:
        """As the daemon runs it: mail over the parse size limit is spooled in archive_dir/spool."""
        spool = settings.archive_dir / "spool"
        _remove_stale_spool(spool)
        return cls(mailbox, max_fetch_bytes=settings.limits.max_bytes, spool_dir=spool)

    @property
    def capabilities(self) -> frozenset[str]:
        """The server's capabilities after login (upper case, e.g. "IDLE"); empty before connect()."""
        return self._caps

    def connect(self) -> None:
        """Open the connection (TLS, STARTTLS or plain as configured), log in, ENABLE CONDSTORE if offered.

        A no-op when already connected (so `with ImapSource(m) as s: s.connect()` opens one connection).
        """
        mb = self.mailbox
        if self._client is not None:
            return
        if not mb.host:
            raise SourceError(
                f"mailbox {mb.name} has no IMAP host", fix="set host in its [[mailboxes]] entry"
            )
        password = mb.password.read(f"mailbox {mb.name}")  # ConfigError when missing, before any socket
        context = self._tls_context() if mb.security != "plain" else None
        try:
            with self._translate("connect"):
                client = IMAPClient(
                    mb.host, port=mb.port, ssl=mb.security == "tls", ssl_context=context, timeout=self.timeout
                )
                self._client = client
                if mb.security == "starttls":
                    client.starttls(context)
                self._login(client, mb.username or mb.owner, password)
                self._caps = _caps(client)
                if {"ENABLE", "CONDSTORE"} <= self._caps:
                    client.enable("CONDSTORE")
        except BaseException:
            self.close()
            raise
        self._log.info("imap_connected", security=mb.security, idle="IDLE" in self._caps)

    def close(self) -> None:
        """Log out quietly; safe to call twice or after the connection dropped."""
        client, self._client, self._selected = self._client, None, None
        if client is None:
            return
        try:
            client.logout()
        except (IMAPClientError, OSError):
            with contextlib.suppress(IMAPClientError, OSError):
                client.shutdown()
        self._log.debug("imap_closed")

    def __enter__(self) -> Self:
        self.connect()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def folders(self) -> list[str]:
        """The configured folders as server names: plain names checked, SPECIAL-USE flags resolved."""
        with self._translate("list folders"):
            listing = self._conn().list_folders()
        by_flag: dict[str, list[str]] = {}
        available: list[str] = []
        for flags, _delimiter, name in listing:
            lowered = {bytes(f).lower() for f in flags}
            if lowered & _UNSELECTABLE:
                continue
            available.append(str(name))
            for flag in lowered:
                by_flag.setdefault(flag.decode("ascii", "replace"), []).append(str(name))
        resolved: list[str] = []
        for wanted in self.mailbox.folders:
            found = self._resolve(wanted, available, by_flag)
            if found is not None and found not in resolved:
                resolved.append(found)
        return resolved

    def _resolve(self, wanted: str, available: list[str], by_flag: dict[str, list[str]]) -> str | None:
        if not wanted.startswith("\\"):
            for name in available:
                if name == wanted or (name.upper() == wanted.upper() == "INBOX"):
                    return name
            raise SourceError(
                f"mailbox {self.mailbox.name}: folder {wanted!r} does not exist on {self.mailbox.host} "
                f"(available: {', '.join(sorted(available))})",
                fix="set folders in this [[mailboxes]] entry to existing names or SPECIAL-USE flags",
            )
        flagged = by_flag.get(wanted.lower(), [])
        fallback = [n for n in _FALLBACKS.get(wanted.lower(), ()) if n in available]
        if flagged or fallback:
            found = (flagged or fallback)[0]
            self._log.debug("special_folder_resolved", flag=wanted, folder=found, by_flag=bool(flagged))
            return found
        self._log.warning("special_folder_not_found", flag=wanted, available=sorted(available))
        return None

    def select(self, folder: str) -> FolderStatus:
        """EXAMINE `folder` (read-only, so nothing on the server changes) and return its status."""
        with self._translate(f"select {folder!r}"):
            info = self._conn().select_folder(folder, readonly=True)
        if b"UIDVALIDITY" not in info:
            raise SourceError(
                f"mailbox {self.mailbox.name}: server gave no UIDVALIDITY for {folder!r}",
                fix="this server cannot be synced incrementally; export the mailbox and import the files",
            )
        status = FolderStatus(
            name=folder,
            uidvalidity=int(info[b"UIDVALIDITY"]),
            uidnext=info.get(b"UIDNEXT"),  # imapclient already made these ints
            highest_modseq=info.get(b"HIGHESTMODSEQ"),
            exists=int(info.get(b"EXISTS", 0)),
        )
        self._selected = status
        self._log.debug(
            "folder_selected", folder=folder, uidvalidity=status.uidvalidity, exists=status.exists
        )
        return status

    def new_uids(self, last_uid: int, since: date | None = None) -> list[int]:
        """UIDs above `last_uid` in the selected folder, sorted; with `since`, by internal date too."""
        criteria: list[Any] = ["UID", f"{last_uid + 1}:*"]
        if since is not None:
            criteria += ["SINCE", since]
        self._need_selected()
        with self._translate("search"):
            found = self._conn().search(criteria)
        # RFC 3501: `n:*` includes the highest UID even when it is below n.
        return sorted(uid for uid in found if uid > last_uid)

    def has_new(self, last_uid: int) -> bool:
        """Whether the selected folder holds a message with a UID above `last_uid`.

        The SELECT's UIDNEXT can say no without a round trip, never yes: the UIDs below it may all be
        expunged already. So "maybe" (and a server that sends no UIDNEXT) is settled with a UID SEARCH.
        """
        uidnext = self._need_selected().uidnext
        if uidnext is not None and uidnext <= last_uid + 1:
            return False
        return bool(self.new_uids(last_uid))

    def all_uids(self) -> list[int]:
        """Every UID in the selected folder, sorted (for resync and reconciliation)."""
        self._need_selected()
        with self._translate("search"):
            return sorted(self._conn().search(["ALL"]))

    def fetch(self, folder_status: FolderStatus, uids: list[int]) -> Iterator[RawMessage]:
        """Yield each UID's exact bytes (BODY.PEEK[], never \\Seen) in UID order; vanished UIDs skipped."""
        for batch in self.fetch_batches(folder_status, uids):
            yield from batch

    def fetch_batches(self, folder_status: FolderStatus, uids: list[int]) -> Iterator[list[RawMessage]]:
        """fetch(), one UID FETCH at a time: up to `batch_size` messages and `batch_bytes` bytes, in UID
        order; a message over `max_fetch_bytes` comes alone, spooled (its file is gone once the
        iteration moves on)."""
        selected = self._need_selected()
        if (selected.name, selected.uidvalidity) != (folder_status.name, folder_status.uidvalidity):
            msg = f"fetch for {folder_status.name!r} but {selected.name!r} is selected"
            raise RuntimeError(msg)
        ordered = sorted(set(uids))
        for start in range(0, len(ordered), self.batch_size):
            batch = ordered[start : start + self.batch_size]
            with self._translate("fetch sizes"):
                sizes = self._conn().fetch(batch, ["RFC822.SIZE"])
            group: list[int] = []
            group_bytes = 0
            for uid in batch:
                size = int(sizes.get(uid, {}).get(b"RFC822.SIZE", -1))
                if size < 0:
                    self._vanished(uid)
                elif size > self.max_fetch_bytes:
                    yield from self._fetch_group(folder_status, group)
                    group, group_bytes = [], 0
                    yield from ([raw] for raw in self._fetch_in_pieces(folder_status, uid, size))
                else:
                    if group and group_bytes + size > self.batch_bytes:
                        yield from self._fetch_group(folder_status, group)
                        group, group_bytes = [], 0
                    group.append(uid)
                    group_bytes += size
            yield from self._fetch_group(folder_status, group)

    def _fetch_group(self, status: FolderStatus, uids: list[int]) -> Iterator[list[RawMessage]]:
        if not uids:
            return
        with self._translate("fetch"):
            bodies = self._conn().fetch(uids, ["BODY.PEEK[]"])
        found = []
        for uid in uids:
            data = bodies.get(uid, {}).get(b"BODY[]")
            if isinstance(data, bytes):
                found.append(self._raw(status, uid, data))
            else:
                self._vanished(uid)
        if found:
            yield found

    def _fetch_in_pieces(self, status: FolderStatus, uid: int, size: int) -> Iterator[RawMessage]:
        """Fetch one big message in partial pieces straight into a spool file, never whole in memory."""
        piece = min(PIECE_BYTES, self.max_fetch_bytes)
        try:
            if self.spool_dir is not None:
                private_dir(self.spool_dir)
            fd, name = tempfile.mkstemp(prefix=f"uid{uid}-", suffix=".eml", dir=self.spool_dir)
        except OSError as exc:
            raise _spool_error(self.spool_dir, exc) from exc
        spool = Path(name)
        try:
            offset = pieces = 0
            with os.fdopen(fd, "wb") as out:
                while True:
                    with self._translate("fetch piece"):
                        got = self._conn().fetch([uid], [f"BODY.PEEK[]<{offset}.{piece}>"])
                    data = got.get(uid, {}).get(f"BODY[]<{offset}>".encode())
                    if not isinstance(data, bytes):
                        self._vanished(uid)
                        return
                    try:
                        out.write(data)
                    except OSError as exc:  # disk full: like the archive's, it passes; retried
                        raise _spool_error(self.spool_dir, exc) from exc
                    offset += len(data)
                    pieces += 1
                    if len(data) < piece:  # a short piece is the last; trusts the bytes, not RFC822.SIZE
                        break
            self._log.info("message_fetched_in_pieces", uid=uid, size=size, pieces=pieces, bytes=offset)
            where = Provenance(self.mailbox.name, status.name, status.uidvalidity, uid)
            yield RawMessage(data=b"", provenance=where, spool=spool)
        finally:
            spool.unlink(missing_ok=True)

    def _raw(self, status: FolderStatus, uid: int, data: bytes) -> RawMessage:
        where = Provenance(self.mailbox.name, status.name, status.uidvalidity, uid)
        return RawMessage(data=data, provenance=where)

    def _vanished(self, uid: int) -> None:
        self._log.info("message_vanished", folder=self._need_selected().name, uid=uid)

    def idle_wait(self, seconds: float) -> bool:
        """IDLE on the selected folder up to `seconds`; True when new mail (EXISTS/RECENT) arrived.

        Returns False at once when the server offers no IDLE. Always leaves IDLE before returning;
        a connection that dropped while idling raises SourceUnavailable.
        """
        if "IDLE" not in self._caps:
            return False
        folder = self._need_selected().name
        client = self._conn()
        with self._translate(f"idle on {folder!r}"):
            client.idle()
            try:
                arrived = _wait_for_new(client, seconds)
            except BaseException:
                with contextlib.suppress(IMAPClientError, OSError):
                    client.idle_done()
                raise
            _text, late = client.idle_done()
        arrived = arrived or _announces_new(late)
        self._log.debug("idle_finished", folder=folder, new_mail=arrived)
        return arrived

    # -- edges -------------------------------------------------------------

    def _conn(self) -> IMAPClient:
        if self._client is None:
            raise SourceUnavailable(
                f"mailbox {self.mailbox.name}: not connected", fix="call connect() (or reconnect) first"
            )
        return self._client

    def _need_selected(self) -> FolderStatus:
        if self._selected is None:
            msg = "no folder selected: call select(folder) first"
            raise RuntimeError(msg)
        return self._selected

    def _tls_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context()
        if not self.mailbox.verify_certificates:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            self._log.warning("tls_certificates_not_verified")
        return context

    def _login(self, client: IMAPClient, username: str, password: str) -> None:
        mb = self.mailbox
        try:
            client.login(username, password)
        except LoginError as exc:
            if isinstance(exc.__context__, IMAPClientAbortError):
                raise exc.__context__ from exc  # dropped mid-login: _translate makes it SourceUnavailable
            if _transient(exc):
                raise  # e.g. [UNAVAILABLE] Temporary authentication failure: also SourceUnavailable
            # debug: the caller logs the failure once and retries quietly (the daemon backs off)
            self._log.debug("imap_login_failed", reason=_server_text(exc))
            raise AuthFailed(
                f"mailbox {mb.name}: login to {mb.host} as {username!r} failed: {_server_text(exc)}",
                fix=f"check the password in {'password_env' if mb.password_env else 'password_file'} "
                "and the username for this mailbox",
            ) from exc

    @contextlib.contextmanager
    def _translate(self, action: str) -> Iterator[None]:
        mb = self.mailbox
        where = f"mailbox {mb.name}: {action} on {mb.host}:{mb.port}"
        try:
            yield
        except ssl.SSLCertVerificationError as exc:
            self.close()
            raise SourceError(
                f"{where}: certificate not trusted: {exc.verify_message}",
                fix="install the server's CA, or set verify_certificates = false for a test server",
            ) from exc
        except (OSError, IMAPClientAbortError) as exc:  # socket.timeout and ssl.SSLError are OSErrors
            self.close()
            raise SourceUnavailable(
                f"{where}: {_describe(exc)}", fix="check the network and server; retried next tick"
            ) from exc
        except CapabilityError as exc:
            raise SourceError(
                f"{where}: {exc}", fix="set security to the mode this server supports (tls/starttls)"
            ) from exc
        except IMAPClientError as exc:
            if _transient(exc):
                self.close()
                raise SourceUnavailable(f"{where}: {_server_text(exc)}", fix="retried next tick") from exc
            raise SourceError(f"{where}: {_server_text(exc)}", fix="see the server's reply above") from exc


def _spool_error(spool_dir: Path | None, exc: OSError) -> ArchiveError:
    return ArchiveError(
        f"cannot spool a large message in {spool_dir or tempfile.gettempdir()}: {exc.strerror or exc}",
        fix="free disk space there; the message is fetched again on the next try",
    )


def _remove_stale_spool(spool_dir: Path, older_than: float = 24 * 3600) -> None:
    """Spool files a killed process left behind (a live fetch's file is minutes old at most)."""
    cutoff = time.time() - older_than
    with contextlib.suppress(OSError):
        for leftover in spool_dir.glob("uid*.eml"):
            with contextlib.suppress(OSError):
                if leftover.stat().st_mtime < cutoff:
                    leftover.unlink()


def _wait_for_new(client: IMAPClient, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while (remaining := deadline - time.monotonic()) > 0:
        began = time.monotonic()
        responses = client.idle_check(timeout=remaining)
        if _announces_new(responses):
            return True
        if not responses and time.monotonic() - began < remaining - 0.05:
            return False  # woke with nothing: EOF or a partial line; idle_done() will tell which
    return False


def _announces_new(responses: list[Any]) -> bool:
    # Untagged responses parse to (count, b"EXISTS"); `* 0 RECENT` is not news.
    return any(r[1:2] == (b"EXISTS",) or (r[1:2] == (b"RECENT",) and int(r[0]) > 0) for r in responses)


def _caps(client: IMAPClient) -> frozenset[str]:
    return frozenset(bytes(c).decode("ascii", "replace").upper() for c in client.capabilities())


def _server_text(exc: BaseException) -> str:
    text = str(exc)
    if text.startswith(("b'", 'b"')) and text.endswith(("'", '"')):
        text = text[2:-1]  # imapclient wraps str(bytes) into LoginError
    return text


def _transient(exc: BaseException) -> bool:
    text = _server_text(exc).encode("utf-8", "replace").upper()
    return any(code in text for code in _TRANSIENT_CODES)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
