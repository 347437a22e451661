"""Distinct, realistic sales mail for the capture bench, shaped like the shared corpora.

    python -m bench.mailgen --profile            # the size and MIME mix measured on ../shared/corpora
    python -m bench.mailgen --write DIR -n 100   # write N messages as DIR/000000.eml ...

`generate(n, seed)` makes n messages between the reps and the people of the synthetic 50k-contact CRM
(bench/synth.py: EN/DE/ES deal talk, known and unknown people, free mail, internal mail, about 40 %
replies threaded by In-Reply-To/References). Each message takes its MIME shape and its size from one
corpus file drawn at random (the corpora are test mail, so their mix of plain, alternative, mixed with
attachments, related, signed and report mail and their long tail of sizes stand in for a real mailbox),
then varies everything else: mailer, Received chain, DKIM, charset and transfer encoding, attachment
types and names. Every message's bytes are unique (its Message-ID alone differs); the same seed and
corpora give the same bytes.
"""

from __future__ import annotations

import argparse
import base64
import email
import email.policy
import quopri
import random
import sys
from collections import Counter
from dataclasses import dataclass
from email.header import Header
from email.utils import format_datetime
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

if __package__ in {None, ""}:  # `python bench/mailgen.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.synth import INTERNAL_DOMAIN, Crm, Mail, build_crm, make_mail

if TYPE_CHECKING:
    from collections.abc import Iterator

CORPORA = Path(__file__).resolve().parents[2] / "shared" / "corpora"
SHAPES = ("plain", "html", "alternative", "mixed", "related", "signed", "report")
OWNER = f"dana@{INTERNAL_DOMAIN}"
MAILERS = (
    "User-Agent: Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:115.0) Thunderbird/115.6.0",
    "X-Mailer: Microsoft Outlook 16.0",
    "X-Mailer: iPhone Mail (21D61)",
    "X-Mailer: Apple Mail (2.3774.300.61.1.2)",
    "User-Agent: Roundcube Webmail/1.6.5",
    "X-Google-Smtp-Source: AGHT+IF",
)
ATTACHMENTS = (  # (content type, extension): the corpora's attachment types, images and PDFs first
    ("image/png", "png"),
    ("image/png", "png"),
    ("application/pdf", "pdf"),
    ("image/jpeg", "jpg"),
    ("application/octet-stream", "bin"),
    ("application/vnd.openxmlformats-officedocument.spreadsheetml.sheet", "xlsx"),
    ("application/msword", "doc"),
    ("application/zip", "zip"),
    ("text/plain", "txt"),
    ("text/calendar", "ics"),
)


@dataclass(frozen=True, slots=True)
class Sample:
    """One corpus file as the generator sees it: its MIME shape and its size."""

    shape: str
    size: int


def shape_of(raw: bytes) -> str:
    """The generator's shape for a message: what its top-level type and parts amount to."""
    msg = email.message_from_bytes(raw, policy=email.policy.compat32)
    top = msg.get_content_type()
    if top == "multipart/mixed":
        return "mixed"
    if top == "multipart/alternative":
        return "alternative"
    if top == "multipart/related":
        return "related"
    if top in {"multipart/signed", "multipart/encrypted", "application/pkcs7-mime"}:
        return "signed"
    if top in {"multipart/report", "message/delivery-status"}:
        return "report"
    if top == "text/html":
        return "html"
    if top.startswith(("multipart/", "message/")) or not top.startswith("text/"):
        return "mixed"
    return "plain"


@cache
def corpus_profile(corpora: Path = CORPORA) -> tuple[Sample, ...]:
    """Shape and size of every message file in the corpora, in path order (empty files left out)."""
    if not corpora.is_dir():
        raise FileNotFoundError(f"the shared corpora are missing at {corpora}: clone beside ../shared")
    samples = []
    for path in sorted(corpora.rglob("*")):
        if not path.is_file() or path.suffix in {".md", ".json"} or path.name in {"COPYING", "README"}:
            continue
        raw = path.read_bytes()
        if len(raw) >= 64:
            samples.append(Sample(shape_of(raw), len(raw)))
    return tuple(samples)


# -- the parts ---------------------------------------------------------------------------------


def _encode_text(text: str, subtype: str, rng: random.Random) -> str:
    """A text part's headers and body in a charset and transfer encoding drawn as the corpora use them."""
    charset = rng.choices(("utf-8", "iso-8859-1", "us-ascii"), weights=(80, 15, 5))[0]
    try:
        data = text.encode(charset)
    except UnicodeEncodeError:
        charset, data = "utf-8", text.encode()
    cte = rng.choices(("quoted-printable", "base64", "8bit", "7bit"), weights=(45, 25, 20, 10))[0]
    if cte == "7bit" and not data.isascii():
        cte = "quoted-printable"
    if cte == "quoted-printable":
        body = quopri.encodestring(data).decode("ascii")
    elif cte == "base64":
        body = base64.encodebytes(data).decode("ascii")
    else:
        body = data.decode(charset)
    return (
        f"Content-Type: text/{subtype}; charset={charset}\r\nContent-Transfer-Encoding: {cte}\r\n\r\n"
        + body.replace("\r\n", "\n").replace("\n", "\r\n")
    )


def _html(body: str) -> str:
    paras = "".join(f"<p>{p.replace(chr(10), '<br>')}</p>\n" for p in body.split("\n\n"))
    return (
        f'<html><head><meta charset="utf-8"></head><body style="font-family: Calibri">\n{paras}</body></html>'
    )


def _binary(kind: str, ext: str, name: str, size: int, rng: random.Random, *, inline: str = "") -> str:
    disposition = f"inline; filename={name}.{ext}" if inline else f'attachment; filename="{name}.{ext}"'
    cid = f"Content-ID: <{inline}>\r\n" if inline else ""
    blob = base64.encodebytes(rng.randbytes(max(16, size * 3 // 4))).decode().replace("\n", "\r\n")
    return (
        f'Content-Type: {kind}; name="{name}.{ext}"\r\nContent-Disposition: {disposition}\r\n{cid}'
        f"Content-Transfer-Encoding: base64\r\n\r\n{blob}"
    )


def _multipart(subtype: str, parts: list[str], boundary: str, extra: str = "") -> str:
    inner = "".join(f"--{boundary}\r\n{part}\r\n" for part in parts)
    head = f'Content-Type: multipart/{subtype}; boundary="{boundary}"{extra}\r\n\r\n'
    return head + "This is a multi-part message in MIME format.\r\n\r\n" + inner + f"--{boundary}--\r\n"


def _padded(body: str, target: int, rng: random.Random) -> str:
    """The body with quoted history below it until it is about `target` characters long."""
    lines = [body]
    size = len(body)
    while size < target:
        line = f"> {rng.choice(body.split())} {rng.getrandbits(64):x} " + " ".join(
            rng.choice(("thanks", "the", "pilot", "invoice", "Angebot", "propuesta", "next", "week"))
            for _ in range(10)
        )
        lines.append(line)
        size += len(line) + 1
    return "\n".join(lines)


def _content(shape: str, mail: Mail, size: int, i: int, rng: random.Random) -> str:
    """The MIME body (with its Content-Type) of one message, about `size` bytes."""
    boundary = f"----=_Part_{i}_{rng.getrandbits(40):010x}"
    text = mail.body
    if shape in {"plain", "html", "signed", "report"}:
        text = _padded(text, size - 900, rng)
    elif shape == "alternative":  # the text twice, plain and HTML
        text = _padded(text, (size - 1500) // 2, rng)
    if shape == "plain":
        return _encode_text(text, "plain", rng)
    if shape == "html":
        return _encode_text(_html(text), "html", rng)
    alternative = _multipart(
        "alternative",
        [_encode_text(text, "plain", rng), _encode_text(_html(text), "html", rng)],
        boundary + "_alt",
    )
    rest = max(0, size - len(alternative) - 1200)
    if shape == "alternative":
        return alternative
    if shape == "related":
        cid = f"image{i}@{mail.sender.domain}"
        logo = _binary("image/png", "png", f"image{i:03d}", max(rest, 800), rng, inline=cid)
        return _multipart("related", [alternative, logo], boundary, '; type="multipart/alternative"')
    if shape == "signed":
        sig = _binary("application/pkcs7-signature", "p7s", "smime", 1800, rng)
        plain = _encode_text(text, "plain", rng)
        return _multipart(
            "signed", [plain, sig], boundary, '; protocol="application/pkcs7-signature"; micalg=sha-256'
        )
    if shape == "report":
        status = (
            f"Content-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.{mail.to[0].domain}\r\n\r\n"
            f"Final-Recipient: rfc822; {mail.to[0].email}\r\nAction: failed\r\nStatus: 5.1.1\r\n"
        )
        original = (
            "Content-Type: text/rfc822-headers\r\n\r\n"
            f"Subject: {mail.subject}\r\nFrom: {mail.sender.email}\r\n"
        )
        return _multipart(
            "report",
            [_encode_text(text, "plain", rng), status, original],
            boundary,
            "; report-type=delivery-status",
        )
    count = rng.choices((1, 2, 3), weights=(70, 20, 10))[0]
    files = []
    for k in range(count):
        kind, ext = rng.choice(ATTACHMENTS)
        name = rng.choice(("Angebot", "quote", "PO", "contract", "notes", "cotizacion", "scan")) + f"_{i}_{k}"
        files.append(_binary(kind, ext, name, max(rest // count, 400), rng))
    return _multipart("mixed", [alternative, *files], boundary)


# -- the headers -------------------------------------------------------------------------------


def _address(name: str, addr: str) -> str:
    if name.isascii():
        return f'"{name}" <{addr}>'
    return f"{Header(name, 'utf-8').encode()} <{addr}>"


def _subject(subject: str) -> str:
    return subject if subject.isascii() else Header(subject, "utf-8", header_name="Subject").encode()


def _headers(mail: Mail, message_id: str, parent: str | None, rng: random.Random) -> list[str]:
    sent = format_datetime(mail.sent_at)
    hops = [
        f"Received: from mail-{rng.getrandbits(24):06x}.{mail.sender.domain} "
        f"(mail-{k}.{mail.sender.domain} [198.51.100.{rng.randint(1, 254)}])\r\n"
        f"\tby mx{k}.{INTERNAL_DOMAIN} with ESMTPS id {rng.getrandbits(48):012x}; {sent}"
        for k in range(rng.randint(1, 6))
    ]
    headers = [
        "Return-Path: <" + mail.sender.email + ">",
        *hops,
        f"From: {_address(mail.sender.name, mail.sender.email)}",
        f"To: {', '.join(_address(a.name, a.email) for a in mail.to)}",
        *([f"Cc: {', '.join(_address(a.name, a.email) for a in mail.cc)}"] if mail.cc else []),
        f"Subject: {_subject(mail.subject)}",
        f"Date: {sent}",
        f"Message-ID: <{message_id}>",
        *([f"In-Reply-To: <{parent}>", f"References: <{parent}>"] if parent else []),
        "MIME-Version: 1.0",
        rng.choice(MAILERS),
        f"Content-Language: {mail.lang}",
    ]
    if rng.random() < 0.5:
        sig = base64.b64encode(rng.randbytes(192)).decode()
        headers.append(
            f"DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d={mail.sender.domain}; s=s1;\r\n"
            f"\th=from:to:subject:date:message-id; bh={base64.b64encode(rng.randbytes(32)).decode()};\r\n"
            f"\tb={sig[:76]}\r\n\t{sig[76:]}"
        )
    if rng.random() < 0.3:
        headers.append(f"Thread-Index: {base64.b64encode(rng.randbytes(22)).decode()}")
    return headers


def _message(
    mail: Mail, sample: Sample, i: int, message_id: str, *, parent: str | None, rng: random.Random
) -> bytes:
    size = max(800, round(sample.size * rng.uniform(0.8, 1.2)))
    content = _content(sample.shape, mail, size, i, rng)
    return ("\r\n".join(_headers(mail, message_id, parent, rng)) + "\r\n" + content).encode()


def generate(count: int, seed: int = 14, corpora: Path = CORPORA) -> Iterator[bytes]:
    """`count` distinct messages, deterministic for a seed and the corpora."""
    rng = random.Random(seed)  # noqa: S311 - synthetic, deterministic data
    samples = corpus_profile(corpora)
    ids: list[str] = []
    for i, mail in enumerate(make_mail(_crm(), count, seed=seed, long=True)):
        message_id = f"{seed}.{i}.{rng.getrandbits(32):08x}@{mail.sender.domain}"
        parent = rng.choice(ids[-50:]) if ids and mail.subject.startswith("Re:") else None
        ids.append(message_id)
        yield _message(mail, rng.choice(samples), i, message_id, parent=parent, rng=rng)


def write_eml(directory: Path, count: int, seed: int = 14) -> Path:
    """`generate(count, seed)` as numbered .eml files in `directory` (made if missing); returns it."""
    directory.mkdir(parents=True, exist_ok=True)
    for i, raw in enumerate(generate(count, seed)):
        (directory / f"{i:07d}.eml").write_bytes(raw)
    return directory


def new_contact_mail(i: int, seed: int = 99) -> tuple[bytes, str]:
    """A message from a person the CRM does not know at an account it knows, to the mailbox's owner:
    mailsync proposes the new contact. Returns the bytes and the proposal's key."""
    rng = random.Random(seed * 1_000_003 + i)  # noqa: S311 - synthetic, deterministic data
    domain = rng.choice(_crm().domains)
    addr = f"latency.{seed}.{i}@{domain}"
    text = (
        "Hello Dana,\r\n\r\n"
        f"I took over purchasing from my colleague last week (ref {rng.getrandbits(48):x}).\r\n"
        "Could you send me the current price list for the sensor kits?\r\n\r\nBest regards,\r\nRobin Vale\r\n"
    )
    raw = (
        f'From: "Robin Vale" <{addr}>\r\nTo: "Dana" <{OWNER}>\r\nSubject: Price list\r\n'
        f"Date: Mon, 30 Nov 2026 10:{i % 60:02d}:00 +0000\r\nMessage-ID: <lat.{seed}.{i}@{domain}>\r\n"
        f"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{text}"
    ).encode()
    return raw, f"new_contact:{addr}"


@cache
def _crm() -> Crm:
    return build_crm()


def profile_table(samples: tuple[Sample, ...]) -> list[tuple[str, int, int, int]]:
    """(shape, files, median bytes, max bytes) per shape, most common first."""
    counts = Counter(s.shape for s in samples)
    rows = []
    for shape, n in counts.most_common():
        sizes = sorted(s.size for s in samples if s.shape == shape)
        rows.append((shape, n, sizes[len(sizes) // 2], sizes[-1]))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", action="store_true", help="print the corpora's shape and size mix")
    parser.add_argument("--write", type=Path, help="write the messages into this directory")
    parser.add_argument("-n", "--count", type=int, default=100)
    parser.add_argument("--seed", type=int, default=14)
    args = parser.parse_args(argv)
    if args.profile:
        samples = corpus_profile()
        sizes = sorted(s.size for s in samples)
        print(
            f"{len(samples)} files, median {sizes[len(sizes) // 2]:,} B, mean {sum(sizes) // len(sizes):,} B"
        )
        for shape, n, median, largest in profile_table(samples):
            print(f"{shape:12} {n:4} files  median {median:>9,} B  max {largest:>10,} B")
    if args.write:
        write_eml(args.write, args.count, args.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
