"""A real SMTP server for tests: aiosmtpd on a free loopback port, keeping every message it accepts.

    with SmtpServer() as server:                    # plain SMTP
        ... send to server.host:server.port ...
        server.messages[0].message["Subject"]      # parsed with the stdlib (policy.SMTP)

`SmtpServer(security="starttls" | "tls", cert=SelfSigned(dir))` speaks STARTTLS or implicit TLS with a
self-signed certificate made by the `openssl` CLI; `users={"name": "password"}` requires AUTH LOGIN/
PLAIN with those (required with STARTTLS; offered, and checked, with "tls" and "plain"). `server.refuse("550 5.7.1
No thanks")` makes it answer DATA with that line until `server.refuse(None)`. `server.smtp_toml()`
is the matching `[smtp]` section for a mailsync config. The `smtp_server` fixture in tests/conftest.py
gives a plain one.
"""

from __future__ import annotations

import json
import ssl
import subprocess
import threading
from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from typing import TYPE_CHECKING, Any, Literal, Self

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from tests.support.dovecot import free_port

if TYPE_CHECKING:
    from pathlib import Path
    from types import TracebackType

    from aiosmtpd.smtp import SMTP, Envelope, Session

HOST = "127.0.0.1"


@dataclass(frozen=True)
class SelfSigned:
    """A self-signed certificate for localhost and 127.0.0.1, made with the openssl CLI in `directory`."""

    cert: Path
    key: Path

    @classmethod
    def make(cls, directory: Path) -> SelfSigned:
        cert, key = directory / "smtp-cert.pem", directory / "smtp-key.pem"
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=localhost",
             "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
            check=True, capture_output=True,
        )  # fmt: skip
        return cls(cert, key)

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert, self.key)
        return context


@dataclass(frozen=True)
class Received:
    """One message the server accepted."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    data: bytes
    authenticated_as: str | None

    @property
    def message(self) -> EmailMessage:
        parsed = BytesParser(_class=EmailMessage, policy=policy.SMTP).parsebytes(self.data)
        assert isinstance(parsed, EmailMessage)
        return parsed


@dataclass
class _Handler:
    users: dict[str, str]
    messages: list[Received] = field(default_factory=list)
    refusal: str | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:  # noqa: N802 - aiosmtpd's hook name
        del server
        with self.lock:
            if self.refusal is not None:
                return self.refusal
            who = session.auth_data.login.decode() if isinstance(session.auth_data, LoginPassword) else None
            data = envelope.original_content or b""
            self.messages.append(Received(envelope.mail_from or "", tuple(envelope.rcpt_tos), data, who))
        return "250 OK"

    def authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
    ) -> AuthResult:
        del server, session, envelope, mechanism
        ok = isinstance(auth_data, LoginPassword) and self.users.get(auth_data.login.decode()) == (
            auth_data.password.decode()
        )
        return AuthResult(success=ok, handled=False, auth_data=auth_data if ok else None)


class SmtpServer:
    """aiosmtpd on a free loopback port; `messages` holds what it accepted, in order."""

    def __init__(
        self,
        *,
        security: Literal["plain", "starttls", "tls"] = "plain",
        cert: SelfSigned | None = None,
        users: dict[str, str] | None = None,
    ) -> None:
        if security != "plain" and cert is None:
            msg = f"security={security!r} needs a certificate (SelfSigned.make(tmp_path))"
            raise ValueError(msg)
        self.security = security
        self.host = HOST
        self.port = free_port()
        self._handler = _Handler(users or {})
        kwargs: dict[str, Any] = {"server_hostname": "localhost"}
        if users:
            # aiosmtpd takes only STARTTLS for TLS (implicit TLS looks plain to it), and warns when AUTH is
            # required without TLS: so AUTH is required only with STARTTLS, and offered otherwise.
            starttls = security == "starttls"
            kwargs |= {"authenticator": self._handler.authenticate, "auth_required": starttls,
                       "auth_require_tls": starttls}  # fmt: skip
        if security == "starttls" and cert is not None:
            kwargs |= {"tls_context": cert.server_context(), "require_starttls": True}
        elif security == "tls" and cert is not None:
            kwargs["ssl_context"] = cert.server_context()
        self._controller = Controller(self._handler, hostname=HOST, port=self.port, **kwargs)

    @property
    def messages(self) -> list[Received]:
        with self._handler.lock:
            return list(self._handler.messages)

    def refuse(self, reply: str | None) -> None:
        """Answer DATA with `reply` (e.g. "550 5.7.1 Refused") from now on; None accepts again."""
        with self._handler.lock:
            self._handler.refusal = reply

    def smtp_toml(self, *, username: str | None = None, password_env: str | None = None, verify: bool = False,
                  sender: str = "CRM digest <crm-digest@northwind.example>") -> str:  # fmt: skip
        """The `[smtp]` section that sends through this server (certificates unchecked unless `verify`)."""
        lines = ["", "[smtp]", f"host = {json.dumps(self.host)}", f"port = {self.port}",
                 f"security = {json.dumps(self.security)}", f"verify_certificates = {str(verify).lower()}",
                 f"from = {json.dumps(sender)}", "timeout = 10"]  # fmt: skip
        if username is not None:
            lines += [f"username = {json.dumps(username)}", f"password_env = {json.dumps(password_env)}"]
        return "\n".join(lines) + "\n"

    def start(self) -> Self:
        self._controller.start()
        return self

    def stop(self) -> None:
        self._controller.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
