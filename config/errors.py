"""The one exception hierarchy of mailsync; every module raises from here.

CaptureError
  ConfigError              # bad or missing setting: names the key and the fix
  SourceError
    AuthFailed             # the server refused the login: wrong password or username
    SourceUnavailable      # connect/timeout: try again next tick
    UidValidityChanged     # resync the folder
  ArchiveError             # a blob could not be written or read back
  ParseError               # one message is bad; keep it archived, quarantine it
  MatchError
  StorageError             # database unreachable, locked, or schema out of date
  CrmImportError           # a CSV file cannot be read at all (bad rows are reported, not raised)
  DecisionError            # a proposal cannot be decided as asked: `reason` says why
  DeliveryError            # the SMTP relay could not be reached or refused a message: retried later
  LeaseLost                # another process took over this mailbox: stop writing for it
  SearchError              # a search query or `show` id that cannot be answered as written

Edges translate library errors (`raise SourceUnavailable(...) from exc`); the sync loop catches
`CaptureError` per message and carries on; anything else is a bug and fails loudly.
"""

from __future__ import annotations


class CaptureError(Exception):
    """Root of every error mailsync raises on purpose.

    `fix` is one line telling the user what to do; the CLI prints it under the message.
    """

    def __init__(self, message: str, *, fix: str | None = None) -> None:
        super().__init__(message)
        self.fix = fix


class ConfigError(CaptureError):
    pass


class SourceError(CaptureError):
    pass


class AuthFailed(SourceError):  # noqa: N818 - named like its siblings, for what happened
    pass


class SourceUnavailable(SourceError):  # noqa: N818 - the design names it so
    pass


class UidValidityChanged(SourceError):  # noqa: N818 - the design names it so
    pass


class ArchiveError(CaptureError):
    pass


class ParseError(CaptureError):
    pass


class MatchError(CaptureError):
    pass


class StorageError(CaptureError):
    pass


class CrmImportError(CaptureError):
    pass


class DecisionError(CaptureError):
    """A decision refused; `reason` is one of REASONS, for pages, replies and logs."""

    REASONS = frozenset({"unknown", "decided", "not_yours", "bad_edit", "forged", "expired", "reused"})

    def __init__(self, message: str, *, reason: str, fix: str | None = None) -> None:
        if reason not in self.REASONS:
            msg = f"unknown decision error reason {reason!r}"
            raise ValueError(msg)
        super().__init__(message, fix=fix)
        self.reason = reason


class DeliveryError(CaptureError):
    """Mail could not be handed to the SMTP relay (unreachable, TLS, login, or a refusal)."""


class SearchError(CaptureError):
    """A search query with a syntax error, a bad filter, or a message id that does not exist."""


class LeaseLost(CaptureError):  # noqa: N818 - named for what happened, like AuthFailed
    """This process's lease on a mailbox expired and another process may hold it: its batch is not
    committed, its cursor not moved; the poll for that mailbox ends."""
