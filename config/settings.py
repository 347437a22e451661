"""Settings: one TOML file plus MAILSYNC_* environment overrides, validated once at start.

Precedence, highest first: environment (`MAILSYNC_DATABASE_URL`, nested `MAILSYNC_LIMITS__MAX_BYTES`),
the TOML file, the defaults below. Paths in the file are relative to the file. Secrets are never values
here: a `*_env` key names an environment variable and a `*_file` key names a file to read them from.
"""

from __future__ import annotations

import difflib
import email.utils
import ipaddress
import os
import tomllib
import zoneinfo
from contextvars import ContextVar
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from config.errors import ConfigError

if TYPE_CHECKING:
    from pydantic.fields import FieldInfo

DEFAULT_CONFIG = Path("mailsync.toml")
ENV_PREFIX = "MAILSYNC_"
DEPRECATED_ENV = ("MAILSYNC_DAEMON__HTTP_HOST", "MAILSYNC_DAEMON__HTTP_PORT")  # now [web] listen
ENV_ONLY = "MAILSYNC_DATABASE_URL"  # a deployment configured by environment alone names its database
CANONICAL_STAGES = (
    "qualification",
    "discovery",
    "demo",
    "proposal",
    "negotiation",
    "closed_won",
    "closed_lost",
)
# Free-text stage names seen in common CRM exports, lower-cased, mapped to the canonical stages.
DEFAULT_STAGE_MAP: dict[str, str] = {
    "prospecting": "qualification",
    "qualification": "qualification",
    "qualified": "qualification",
    "lead": "qualification",
    "needs analysis": "discovery",
    "discovery": "discovery",
    "value proposition": "discovery",
    "id. decision makers": "discovery",
    "demo": "demo",
    "demo scheduled": "demo",
    "demonstration": "demo",
    "perception analysis": "demo",
    "proposal": "proposal",
    "proposal/price quote": "proposal",
    "quote": "proposal",
    "proposal sent": "proposal",
    "negotiation": "negotiation",
    "negotiation/review": "negotiation",
    "contract": "negotiation",
    "closed won": "closed_won",
    "won": "closed_won",
    "closed/won": "closed_won",
    "closed lost": "closed_lost",
    "lost": "closed_lost",
    "closed/lost": "closed_lost",
}

_toml_data: ContextVar[dict[str, Any]] = ContextVar("_toml_data", default={})  # noqa: B039 - never mutated


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SecretRef(_Strict):
    """Where a secret lives: an environment variable or a file, never the value itself."""

    env: str | None = None
    file: Path | None = None

    def read(self, what: str) -> str:
        """Return the secret; raise ConfigError naming the variable or file when it is missing."""
        if self.env:
            value = os.environ.get(self.env)
            if not value:
                raise ConfigError(
                    f"{what}: environment variable {self.env} is not set",
                    fix=f"export {self.env}=... in the service's environment",
                )
            return value
        if self.file:
            try:
                return self.file.read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise ConfigError(
                    f"{what}: cannot read secret file {self.file}: {exc.strerror}",
                    fix="create the file, readable only by the service user (chmod 600)",
                ) from exc
        raise ConfigError(f"{what}: no secret configured", fix="set password_env or password_file")


class _PasswordByReference(_Strict):
    """A password named by `password_env` or `password_file`, never written in the config."""

    password_env: str | None = None
    password_file: Path | None = None

    @model_validator(mode="after")
    def _one_reference(self) -> Self:
        if self.password_env and self.password_file:
            msg = "set only one of password_env and password_file"
            raise ValueError(msg)
        return self

    @property
    def password(self) -> SecretRef:
        return SecretRef(env=self.password_env, file=self.password_file)


class MailboxSettings(_PasswordByReference):
    """One rep's mailbox. Without `host` it is import-only (files from an export)."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    owner: str = Field(pattern=r"^[^@\s]+@[^@\s]+$")
    host: str | None = None
    port: int = Field(default=993, ge=1, le=65535)
    security: Literal["tls", "starttls", "plain"] = "tls"
    verify_certificates: bool = True
    username: str | None = None
    folders: tuple[str, ...] = ("INBOX", "\\Sent")
    since: date | None = None
    max_connections: int = Field(default=2, ge=1, le=20)

    @model_validator(mode="after")
    def _imap_needs_a_password(self) -> MailboxSettings:
        if self.host and not (self.password_env or self.password_file):
            msg = "an IMAP mailbox needs password_env or password_file (never a password in the file)"
            raise ValueError(msg)
        return self


class ParseLimits(_Strict):
    """Limits the parse stage enforces; a message over any of them is quarantined, never dropped."""

    max_bytes: int = Field(default=50 * 1024 * 1024, ge=1024)
    max_mime_depth: int = Field(default=30, ge=1)
    max_parts: int = Field(default=1000, ge=1)
    max_header_lines: int = Field(default=5000, ge=10)
    max_header_bytes: int = Field(default=1024 * 1024, ge=1024)  # real headers are kilobytes
    max_body_chars: int = Field(default=200_000, ge=1000)


class DaemonSettings(_Strict):
    """How `mailsync run` polls and where it serves /healthz and /metrics."""

    poll_interval: float = Field(default=300.0, ge=1.0)  # seconds between polls of a mailbox
    jitter: float = Field(default=30.0, ge=0.0)  # random delay added to each poll, seconds
    idle: bool = True  # wait with IMAP IDLE between polls where the server offers it
    # seconds a process's lease on a mailbox lasts unless renewed: how soon another process takes over
    # a killed one's mailboxes (several `mailsync run` on one PostgreSQL; storage/leases.py)
    lease_seconds: float = Field(default=60.0, ge=1.0)
    # parse worker processes per mailsync process; unset: one per core but one, 1 to 4. Pin it (e.g. 1)
    # when several processes share a host, so that they do not each start one per spare core
    parse_workers: int | None = Field(default=None, ge=1)


class WebSettings(_Strict):
    """The daemon's HTTP app: approval pages for digest links, /healthz and /metrics."""

    listen: str = Field(default="127.0.0.1:9325", pattern=r"^\[?[0-9A-Za-z.:-]+\]?:[0-9]{1,5}$")  # loopback
    public_url: str | None = Field(default=None, pattern=r"^https?://[^\s/]+(/\S*)?$")  # what mail links to
    secret_key_env: str | None = None  # signs digest links: an environment variable ...
    secret_key_file: Path | None = None  # ... or a file; never the key itself
    link_max_age_days: int = Field(default=14, ge=1, le=90)

    @model_validator(mode="after")
    def _port_in_range(self) -> WebSettings:
        if not 0 <= self.port <= 65535:  # noqa: PLR2004 - the TCP port range
            msg = f"port {self.port} is not a TCP port (0-65535)"
            raise ValueError(msg)
        if self.secret_key_env and self.secret_key_file:
            msg = "set only one of secret_key_env and secret_key_file"
            raise ValueError(msg)
        return self

    @property
    def host(self) -> str:
        return self.listen.rpartition(":")[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])

    @property
    def base_url(self) -> str:
        """Where links in mail point: `public_url`, else this server's own address."""
        return (self.public_url or f"http://{self.listen}").rstrip("/")

    @property
    def secret_key(self) -> SecretRef:
        return SecretRef(env=self.secret_key_env, file=self.secret_key_file)


class SmtpSettings(_PasswordByReference):
    """The relay digests are sent through. Without `host` nothing is sent (previews still work)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    host: str | None = None
    port: int = Field(default=587, ge=1, le=65535)
    security: Literal["tls", "starttls", "plain"] = "starttls"
    verify_certificates: bool = True
    username: str | None = None
    from_: str = Field(default="CRM digest <crm-digest@localhost>", alias="from")
    timeout: float = Field(default=30.0, gt=0)

    @field_validator("from_")
    @classmethod
    def _one_address(cls, value: str) -> str:
        _name, address = email.utils.parseaddr(value)
        if "@" not in address or any(c in value for c in "\r\n"):
            msg = f"{value!r} is not one address such as 'CRM digest <crm@example.com>'"
            raise ValueError(msg)
        return value

    @model_validator(mode="after")
    def _no_clear_text_password_off_this_host(self) -> SmtpSettings:
        if self.security == "plain" and self.username and self.host and not _loopback(self.host):
            msg = "security = 'plain' would send the password unencrypted; use 'starttls' or 'tls'"
            raise ValueError(msg)
        return self

    @property
    def sender_address(self) -> str:
        return email.utils.parseaddr(self.from_)[1]


class DigestSettings(_Strict):
    """When and how reps get their digest; reps.csv `digest_at`, `timezone` and `locale` override per rep."""

    send_at: str = Field(default="07:30", pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$")
    timezone: str = "UTC"
    locale: str = Field(default="en_US", pattern=r"^[a-z]{2,3}(_[A-Z]{2})?$")
    reply_mailbox: str | None = None  # a [[mailboxes]] name whose INBOX receives reps' replies
    stale_after_days: int = Field(default=7, ge=1)  # proposals nobody acted on this long go to the lead
    max_items: int = Field(default=25, ge=1, le=200)  # shown in full; the rest summarised with a link

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
            msg = f"unknown time zone {value!r}; use an IANA name such as Europe/Berlin"
            raise ValueError(msg) from exc
        return value


class MatchingSettings(_Strict):
    """How sure the match stage must be before it acts, and which spaCy pipeline it builds on."""

    link_threshold: float = Field(default=0.6, ge=0.0, le=1.0)  # link a thread at or above this score
    # below it, no candidate is listed: the lowest score whose links reach .95 precision on the dev
    # corpus (make eval's link calibration); between .2 and .55 a listed link was right one time in three
    suggest_threshold: float = Field(default=0.55, ge=0.0, le=1.0)
    lost_after_days: int = Field(default=30, ge=1)  # an unanswered rep follow-up this old is a lost signal
    spacy_model: str | None = None  # an installed spaCy pipeline package, e.g. "en_core_web_sm"; None: blank
    classifier: bool = True  # the shipped intent classifier (nlp/intent.py) adds recall to the phrase rules


class PrivacySettings(_Strict):
    """`mailsync forget`: tombstones are HMAC-SHA256 of the address under this key (never the address).
    Unset: a key derived from [web]'s link-signing key. Changing the key orphans every tombstone."""

    tombstone_key_env: str | None = None
    tombstone_key_file: Path | None = None

    @model_validator(mode="after")
    def _one_reference(self) -> Self:
        if self.tombstone_key_env and self.tombstone_key_file:
            msg = "set only one of tombstone_key_env and tombstone_key_file"
            raise ValueError(msg)
        return self


class RetentionSettings(_Strict):
    """`mailsync retention apply`: mail older than `keep_years` is deleted, archive included (None: kept)."""

    keep_years: int | None = Field(default=None, ge=1, le=100)


class WebhookSettings(_Strict):
    """An outbound webhook to a live CRM: captured activity and decisions POSTed as signed JSON batches.

    Off while `url` is unset. The body is signed with HMAC-SHA256 under the secret that `secret_env` or
    `secret_file` names; a failed delivery is retried with doubling delays up to `max_attempts`."""

    url: str | None = Field(default=None, pattern=r"^https?://\S+$")
    secret_env: str | None = None
    secret_file: Path | None = None
    send: tuple[Literal["activities", "decisions"], ...] = ("activities", "decisions")
    batch: int = Field(default=100, ge=1, le=1000)  # records per POST
    timeout_seconds: float = Field(default=10.0, gt=0, le=300)
    retry_after_seconds: float = Field(default=30.0, ge=0)  # the first retry's delay; doubles each time
    max_delay_seconds: float = Field(default=3600.0, ge=0)
    max_attempts: int = Field(default=12, ge=1)  # then the delivery is marked failed (`webhook retry`)

    @model_validator(mode="after")
    def _secret_named(self) -> Self:
        if self.secret_env and self.secret_file:
            msg = "set only one of secret_env and secret_file"
            raise ValueError(msg)
        if self.url and not (self.secret_env or self.secret_file):
            msg = "a webhook url needs secret_env or secret_file (its deliveries are signed)"
            raise ValueError(msg)
        return self

    @property
    def secret(self) -> SecretRef:
        return SecretRef(env=self.secret_env, file=self.secret_file)


class Settings(BaseSettings):
    """Everything mailsync reads from the outside world, validated."""

    model_config = SettingsConfigDict(
        env_prefix="MAILSYNC_", env_nested_delimiter="__", extra="forbid", frozen=True
    )

    database_url: str = "sqlite:///var/mailsync.db"
    archive_dir: Path = Path("var/archive")
    events_dir: Path = Path("var/events")
    internal_domains: tuple[str, ...] = ()
    extra_free_mail_domains: tuple[str, ...] = ()
    mailboxes: tuple[MailboxSettings, ...] = ()
    limits: ParseLimits = ParseLimits()
    daemon: DaemonSettings = DaemonSettings()
    web: WebSettings = WebSettings()
    smtp: SmtpSettings = SmtpSettings()
    digest: DigestSettings = DigestSettings()
    matching: MatchingSettings = MatchingSettings()
    privacy: PrivacySettings = PrivacySettings()
    retention: RetentionSettings = RetentionSettings()
    webhook: WebhookSettings = WebhookSettings()
    stage_map: dict[str, str] = Field(default_factory=dict)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["auto", "json", "console"] = "auto"
    deprecations: tuple[str, ...] = ()  # set by the loader for keys that still work but are going away

    @model_validator(mode="before")
    @classmethod
    def _daemon_http_is_web_listen(cls, data: Any) -> Any:
        """`[daemon] http_host/http_port` (before [web]) still work, as `[web] listen`, with a warning."""
        if not isinstance(data, dict) or not isinstance(data.get("daemon"), dict):
            return data
        daemon = dict(data["daemon"])
        old = {k: daemon.pop(k) for k in ("http_host", "http_port") if k in daemon}
        if not old:
            return data
        web = dict(data.get("web") or {})
        web.setdefault("listen", f"{old.get('http_host', '127.0.0.1')}:{old.get('http_port', 9325)}")
        note = f'[daemon] {" and ".join(old)} are deprecated: write [web] listen = "{web["listen"]}" instead'
        return {**data, "daemon": daemon, "web": web, "deprecations": (*data.get("deprecations", ()), note)}

    @field_validator("internal_domains", "extra_free_mail_domains")
    @classmethod
    def _lower(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(d.strip().lower().lstrip("@") for d in value if d.strip())

    @field_validator("stage_map")
    @classmethod
    def _canonical(cls, value: dict[str, str]) -> dict[str, str]:
        bad = sorted(v for v in value.values() if v not in CANONICAL_STAGES)
        if bad:
            msg = f"unknown stage {bad[0]!r}; use one of {', '.join(CANONICAL_STAGES)}"
            raise ValueError(msg)
        return {k.strip().lower(): v for k, v in value.items()}

    @model_validator(mode="after")
    def _unique_mailboxes(self) -> Settings:
        names = [m.name for m in self.mailboxes]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            msg = f"mailbox name {dupes[0]!r} is used twice; names must be unique"
            raise ValueError(msg)
        if self.digest.reply_mailbox and self.digest.reply_mailbox not in names:
            msg = f"digest.reply_mailbox {self.digest.reply_mailbox!r} is not a [[mailboxes]] name"
            raise ValueError(msg)
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        del dotenv_settings, file_secret_settings  # secrets come only through *_env / *_file keys
        return init_settings, env_settings, _TomlSource(settings_cls)

    def mailbox(self, name: str) -> MailboxSettings:
        """The mailbox called `name`, or a ConfigError listing the configured ones."""
        for mailbox in self.mailboxes:
            if mailbox.name == name:
                return mailbox
        known = ", ".join(m.name for m in self.mailboxes) or "none"
        raise ConfigError(
            f"no mailbox named {name!r} in the config (configured: {known})",
            fix="add a [[mailboxes]] entry with that name, or pass one of the configured names",
        )

    def stage_for(self, raw: str) -> str | None:
        """Canonical stage for a CRM's free-text stage name, or None when unknown."""
        key = " ".join(raw.strip().lower().split())
        return (
            self.stage_map.get(key)
            or DEFAULT_STAGE_MAP.get(key)
            or (key if key in CANONICAL_STAGES else None)
        )


class _TomlSource(PydanticBaseSettingsSource):
    """Feeds the already-parsed TOML file into pydantic-settings below the environment."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        del field
        return _toml_data.get().get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(_toml_data.get())


def _loopback(host: str) -> bool:
    try:
        return host == "localhost" or ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def config_path(explicit: Path | None) -> Path:
    """The config file to use: --config, else $MAILSYNC_CONFIG, else ./mailsync.toml."""
    if explicit is not None:
        return explicit
    env = os.environ.get("MAILSYNC_CONFIG")
    return Path(env) if env else DEFAULT_CONFIG


def load_settings(explicit: Path | None = None) -> Settings:
    """Read, validate and resolve the settings; every failure is a ConfigError naming key and fix."""
    path = config_path(explicit)
    data: dict[str, Any] = {}
    if path.exists():
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}", fix="fix the syntax at that line") from exc
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: cannot read: {exc}", fix="check the path and permissions") from exc
    elif explicit is not None or os.environ.get("MAILSYNC_CONFIG") or ENV_ONLY not in os.environ:
        # Defaults alone would quietly make ./var/mailsync.db wherever the command happens to run.
        raise ConfigError(
            f"config file {path} does not exist",
            fix="copy config/mailsync.example.toml to ./mailsync.toml, or pass --config PATH "
            f"(or configure by environment alone, starting with {ENV_ONLY})",
        )
    token = _toml_data.set(data)
    try:
        settings = Settings()
    except ValidationError as exc:
        raise ConfigError(_describe(exc, path), fix=_fix_for(exc, path)) from exc
    finally:
        _toml_data.reset(token)
    _check_environment(settings)
    return _resolve_paths(settings, path.resolve().parent)


def _setting_names(model: type[BaseModel], prefix: str = ENV_PREFIX) -> set[str]:
    """Every MAILSYNC_* variable that names a setting: `MAILSYNC_KEY` and `MAILSYNC_SECTION__KEY`."""
    names: set[str] = set()
    for name, field in model.model_fields.items():
        names.add(f"{prefix}{name.upper()}")
        section = field.annotation
        if isinstance(section, type) and issubclass(section, BaseModel):
            names |= _setting_names(section, f"{prefix}{name.upper()}__")
    return names


def _check_environment(settings: Settings) -> None:
    """A MAILSYNC_* variable one typo away from a setting is a mistake, not the user's own variable."""
    known = _setting_names(Settings) | {"MAILSYNC_CONFIG", *DEPRECATED_ENV}
    secrets = {m.password_env for m in settings.mailboxes if m.password_env}
    secrets |= {v for v in (settings.smtp.password_env, settings.web.secret_key_env) if v}
    secrets |= {settings.privacy.tombstone_key_env or "", settings.webhook.secret_env or ""}
    for name in sorted(os.environ):
        upper = name.upper()
        if not upper.startswith(ENV_PREFIX) or upper in known or name in secrets:
            continue
        close = difflib.get_close_matches(upper, known, n=1, cutoff=0.85)
        if close:
            raise ConfigError(
                f"environment variable {name} is not a mailsync setting; did you mean {close[0]}?",
                fix=f"rename {name} to {close[0]} (or unset it)",
            )


def _resolve_paths(settings: Settings, base: Path) -> Settings:
    url = settings.database_url
    prefix = "sqlite:///"
    if url.startswith(prefix) and url != "sqlite:///:memory:" and not url.startswith(prefix + "/"):
        url = prefix + str(base / url[len(prefix) :])
    mailboxes = tuple(
        m.model_copy(update={"password_file": base / m.password_file}) if m.password_file else m
        for m in settings.mailboxes
    )
    smtp, web = settings.smtp, settings.web
    if smtp.password_file:
        smtp = smtp.model_copy(update={"password_file": base / smtp.password_file})
    if web.secret_key_file:
        web = web.model_copy(update={"secret_key_file": base / web.secret_key_file})
    privacy = settings.privacy
    if privacy.tombstone_key_file:
        privacy = privacy.model_copy(update={"tombstone_key_file": base / privacy.tombstone_key_file})
    webhook = settings.webhook
    if webhook.secret_file:
        webhook = webhook.model_copy(update={"secret_file": base / webhook.secret_file})
    return settings.model_copy(
        update={
            "smtp": smtp,
            "web": web,
            "privacy": privacy,
            "webhook": webhook,
            "database_url": url,
            "archive_dir": base / settings.archive_dir,
            "events_dir": base / settings.events_dir,
            "mailboxes": mailboxes,
        }
    )


def _location(loc: tuple[int | str, ...]) -> str:
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts[-1] = f"{parts[-1]}[{item}]" if parts else f"[{item}]"
        else:
            parts.append(item)
    return ".".join(parts) or "(top level)"


def _source(loc: tuple[int | str, ...], path: Path) -> str:
    """Where a bad value came from: the environment variable that set it, else the file."""
    names = [str(p).upper() for p in loc if isinstance(p, str)]
    for depth in range(len(names), 0, -1):  # MAILSYNC_LIMITS__MAX_BYTES, then MAILSYNC_LIMITS
        env = ENV_PREFIX + "__".join(names[:depth])
        if env in os.environ:
            return f"${env}"
    return str(path)


def _describe(exc: ValidationError, path: Path) -> str:
    return "; ".join(
        f"{_location(tuple(err['loc']))}: {err['msg']} (in {_source(tuple(err['loc']), path)})"
        for err in exc.errors()
    )


def _fix_for(exc: ValidationError, path: Path) -> str:
    first = exc.errors()[0]
    where = _location(tuple(first["loc"]))
    source = _source(tuple(first["loc"]), path)
    if source.startswith("$"):
        return f"correct or unset the environment variable {source[1:]}"
    if first["type"] == "extra_forbidden":
        return f"remove or rename {where} in {path}; config/mailsync.example.toml lists every key"
    if first["type"] == "missing":
        return f"add {where} to {path}"
    return f"correct {where} in {path}; config/mailsync.example.toml shows a valid value"
