"""File sources for imports: a Maildir (with Maildir++ subfolders), an mbox file, one .eml file, or a
directory tree of message files (each file one message, mbox files split).
"""

from __future__ import annotations

import mailbox
from pathlib import Path
from typing import TYPE_CHECKING

from config.errors import SourceError
from storage.records import Provenance, RawMessage

if TYPE_CHECKING:
    from collections.abc import Iterator

_NOT_MAIL = ("readme", "copying", "license", "licence")
_NOT_MAIL_SUFFIXES = (".md", ".json", ".py", ".toml", ".csv")

ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"  # every archive blob starts so (storage/archive.py)
READ_WHOLE_BYTES = 16 * 1024 * 1024  # bigger files are handed on by path, never read whole here


def _is_maildir(path: Path) -> bool:
    return (path / "cur").is_dir() or (path / "new").is_dir()


def _is_mbox(path: Path) -> bool:
    with path.open("rb") as handle:
        return handle.read(5) == b"From "


def _is_zstd(path: Path) -> bool:
    """A zstd frame (an archive blob), whatever its name says."""
    try:
        with path.open("rb") as handle:
            return handle.read(4) == ZSTD_MAGIC
    except OSError:
        return False


def _skipped(path: Path) -> bool:
    name = path.name.lower()
    return name.startswith((".", *_NOT_MAIL)) or name.endswith(_NOT_MAIL_SUFFIXES)


class FileSource:
    """Everything importable under `root`, as (folder, file) units counted before reading."""

    def __init__(self, root: Path, mailbox_name: str) -> None:
        if not root.exists():
            raise SourceError(
                f"{root} does not exist", fix="pass a Maildir, an mbox file, an .eml file or a directory"
            )
        self.root = root.resolve()
        self.mailbox = mailbox_name
        self.units = self._units()
        blobs = sum(path.suffix == ".zst" and _is_zstd(path) for _, path in self.units)
        if blobs:  # the archive (or its blobs/): stored already, never a second time
            raise SourceError(
                f"{root} is a mailsync archive ({blobs:,} compressed blobs), not a mailbox",
                fix="its mail is stored already: `mailsync replay` processes archived mail again",
            )

    def _units(self) -> list[tuple[str, Path]]:
        if self.root.is_file():
            return [(self.root.stem, self.root)]
        if _is_maildir(self.root):
            units = self._maildir_folder("INBOX", self.root)
            for sub in sorted(p for p in self.root.iterdir() if p.name.startswith(".") and _is_maildir(p)):
                units += self._maildir_folder(sub.name[1:], sub)
            return units
        files = sorted(p for p in self.root.rglob("*") if p.is_file() and not _skipped(p))
        return [(str(p.parent.relative_to(self.root)), p) for p in files]

    @staticmethod
    def _maildir_folder(folder: str, path: Path) -> list[tuple[str, Path]]:
        return [
            (folder, p)
            for sub in ("cur", "new")
            if (path / sub).is_dir()
            for p in sorted((path / sub).iterdir())
            if p.is_file() and not p.name.startswith(".")
        ]

    def __len__(self) -> int:
        return len(self.units)

    def __iter__(self) -> Iterator[RawMessage]:
        for folder, path in self.units:
            yield from self.read(folder, path)

    def read(self, folder: str, path: Path) -> Iterator[RawMessage]:
        """The messages in one unit (a file; an mbox file holds several)."""
        # A Maildir file's name changes with its flags (":2,S" -> ":2,RS"); the copy does not.
        where = str(path).split(":2,", 1)[0]
        try:
            if _is_mbox(path):
                box = mailbox.mbox(path, create=False)
                try:
                    for index, key in enumerate(box.iterkeys()):
                        yield RawMessage(box.get_bytes(key), self._provenance(folder, f"{where}#{index}"))
                finally:
                    box.close()
                return
            if path.stat().st_size > READ_WHOLE_BYTES:  # the pipeline streams it from the file
                yield RawMessage(b"", self._provenance(folder, where), spool=path)
                return
            data = path.read_bytes()
        except OSError as exc:
            raise SourceError(f"cannot read {path}: {exc.strerror}", fix="check permissions") from exc
        yield RawMessage(data, self._provenance(folder, where))

    def _provenance(self, folder: str, path: str) -> Provenance:
        return Provenance(mailbox=self.mailbox, folder=folder, path=path)
