"""Signed digest links: what a link may do, for which rep and proposal, until when, and only once.

A link is `<base_url>/a/<token>`; the token is an itsdangerous URL-safe timed signature over its claims
(action, rep, proposal key, digest token, nonce), so nothing in it can be changed without the key:
another rep's proposal, another action or a later expiry each need a new signature. The key comes
from `[web] secret_key_env` or `secret_key_file`, never from the TOML. Expiry is checked against the
signing time (`[web] link_max_age_days`); single use is the web app's part: it records the nonce of a
link that acted in `used_link` and refuses it after.

Forms on the confirmation pages carry a second token, signed with another salt (a token of one purpose
never passes for the other) and bound to the link's nonce: the CSRF check of the POST that applies.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal, get_args

from itsdangerous import BadData, URLSafeTimedSerializer

from config.errors import ConfigError, DecisionError

if TYPE_CHECKING:
    from config.settings import WebSettings

Action = Literal["approve", "reject", "edit", "approve_all", "unsubscribe", "list"]
ACTIONS: tuple[Action, ...] = get_args(Action)
KEYED: frozenset[Action] = frozenset({"approve", "reject", "edit"})  # act on one proposal: need its key
LINK_SALT = "mailsync.digest-link.v1"
FORM_SALT = "mailsync.link-form.v1"
PATH = "/a/"  # where the web app serves links


@dataclass(frozen=True, slots=True)
class LinkClaim:
    """What a verified link says: do `action` as `rep` (on proposal `key`, from digest `digest_token`)."""

    action: Action
    rep: str
    key: str | None
    digest_token: str | None
    nonce: str  # unique per link: what makes it single-use


class LinkSigner:
    """Makes and checks digest links and the CSRF tokens of their confirmation forms."""

    def __init__(self, secret: str, base_url: str, max_age_days: int) -> None:
        """`secret` signs; `base_url` is where the links point (`[web] public_url`)."""
        if not secret:
            msg = "a link signer needs a non-empty secret"
            raise ValueError(msg)
        self.base_url = base_url.rstrip("/")
        self.max_age = timedelta(days=max_age_days)
        self._links = URLSafeTimedSerializer(secret, salt=LINK_SALT)
        self._forms = URLSafeTimedSerializer(secret, salt=FORM_SALT)

    @classmethod
    def from_settings(cls, web: WebSettings) -> LinkSigner:
        """The signer `[web]` configures; ConfigError naming the key and the fix when there is none."""
        if not (web.secret_key_env or web.secret_key_file):
            raise ConfigError(
                "[web] secret_key_env is not set: digest links cannot be signed",
                fix='set [web] secret_key_env = "MAILSYNC_LINK_KEY" (or secret_key_file) and put a random '
                "key there, e.g. python3 -c 'import secrets; print(secrets.token_urlsafe(32))'",
            )
        return cls(web.secret_key.read("[web] secret_key"), web.base_url, web.link_max_age_days)

    def token(self, action: Action, rep: str, key: str | None = None, digest_token: str | None = None) -> str:
        """A fresh signed token (new nonce) for one action by `rep`."""
        if action not in ACTIONS:
            msg = f"unknown link action {action!r}; one of {', '.join(ACTIONS)}"
            raise ValueError(msg)
        if action in KEYED and not key:
            msg = f"a {action} link names the proposal: pass its key"
            raise ValueError(msg)
        if action == "approve_all" and not digest_token:
            msg = "an approve_all link names its digest: pass digest_token"
            raise ValueError(msg)
        claims = {"a": action, "r": rep, "k": key, "d": digest_token, "n": secrets.token_urlsafe(12)}
        return self._links.dumps({name: value for name, value in claims.items() if value is not None})

    def url(self, action: Action, rep: str, key: str | None = None, digest_token: str | None = None) -> str:
        """The link to put in a digest: `<base_url>/a/<token>`."""
        return f"{self.base_url}{PATH}{self.token(action, rep, key, digest_token)}"

    def verify(self, token: str, now: datetime | None = None) -> LinkClaim:
        """The claim of a genuine, unexpired token; DecisionError "forged" or "expired" otherwise."""
        try:
            claims, signed_at = self._links.loads(token, return_timestamp=True)
        except BadData as exc:
            raise DecisionError(
                "this link is not valid: its signature does not match",
                reason="forged",
                fix="open the link from the digest email as it was sent (a link copied in part fails)",
            ) from exc
        claim = _claim(claims)
        expires = signed_at + self.max_age
        if (now or datetime.now(UTC)) > expires:
            raise DecisionError(
                f"this link expired on {expires:%Y-%m-%d}",
                reason="expired",
                fix="use the links in your latest digest, or reply to it",
            )
        return claim

    def form_token(self, claim: LinkClaim) -> str:
        """The CSRF token for the confirmation form of the link `claim` came from."""
        return self._forms.dumps(claim.nonce)

    def form_token_ok(self, claim: LinkClaim, value: str) -> bool:
        """Whether `value` is the form token of that link (signed by us, bound to its nonce)."""
        try:
            return bool(self._forms.loads(value) == claim.nonce)
        except BadData:
            return False


def _claim(claims: Any) -> LinkClaim:
    """The claim in a token's payload. A payload of another shape was signed with our key for another
    purpose or by an older version: refused as forged, never guessed at."""
    fields = ("a", "r", "k", "d", "n")
    if not (isinstance(claims, dict) and set(claims) <= set(fields)):
        claims = {}
    action, rep, key, digest, nonce = (claims.get(name) for name in fields)
    shaped = (
        action in ACTIONS
        and all(isinstance(v, str) and v for v in (rep, nonce))
        and all(v is None or isinstance(v, str) for v in (key, digest))
        and (action not in KEYED or key)
        and (action != "approve_all" or digest)
    )
    if not shaped:
        raise DecisionError(
            "this link is not valid: it does not say what to do",
            reason="forged",
            fix="open the link from the digest email as it was sent",
        )
    return LinkClaim(action=action, rep=rep, key=key, digest_token=digest, nonce=nonce)
