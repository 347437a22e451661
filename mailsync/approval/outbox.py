"""The outbox: each digest's exact message, kept from before SMTP sees it until it is recorded as sent.

`<archive_dir>/outbox/<token>.eml`, 0600 like everything under the data directory, written durably
(temporary file, fsync, rename), so a digest sent again after a crash is the same bytes: the same
Message-ID, numbering and links as the copy the rep may already have.
"""

from __future__ import annotations

import os
import tempfile
from email.message import EmailMessage
from email.parser import BytesParser
from typing import TYPE_CHECKING

from config.errors import StorageError
from mailsync.approval.smtp import POLICY
from storage.private import private_dir

if TYPE_CHECKING:
    from pathlib import Path


class Outbox:
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def path(self, token: str) -> Path:
        return self.directory / f"{token}.eml"

    def put(self, token: str, message: EmailMessage) -> None:
        """Keep `message` under `token`, durably, replacing any earlier one."""
        try:
            private_dir(self.directory)
            fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=self.directory)
            try:
                with os.fdopen(fd, "wb") as out:
                    out.write(message.as_bytes())
                    out.flush()
                    os.fsync(out.fileno())
                os.replace(tmp, self.path(token))  # noqa: PTH105 - tmp is the str mkstemp gave
            except BaseException:
                os.unlink(tmp)  # noqa: PTH108 - as above
                raise
        except OSError as exc:
            raise StorageError(
                f"cannot write the digest to the outbox {self.directory}: {exc.strerror}",
                fix="free disk space or fix permissions on archive_dir",
            ) from exc

    def get(self, token: str) -> EmailMessage | None:
        """The message kept under `token`, or None when there is none."""
        try:
            data = self.path(token).read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StorageError(
                f"cannot read the digest {self.path(token)} from the outbox: {exc.strerror}",
                fix="fix permissions on archive_dir",
            ) from exc
        message = BytesParser(_class=EmailMessage, policy=POLICY).parsebytes(data)
        assert isinstance(message, EmailMessage)  # noqa: S101 - for mypy: _class says so
        return message

    def remove(self, token: str) -> None:
        self.path(token).unlink(missing_ok=True)
