"""The SMTP edge against a real aiosmtpd on loopback: plain, STARTTLS and TLS, AUTH, and every failure
a relay can give, each one DeliveryError with one line and a fix."""

from __future__ import annotations

from email.message import EmailMessage

import pytest

from config.errors import ConfigError, DeliveryError
from config.settings import SmtpSettings
from mailsync.approval.smtp import send
from tests.support.dovecot import free_port
from tests.support.smtp import SelfSigned, SmtpServer

PASSWORD_ENV = "TEST_SMTP_PW"


@pytest.fixture(scope="module")
def cert(tmp_path_factory):
    return SelfSigned.make(tmp_path_factory.mktemp("smtp-cert"))


def settings_for(server: SmtpServer, **overrides) -> SmtpSettings:
    values = {"host": server.host, "port": server.port, "security": server.security,
              "verify_certificates": False, "from": "CRM digest <crm-digest@northwind.example>", "timeout": 10}  # fmt: skip
    return SmtpSettings.model_validate(values | overrides)


def note(subject: str = "hello") -> EmailMessage:
    message = EmailMessage()
    message["From"] = "crm-digest@northwind.example"
    message["To"] = "dana@northwind.example"
    message["Subject"] = subject
    message.set_content("Body text.\n")
    return message


def assert_one_line(exc: DeliveryError) -> None:
    assert "\n" not in str(exc)
    assert exc.fix


def test_plain_delivers_to_the_recipient(smtp_server):
    send(settings_for(smtp_server), note("plain"))
    [got] = smtp_server.messages
    assert got.rcpt_tos == ("dana@northwind.example",)
    assert got.mail_from == "crm-digest@northwind.example"
    assert got.message["Subject"] == "plain"


@pytest.mark.parametrize("security", ["starttls", "tls"])
def test_tls_and_auth_with_the_password_from_the_environment(security, cert, monkeypatch):
    monkeypatch.setenv(PASSWORD_ENV, "s3cret")
    with SmtpServer(security=security, cert=cert, users={"digest": "s3cret"}) as server:
        send(settings_for(server, username="digest", password_env=PASSWORD_ENV), note(security))
        [got] = server.messages
    assert got.authenticated_as == "digest"
    assert got.message["Subject"] == security


def test_a_trusted_certificate_passes_the_check(cert, monkeypatch):
    monkeypatch.setenv("SSL_CERT_FILE", str(cert.cert))  # the system store, as OpenSSL reads it
    with SmtpServer(security="starttls", cert=cert) as server:
        send(settings_for(server, verify_certificates=True), note())
        assert len(server.messages) == 1


def test_an_untrusted_certificate_is_refused_unless_checks_are_off(cert):
    with SmtpServer(security="tls", cert=cert) as server:
        with pytest.raises(DeliveryError, match="certificate check failed") as caught:
            send(settings_for(server, verify_certificates=True), note())
        assert "verify_certificates = false" in caught.value.fix
        assert server.messages == []


def test_a_wrong_password_is_a_refused_login_that_never_shows_the_password(cert, monkeypatch):
    monkeypatch.setenv(PASSWORD_ENV, "wrong-password")
    server = SmtpServer(security="starttls", cert=cert, users={"digest": "s3cret"})
    with server, pytest.raises(DeliveryError, match="refused the login for digest: 535") as caught:
        send(settings_for(server, username="digest", password_env=PASSWORD_ENV), note())
    assert "wrong-password" not in str(caught.value) + str(caught.value.fix)
    assert PASSWORD_ENV in caught.value.fix
    assert_one_line(caught.value)


def test_a_relay_that_refuses_the_message_is_one_line_with_its_reply(smtp_server):
    smtp_server.refuse("550-5.7.1 Message refused\r\n550 5.7.1 by policy")  # two lines: one in the error
    with pytest.raises(
        DeliveryError, match=r"refused: 550 5\.7\.1 Message refused 5\.7\.1 by policy$"
    ) as caught:
        send(settings_for(smtp_server), note())
    assert_one_line(caught.value)
    assert smtp_server.messages == []


def test_nobody_listening_is_a_delivery_error():
    settings = SmtpSettings.model_validate({"host": "127.0.0.1", "port": free_port(), "security": "plain"})
    with pytest.raises(DeliveryError, match="Connection refused") as caught:
        send(settings, note())
    assert_one_line(caught.value)


def test_tls_spoken_to_a_plain_server_names_the_security_setting(smtp_server):
    with pytest.raises(DeliveryError, match="TLS failed") as caught:
        send(settings_for(smtp_server, security="tls"), note())
    assert "starttls for 587" in caught.value.fix


def test_starttls_on_a_server_without_it_names_the_security_setting(smtp_server):
    with pytest.raises(DeliveryError, match="STARTTLS") as caught:
        send(settings_for(smtp_server, security="starttls"), note())
    assert "security" in caught.value.fix


def test_a_missing_password_or_host_is_a_config_error_before_connecting(smtp_server, monkeypatch):
    monkeypatch.delenv(PASSWORD_ENV, raising=False)
    with pytest.raises(ConfigError, match=PASSWORD_ENV):
        send(settings_for(smtp_server, username="digest", password_env=PASSWORD_ENV), note())
    with pytest.raises(ConfigError, match="host is not set"):
        send(SmtpSettings(), note())
    assert smtp_server.messages == []
