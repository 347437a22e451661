"""Small, distinct plain-text emails for tests that fill a mailbox."""

from __future__ import annotations

import email.utils
import itertools

_numbers = itertools.count(1)


def plain_mail(subject: str, body: str = "Hello, can you send pricing?", *, id_prefix: str = "sync") -> bytes:
    """A message from Rachel at acme.example to Dana, unique per call (Message-ID and body end in a counter).

    Bare LF line endings, as a client would hand them over; Dovecot stores CRLF.
    """
    n = next(_numbers)
    return (
        f"From: Rachel Kim <rachel@acme.example>\nTo: dana@northwind.example\nSubject: {subject}\n"
        f"Date: {email.utils.format_datetime(email.utils.localtime())}\n"
        f"Message-ID: <{id_prefix}-{n}@acme.example>\n\n{body} {n}\n"
    ).encode()
