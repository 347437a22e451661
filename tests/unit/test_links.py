"""Digest links: signed claims bound to one rep and one proposal, expiring, forms bound to their link."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from itsdangerous import URLSafeTimedSerializer

from config.errors import ConfigError, DecisionError
from config.settings import WebSettings
from mailsync.approval.links import FORM_SALT, LINK_SALT, LinkClaim, LinkSigner

SECRET = "test-link-key-0123456789abcdef"
BASE = "https://crm-digest.example/"
REP = "dana@northwind.example"
KEY = "new_opportunity:thread-7f3a"


@pytest.fixture
def signer() -> LinkSigner:
    return LinkSigner(SECRET, BASE, max_age_days=14)


def token_of(url: str) -> str:
    return url.rsplit("/", 1)[1]


def test_a_link_carries_its_claims_under_the_base_url(signer: LinkSigner) -> None:
    url = signer.url("approve", REP, KEY, digest_token="d" * 32)
    assert url.startswith("https://crm-digest.example/a/")
    claim = signer.verify(token_of(url))
    assert (claim.action, claim.rep, claim.key, claim.digest_token) == ("approve", REP, KEY, "d" * 32)
    assert len(claim.nonce) >= 16


def test_every_link_has_its_own_nonce(signer: LinkSigner) -> None:
    nonces = {signer.verify(signer.token("reject", REP, KEY)).nonce for _ in range(20)}
    assert len(nonces) == 20


@pytest.mark.parametrize(
    ("action", "key", "digest"),
    [("unsubscribe", None, "d" * 32), ("list", None, None), ("approve_all", None, "d" * 32)],
)
def test_links_without_a_proposal(signer: LinkSigner, action, key, digest) -> None:
    claim = signer.verify(signer.token(action, REP, key, digest))
    assert (claim.action, claim.key, claim.digest_token) == (action, key, digest)


@pytest.mark.parametrize(
    ("action", "key", "digest"),
    [("approve", None, None), ("edit", "", None), ("approve_all", None, None), ("delete", KEY, None)],
)
def test_a_link_that_could_not_say_what_it_acts_on_is_not_made(
    signer: LinkSigner, action, key, digest
) -> None:
    with pytest.raises(ValueError, match=r"key|digest_token|action"):
        signer.token(action, REP, key, digest)


def test_a_long_key_still_makes_a_link(signer: LinkSigner) -> None:
    key = "link:" + "x" * 995  # Suggestion.key holds up to 1000 characters
    assert signer.verify(signer.token("approve", REP, key)).key == key


def test_a_changed_token_is_forged(signer: LinkSigner) -> None:
    token = signer.token("approve", REP, KEY)
    payload, _, signature = token.rpartition(".")
    # A base64 character's last bits can be padding: change characters whose bits all count.
    middle = len(payload) // 2
    tampered = [
        f"{payload}.{'A' if signature[0] != 'A' else 'B'}{signature[1:]}",  # the signature
        f"{payload[:middle]}{'A' if payload[middle] != 'A' else 'B'}{payload[middle + 1 :]}.{signature}",  # claims
        token[: len(token) // 2],  # a link cut when copied
        "",
    ]
    for bad in tampered:
        with pytest.raises(DecisionError) as caught:
            signer.verify(bad)
        assert caught.value.reason == "forged"
        assert caught.value.fix


def test_another_key_or_another_purpose_does_not_verify(signer: LinkSigner) -> None:
    other = LinkSigner("another-key-0123456789abcdef", BASE, 14)
    with pytest.raises(DecisionError, match="not valid"):
        signer.verify(other.token("approve", REP, KEY))
    claim = signer.verify(signer.token("approve", REP, KEY))
    form = signer.form_token(claim)
    with pytest.raises(DecisionError, match="not valid"):
        signer.verify(form)  # a form token is no link: another salt
    same_key_wrong_salt = URLSafeTimedSerializer(SECRET, salt=FORM_SALT).dumps({"a": "approve", "r": REP})
    with pytest.raises(DecisionError, match="not valid"):
        signer.verify(same_key_wrong_salt)


@pytest.mark.parametrize(
    "claims",
    [
        ["approve", REP],
        {"a": "approve", "r": REP, "n": "x"},  # no key for a one-proposal action
        {"a": "approve_all", "r": REP, "n": "x"},  # no digest
        {"a": "wire_money", "r": REP, "n": "x", "k": KEY},
        {"a": "approve", "r": REP, "k": KEY},  # no nonce: could never be single-use
        {"a": "approve", "r": 7, "n": "x", "k": KEY},
        {"a": "approve", "r": REP, "n": "x", "k": KEY, "admin": True},
    ],
)
def test_a_signed_payload_of_another_shape_is_refused_as_forged(signer: LinkSigner, claims) -> None:
    token = URLSafeTimedSerializer(SECRET, salt=LINK_SALT).dumps(claims)
    with pytest.raises(DecisionError) as caught:
        signer.verify(token)
    assert caught.value.reason == "forged"


def test_a_link_expires_after_max_age_days(signer: LinkSigner) -> None:
    token = signer.token("approve", REP, KEY)
    now = datetime.now(UTC)
    assert signer.verify(token, now=now + timedelta(days=13, hours=23)).key == KEY
    with pytest.raises(DecisionError) as caught:
        signer.verify(token, now=now + timedelta(days=14, minutes=1))
    assert caught.value.reason == "expired"
    assert "expired on" in str(caught.value)
    assert caught.value.fix


def test_expiry_cannot_be_extended_without_the_key(signer: LinkSigner) -> None:
    long_lived = LinkSigner(SECRET, BASE, max_age_days=90).token("approve", REP, KEY)
    with pytest.raises(DecisionError, match="expired"):
        signer.verify(long_lived, now=datetime.now(UTC) + timedelta(days=15))


def test_the_form_token_is_bound_to_its_links_nonce(signer: LinkSigner) -> None:
    claim = signer.verify(signer.token("approve", REP, KEY))
    other = signer.verify(signer.token("approve", REP, KEY))
    form = signer.form_token(claim)
    assert signer.form_token_ok(claim, form)
    assert not signer.form_token_ok(other, form)
    assert not signer.form_token_ok(claim, "")
    assert not signer.form_token_ok(claim, form[:-3])
    forged = LinkClaim("approve", REP, KEY, None, claim.nonce)
    assert not signer.form_token_ok(forged, LinkSigner("k" * 30, BASE, 14).form_token(forged))


def test_from_settings_reads_the_key_from_the_environment(monkeypatch) -> None:
    monkeypatch.setenv("TEST_LINK_KEY", SECRET)
    web = WebSettings(secret_key_env="TEST_LINK_KEY", public_url="https://crm.example/", link_max_age_days=3)
    signer = LinkSigner.from_settings(web)
    url = signer.url("list", REP)
    assert url.startswith("https://crm.example/a/")
    assert LinkSigner(SECRET, "https://crm.example", 3).verify(token_of(url)).rep == REP
    assert signer.max_age == timedelta(days=3)


def test_from_settings_reads_the_key_from_a_file(tmp_path) -> None:
    (tmp_path / "link.key").write_text(SECRET + "\n")
    signer = LinkSigner.from_settings(WebSettings(secret_key_file=tmp_path / "link.key"))
    assert LinkSigner(SECRET, BASE, 14).verify(token_of(signer.url("list", REP))).rep == REP
    assert signer.base_url == "http://127.0.0.1:9325"  # no public_url: the server's own address


def test_no_key_configured_is_a_config_error_naming_the_setting() -> None:
    with pytest.raises(ConfigError, match=r"\[web\] secret_key_env is not set") as caught:
        LinkSigner.from_settings(WebSettings())
    assert caught.value.fix
    assert "secret_key_env" in caught.value.fix


def test_a_key_named_but_not_set_is_a_config_error_naming_the_variable(monkeypatch) -> None:
    monkeypatch.delenv("TEST_LINK_KEY", raising=False)
    with pytest.raises(ConfigError, match=r"\[web\] secret_key: environment variable TEST_LINK_KEY"):
        LinkSigner.from_settings(WebSettings(secret_key_env="TEST_LINK_KEY"))


def test_an_empty_secret_is_refused() -> None:
    with pytest.raises(ValueError, match="secret"):
        LinkSigner("", BASE, 14)
