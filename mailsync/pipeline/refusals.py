"""One transaction per batch, and what to do when the database refuses one message of it.

A batch is written in one transaction. When the database refuses it for its data (a value too long for
a column, a constraint; not a lost connection, which Repo.session turns into a StorageError), the batch
is written again with a flush after each message, so that the refusal names its message; that message
is then written as quarantined, with the server's reason, and the rest of the batch commits. While
nothing is refused this costs nothing, where a savepoint per message costs two statements per message
every time.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import TYPE_CHECKING, TypeVar

from sqlalchemy.exc import DBAPIError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from sqlalchemy.orm import Session

    from storage.repo import Repo

T = TypeVar("T")


class Refused(Exception):  # noqa: N818 - not our error: the database refused what message `index` wrote
    def __init__(self, index: int, error: DBAPIError) -> None:
        super().__init__(index)
        self.index = index
        self.error = error


@contextmanager
def blame(session: Session, index: int, *, careful: bool) -> Iterator[None]:
    """Around the work for message `index`: when careful, flush it and name it on a refusal."""
    try:
        yield
        if careful:
            session.flush()
    except DBAPIError as exc:
        if careful:
            raise Refused(index, exc) from exc
        raise


def commit_batch(repo: Repo, work: Callable[[Session, dict[int, str], bool], T]) -> tuple[T, dict[int, str]]:
    """Run `work` in one committed transaction, again carefully and without each refused message as
    needed; returns its result and the messages refused (index -> reason)."""
    refused: dict[int, str] = {}
    careful = False
    while True:
        try:
            with repo.session() as session:
                result = work(session, refused, careful)
        except Refused as exc:
            if exc.index in refused:  # its quarantine record too: not the message's data
                raise exc.error from exc
            refused[exc.index] = f"database rejected the message: {first_line(exc.error.orig or exc.error)}"
            careful = True
            continue
        except DBAPIError:
            if careful:
                raise  # no one message's fault
            careful = True  # which message? write them one at a time to find out
            continue
        return result, refused


def first_line(error: BaseException) -> str:
    """The server's message without its DETAIL, which may quote the whole row (the body, say)."""
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__
