"""Settings: TOML plus MAILSYNC_* overrides, relative paths, secrets by reference, clear errors."""

from __future__ import annotations

import pytest

from config.errors import ConfigError
from config.settings import load_settings
from tests.conftest import write_config


def test_paths_are_relative_to_the_config_file(tmp_path, monkeypatch):
    monkeypatch.chdir("/")
    settings = load_settings(write_config(tmp_path))
    assert settings.database_url == f"sqlite:///{tmp_path}/var/mailsync.db"
    assert settings.archive_dir == tmp_path / "var/archive"
    assert settings.events_dir == tmp_path / "var/events"
    assert settings.mailbox("dana").owner == "dana@northwind.example"


def test_environment_overrides_the_file(tmp_path, monkeypatch):
    path = write_config(tmp_path)
    monkeypatch.setenv("MAILSYNC_DATABASE_URL", "sqlite:////elsewhere/x.db")
    monkeypatch.setenv("MAILSYNC_LIMITS__MAX_BYTES", "4096")
    settings = load_settings(path)
    assert settings.database_url == "sqlite:////elsewhere/x.db"
    assert settings.limits.max_bytes == 4096


def test_config_path_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("MAILSYNC_CONFIG", str(write_config(tmp_path)))
    assert load_settings().mailbox("dana").name == "dana"
    monkeypatch.setenv("MAILSYNC_CONFIG", str(tmp_path / "nope.toml"))
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings()


def test_secrets_come_from_env_or_file(tmp_path, monkeypatch):
    secret = tmp_path / "pw"
    secret.write_text("from-file\n")
    path = write_config(
        tmp_path,
        """
        [[mailboxes]]
        name = "sam"
        owner = "sam@northwind.example"
        host = "127.0.0.1"
        password_env = "TEST_PW_SAM"

        [[mailboxes]]
        name = "mia"
        owner = "mia@northwind.example"
        host = "127.0.0.1"
        password_file = "pw"
        """,
    )
    settings = load_settings(path)
    with pytest.raises(ConfigError, match="TEST_PW_SAM is not set") as missing:
        settings.mailbox("sam").password.read("sam")
    assert "export TEST_PW_SAM" in (missing.value.fix or "")
    monkeypatch.setenv("TEST_PW_SAM", "from-env")
    assert settings.mailbox("sam").password.read("sam") == "from-env"
    assert settings.mailbox("mia").password.read("mia") == "from-file"
    assert "from-env" not in repr(settings)
    assert "from-file" not in repr(settings)


@pytest.mark.parametrize(
    ("extra", "message", "fix"),
    [
        ('\n[[mailboxes]]\nname = "x"\nowner = "x@n.example"\nhost = "h"\npassword = "hunter2"\n',
         "mailboxes[1].password: Extra inputs are not permitted", "remove or rename"),
        ('\n[[mailboxes]]\nname = "x"\nowner = "x@n.example"\nhost = "h"\nport = "imap"\n',
         "mailboxes[1].port", "correct mailboxes[1].port"),
        ('\n[[mailboxes]]\nname = "x"\nowner = "x@n.example"\nhost = "h"\n', "password_env or password_file", None),
        ('\n[[mailboxes]]\nname = "dana"\nowner = "d@n.example"\n', "mailbox name 'dana' is used twice", None),
        ("\n[limits]\nmax_byts = 1\n", "limits.max_byts: Extra inputs are not permitted", "remove or rename limits.max_byts"),
        ('\n[stage_map]\n"tech review" = "techreview"\n', "unknown stage 'techreview'", None),
    ],
)  # fmt: skip
def test_errors_name_the_key_and_the_fix(tmp_path, extra, message, fix):
    with pytest.raises(ConfigError) as caught:
        load_settings(write_config(tmp_path, extra))
    assert message in str(caught.value)
    assert str(tmp_path / "mailsync.toml") in str(caught.value)
    if fix:
        assert fix in (caught.value.fix or "")


def test_toml_syntax_error_names_the_line(tmp_path):
    path = tmp_path / "mailsync.toml"
    path.write_text("internal_domains = []\ndatabase_url = x\n")
    with pytest.raises(ConfigError, match=r"not valid TOML.*line 2"):
        load_settings(path)


def test_stage_mapping_defaults_and_overrides(tmp_path):
    settings = load_settings(write_config(tmp_path, '\n[stage_map]\n"Tech Review" = "demo"\n'))
    assert settings.stage_for("Closed Won") == "closed_won"
    assert settings.stage_for("  Proposal/Price   Quote ") == "proposal"
    assert settings.stage_for("tech review") == "demo"
    assert settings.stage_for("negotiation") == "negotiation"
    assert settings.stage_for("Mystery") is None


def test_unknown_mailbox_lists_the_configured_ones(settings):
    with pytest.raises(ConfigError, match=r"no mailbox named 'nobody' .*configured: dana"):
        settings.mailbox("nobody")


def test_a_typo_in_an_environment_variable_is_an_error_naming_the_right_one(tmp_path, monkeypatch):
    monkeypatch.setenv("MAILSYNC_DATABSE_URL", "postgresql+psycopg://db/crm")
    with pytest.raises(ConfigError, match="did you mean MAILSYNC_DATABASE_URL") as caught:
        load_settings(write_config(tmp_path))
    assert "MAILSYNC_DATABSE_URL" in caught.value.fix


def test_secret_variables_named_by_the_config_are_not_typos(tmp_path, monkeypatch):
    monkeypatch.setenv("MAILSYNC_LOG_LEVLE", "x")  # one typo away from MAILSYNC_LOG_LEVEL ...
    path = write_config(
        tmp_path,
        '\n[[mailboxes]]\nname = "x"\nowner = "x@n.example"\nhost = "h"\npassword_env = "MAILSYNC_LOG_LEVLE"\n',
    )  # ... but the config names it as a mailbox's password variable
    assert load_settings(path).mailbox("x").password_env == "MAILSYNC_LOG_LEVLE"


def test_a_bad_environment_value_is_blamed_on_the_variable_not_the_file(tmp_path, monkeypatch):
    path = write_config(tmp_path, "\n[limits]\nmax_bytes = 4096\n")
    monkeypatch.setenv("MAILSYNC_LIMITS__MAX_BYTES", "lots")
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    assert "$MAILSYNC_LIMITS__MAX_BYTES" in str(caught.value)
    assert f"(in {path})" not in str(caught.value)
    assert "MAILSYNC_LIMITS__MAX_BYTES" in caught.value.fix


def test_without_a_config_file_nothing_is_created_in_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MAILSYNC_CONFIG", raising=False)
    monkeypatch.delenv("MAILSYNC_DATABASE_URL", raising=False)
    with pytest.raises(ConfigError, match=r"mailsync\.toml does not exist") as caught:
        load_settings()
    assert "config/mailsync.example.toml" in caught.value.fix
    assert list(tmp_path.iterdir()) == []
    # A deployment configured by environment alone names its database, and then needs no file.
    monkeypatch.setenv("MAILSYNC_DATABASE_URL", f"sqlite:///{tmp_path}/env.db")
    assert load_settings().database_url == f"sqlite:///{tmp_path}/env.db"


def test_daemon_http_keys_still_work_as_web_listen_with_a_deprecation(tmp_path):
    settings = load_settings(
        write_config(tmp_path, '\n[daemon]\nhttp_host = "127.0.0.2"\nhttp_port = 9400\n')
    )
    assert (settings.web.host, settings.web.port) == ("127.0.0.2", 9400)
    assert settings.web.base_url == "http://127.0.0.2:9400"
    assert any('[web] listen = "127.0.0.2:9400"' in note for note in settings.deprecations)
    assert load_settings(write_config(tmp_path, '\n[web]\nlisten = "127.0.0.1:0"\n')).deprecations == ()


def test_smtp_digest_and_web_sections_are_validated(tmp_path, monkeypatch):
    good = """
        [smtp]
        host = "smtp.example.com"
        from = "CRM digest <crm@northwind.example>"
        password_env = "MAILSYNC_SMTP_PW"
        [digest]
        send_at = "07:30"
        timezone = "Europe/Berlin"
        locale = "de_DE"
        reply_mailbox = "dana"
        [web]
        listen = "127.0.0.1:9325"
        public_url = "https://crm.northwind.example"
        secret_key_file = "link.key"
        """
    monkeypatch.setenv("MAILSYNC_SMTP_PW", "x")  # named by the config: not a typo
    settings = load_settings(write_config(tmp_path, good))
    assert settings.smtp.sender_address == "crm@northwind.example"
    assert settings.web.secret_key.file == tmp_path / "link.key"
    assert settings.web.base_url == "https://crm.northwind.example"
    for bad, key in (
        ('[digest]\ntimezone = "Mars/Olympus"', "digest.timezone"),
        ('[digest]\nsend_at = "25:00"', "digest.send_at"),
        ('[digest]\nreply_mailbox = "nobody"', "reply_mailbox"),
        ('[smtp]\nfrom = "not an address"', "smtp.from"),
        ('[web]\nlisten = "127.0.0.1:99999"', "web"),
        (
            '[smtp]\nhost = "smtp.example.com"\nsecurity = "plain"\nusername = "u"\npassword_env = "X"',
            "unencrypted",
        ),
    ):
        with pytest.raises(ConfigError, match=key):
            load_settings(write_config(tmp_path, "\n" + bad + "\n"))
