"""The SMTP edge: hands one message to the configured relay; every failure is a DeliveryError.

`[smtp] security` picks the transport: "tls" (implicit TLS, port 465), "starttls" (plain connect,
then STARTTLS, port 587) or "plain" (no encryption: a relay on loopback or a test server).
Certificates are checked against the system's CA store and the host name unless
`verify_certificates = false`. The password is read (from `password_env` or `password_file`) only
when `username` is set, and never appears in an error or a log line.
"""

from __future__ import annotations

import smtplib
import ssl
from email import policy
from typing import TYPE_CHECKING

from config.errors import ConfigError, DeliveryError
from mailsync.mail.display import safe_line

if TYPE_CHECKING:
    from email.message import EmailMessage

    from config.settings import SmtpSettings

# What mailsync's own messages are built and re-read with: SMTP line endings, CR/LF refused in any header
# value set by name, and a header set whole (`set_raw`) kept on one line, never refolded: a long
# List-Unsubscribe URL must stay `<url>`, not turn into RFC 2047 encoded words that clients do not read.
POLICY = policy.SMTP.clone(refold_source="none")
_REPLY_CHARS = 200  # of a relay's reply quoted in an error: enough for the reason, not a page of it


def send(smtp: SmtpSettings, message: EmailMessage) -> None:
    """Send `message` through the relay to its To/Cc/Bcc; raise DeliveryError (one line, with a
    fix) when the relay cannot be reached or refuses it, ConfigError when [smtp] is incomplete."""
    if smtp.host is None:
        raise ConfigError(
            "[smtp] host is not set: mailsync cannot send mail",
            fix="set host, port, security, username and password_env in the [smtp] section",
        )
    password = smtp.password.read("[smtp] password") if smtp.username else None
    try:
        with _connect(smtp, smtp.host) as client:
            if smtp.username and password is not None:
                client.login(smtp.username, password)
            refused = client.send_message(message)
    except OSError as exc:  # smtplib.SMTPException and ssl.SSLError are OSErrors too
        raise _translate(smtp, exc) from exc
    if refused:  # some recipients taken, some not: the ones refused did not get it
        address, (code, reply) = next(iter(refused.items()))
        raise DeliveryError(
            f"SMTP relay {smtp.host}:{smtp.port} refused recipient {address}: {code} {_said(reply)}",
            fix="check the address; the relay's reply says why",
        )


def _connect(smtp: SmtpSettings, host: str) -> smtplib.SMTP:
    context = ssl.create_default_context()
    if not smtp.verify_certificates:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if smtp.security == "tls":
        return smtplib.SMTP_SSL(host, smtp.port, timeout=smtp.timeout, context=context)
    client = smtplib.SMTP(host, smtp.port, timeout=smtp.timeout)
    if smtp.security == "starttls":
        try:
            client.starttls(context=context)
        except BaseException:
            client.close()
            raise
    return client


def _said(reply: bytes | str) -> str:
    """A relay's reply as one short line."""
    text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else reply
    return safe_line(text)[:_REPLY_CHARS]


def _translate(smtp: SmtpSettings, exc: OSError) -> DeliveryError:  # noqa: PLR0911 - one return per kind of failure
    where = f"SMTP relay {smtp.host}:{smtp.port}"
    ports = "security must match the port: tls for 465, starttls for 587"
    match exc:
        case smtplib.SMTPAuthenticationError():
            secret = smtp.password_env or smtp.password_file
            return DeliveryError(
                f"{where} refused the login for {smtp.username}: {exc.smtp_code} {_said(exc.smtp_error)}",
                fix=f"check [smtp] username and the password in {secret}",
            )
        case smtplib.SMTPNotSupportedError():
            return DeliveryError(f"{where}: {_said(str(exc))}", fix=f"check [smtp] security ({ports})")
        case smtplib.SMTPRecipientsRefused():
            address, (code, reply) = next(iter(exc.recipients.items()))
            return DeliveryError(
                f"{where} refused recipient {address}: {code} {_said(reply)}",
                fix="check the address; the relay's reply says why",
            )
        case smtplib.SMTPSenderRefused():
            return DeliveryError(
                f"{where} refused sender {exc.sender}: {exc.smtp_code} {_said(exc.smtp_error)}",
                fix="set [smtp] from to an address this account may send as",
            )
        case smtplib.SMTPResponseException():
            return DeliveryError(
                f"{where} refused: {exc.smtp_code} {_said(exc.smtp_error)}",
                fix="the relay's reply says why (size, content, rate limit); sending is retried",
            )
        case smtplib.SMTPServerDisconnected():
            return DeliveryError(
                f"{where} closed the connection: {_said(str(exc)) or 'no reason given'}",
                fix=f"check [smtp] host, port and security ({ports})",
            )
        case ssl.SSLCertVerificationError():
            return DeliveryError(
                f"{where}: certificate check failed: {_said(exc.verify_message or str(exc))}",
                fix="install the relay's CA certificate on this machine, "
                "or (a test relay only) set [smtp] verify_certificates = false",
            )
        case ssl.SSLError():
            return DeliveryError(
                f"{where}: TLS failed: {_said(exc.reason or str(exc))}",
                fix=f"check [smtp] security ({ports})",
            )
        case TimeoutError():
            return DeliveryError(
                f"{where} did not answer within {smtp.timeout:g} s",
                fix="check [smtp] host and port, and that no firewall blocks them; sending is retried",
            )
        case _:
            return DeliveryError(
                f"{where}: {_said(exc.strerror or str(exc))}",
                fix="check [smtp] host and port; sending is retried",
            )
