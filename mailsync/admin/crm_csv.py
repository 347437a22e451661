"""CRM CSV import: reads accounts/contacts/opportunities/reps files in DESIGN.md's format.

Each row is validated on its own; a bad row becomes a RowError with file, line, column and reason,
and every good row is kept (a CRM import must never block on one bad line). A value it can live
without but that looks wrong (an owner who is no known rep, a currency ISO 4217 does not know) is
kept with a warning, and so is a bad value in an optional rep column (`lead`, `active`, `timezone`,
`digest_at`, `locale`): the field is left empty, so the [digest] default applies. Extra columns are
ignored with a warning; `mapping` renames another CRM's
columns (`--map "Account Name=name"`). The delimiter is the one under which the header reads best
(Excel writes `;` in many locales) unless `--delimiter` says.
"""

from __future__ import annotations

import re
import zoneinfo
from dataclasses import dataclass, field
from datetime import date, datetime, time
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any, ClassVar

from babel import localedata
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from config.currencies import CURRENCIES
from config.errors import ConfigError, CrmImportError
from mailsync.admin.csv_records import FIELD_LIMIT, Record, detect_delimiter, read_records, restore

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

FILES = ("reps", "accounts", "contacts", "opportunities")
_EMAIL = re.compile(r"^[^@\s;,<>]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+$")
_DOMAIN = re.compile(r"^[a-z0-9-]+(\.[a-z0-9-]+)+$")


def _optional(value: str | None, *, lower: bool = False) -> str | None:
    value = (value or "").strip()
    return (value.lower() if lower else value) or None


def _split(value: str) -> list[str]:
    return [part.strip() for part in value.split(";") if part.strip()]


class _Row(BaseModel):
    model_config = ConfigDict(str_strip_whitespace=True, frozen=True)
    required: ClassVar[tuple[str, ...]]


def _lead(value: str) -> str | None:
    if value and not _EMAIL.match(value):
        msg = f"not an email address: {value!r}"
        raise ValueError(msg)
    return value.lower() or None


_FLAGS = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}


def _active(value: str) -> bool | None:
    if not value:
        return None  # no statement: _validate leaves the field out
    if value.lower() not in _FLAGS:
        msg = f"not true or false: {value!r} (write true/false, yes/no or 1/0)"
        raise ValueError(msg)
    return _FLAGS[value.lower()]


def _timezone(value: str) -> str | None:
    if not value:
        return None
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        msg = f"unknown time zone {value!r} (write an IANA name such as Europe/Berlin)"
        raise ValueError(msg) from None
    return value


def _digest_at(value: str) -> str | None:
    found = re.fullmatch(r"([01]?[0-9]|2[0-3]):([0-5][0-9])", value)
    if value and not found:
        msg = f"not a time of day: {value!r} (write HH:MM, e.g. 07:30)"
        raise ValueError(msg)
    return f"{int(found[1]):02d}:{found[2]}" if found else None


def _locale(value: str) -> str | None:
    language, _, region = value.replace("-", "_").partition("_")
    name = language.lower() + (f"_{region.upper()}" if region else "")
    if value and not (re.fullmatch(r"[a-z]{2,3}(_[A-Z]{2})?", name) and localedata.exists(name)):
        msg = f"unknown locale {value!r} (write a language and region such as en_US or de_DE)"
        raise ValueError(msg)
    return name or None


# reps.csv's optional columns: each value checked on its own, since a bad one is a warning, not a bad row.
REP_OPTIONS: dict[str, Callable[[str], Any]] = {
    "lead": _lead,
    "active": _active,
    "timezone": _timezone,
    "digest_at": _digest_at,
    "locale": _locale,
}


class RepRow(_Row):
    required = ("email",)
    email: str
    name: str = ""
    team: str | None = None
    lead: str | None = None  # the optional columns arrive checked (REP_OPTIONS)
    active: bool = True
    timezone: str | None = None
    digest_at: str | None = None
    locale: str | None = None

    @field_validator("email")
    @classmethod
    def _email(cls, value: str) -> str:
        if not _EMAIL.match(value):
            msg = f"not an email address: {value!r}"
            raise ValueError(msg)
        return value.lower()


class AccountRow(_Row):
    required = ("id", "name")
    id: str
    name: str
    domains: list[str]

    @field_validator("domains", mode="before")
    @classmethod
    def _domains(cls, value: str) -> list[str]:
        domains = [d.lower().lstrip("@") for d in _split(value or "")]
        bad = [d for d in domains if not _DOMAIN.match(d)]
        if bad:
            msg = f"not a domain: {bad[0]!r}"
            raise ValueError(msg)
        return domains


class ContactRow(_Row):
    required = ("id", "email")
    id: str
    account_id: str | None = None
    name: str = ""
    emails: list[str]
    owner_rep: str | None = None

    @field_validator("emails", mode="before")
    @classmethod
    def _emails(cls, value: str) -> list[str]:
        emails = [e.lower() for e in _split(value or "")]
        if not emails:
            msg = "at least one email address is required"
            raise ValueError(msg)
        bad = [e for e in emails if not _EMAIL.match(e)]
        if bad:
            msg = f"not an email address: {bad[0]!r}"
            raise ValueError(msg)
        return emails

    _owner = field_validator("owner_rep", mode="before")(lambda v: _optional(v, lower=True))
    _account = field_validator("account_id", mode="before")(_optional)


class OpportunityRow(_Row):
    required = ("id", "account_id", "name", "stage")
    id: str
    account_id: str
    name: str
    stage: str
    stage_raw: str
    amount: str | None = None
    currency: str | None = None
    owner_rep: str | None = None
    created_at: str | None = None

    @field_validator("amount", mode="before")
    @classmethod
    def _amount(cls, value: str | None) -> str | None:
        if not (value or "").strip():
            return None
        try:
            amount = Decimal(str(value).strip())
        except InvalidOperation:
            msg = f"not a plain decimal amount: {value!r} (write 48000.00)"
            raise ValueError(msg) from None
        if not amount.is_finite() or amount < 0:
            msg = f"amount must be a non-negative number: {value!r}"
            raise ValueError(msg)
        return str(amount)

    @field_validator("currency", mode="before")
    @classmethod
    def _currency(cls, value: str | None) -> str | None:
        value = (value or "").strip().upper()
        if value and not re.fullmatch(r"[A-Z]{3}", value):
            msg = f"not an ISO 4217 currency code: {value!r}"
            raise ValueError(msg)
        return value or None

    @field_validator("created_at", mode="before")
    @classmethod
    def _date(cls, value: str | None) -> str | None:
        value = (value or "").strip()
        if not value:
            return None
        try:
            parsed = (
                datetime.fromisoformat(value) if "T" in value or " " in value else date.fromisoformat(value)
            )
        except ValueError:
            msg = f"not an ISO 8601 date: {value!r}"
            raise ValueError(msg) from None
        # CRM dates are calendar dates; stored as midnight, naive like every database time.
        return (parsed if isinstance(parsed, datetime) else datetime.combine(parsed, time())).isoformat()

    _owner = field_validator("owner_rep", mode="before")(lambda v: _optional(v, lower=True))


_MODELS: dict[str, type[_Row]] = {
    "reps": RepRow,
    "accounts": AccountRow,
    "contacts": ContactRow,
    "opportunities": OpportunityRow,
}
# CSV column -> model field, where they differ.
_COLUMN_FIELD = {"accounts": {"domain": "domains"}, "contacts": {"email": "emails"}}
_COLUMNS = {
    "reps": ("email", "name", "team", *REP_OPTIONS),
    "accounts": ("id", "name", "domain"),
    "contacts": ("id", "account_id", "name", "email", "owner_rep"),
    "opportunities": ("id", "account_id", "name", "stage", "amount", "currency", "owner_rep", "created_at"),
}


@dataclass(frozen=True, slots=True)
class RowError:
    file: str
    line: int
    column: str | None
    reason: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" + (f", column {self.column}" if self.column else "")
        return f"{where}: {self.reason}"


@dataclass
class CrmFiles:
    """The valid rows of one import (as the event-log payload) and everything wrong with the rest."""

    rows: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    read: dict[str, int] = field(default_factory=dict)
    errors: list[RowError] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def find_files(paths: list[Path]) -> dict[str, Path]:
    """Map each kind to its file: directories are searched for `<kind>.csv`."""
    found: dict[str, Path] = {}
    for path in paths:
        if not path.exists():
            raise CrmImportError(f"{path} does not exist", fix="pass CSV files or a directory holding them")
        candidates = sorted(path.glob("*.csv")) if path.is_dir() else [path]
        for candidate in candidates:
            kind = candidate.stem.lower()
            if kind in FILES:
                found[kind] = candidate
            elif not path.is_dir():
                raise CrmImportError(
                    f"{candidate}: unknown CRM file name",
                    fix=f"name it one of {', '.join(f + '.csv' for f in FILES)}",
                )
    if not found:
        shown = ", ".join(str(p) for p in paths)
        raise CrmImportError(
            f"no CRM CSV files in {shown}",
            fix="expected accounts.csv, contacts.csv, opportunities.csv, reps.csv",
        )
    return found


def parse_delimiter(value: str | None) -> str | None:
    """`--delimiter` as given: one character, or `tab`; None lets each file's header decide."""
    if value is None:
        return None
    delimiter = "\t" if value.lower() in {"tab", "\\t"} else value
    if len(delimiter) != 1 or delimiter in '"\r\n':
        raise ConfigError(
            f"--delimiter {value!r} cannot separate CSV fields",
            fix="give one character other than a quote or a line break: --delimiter ';' or --delimiter tab",
        )
    return delimiter


def read_crm_files(
    files: dict[str, Path],
    stage_for: Callable[[str], str | None],
    known: dict[str, set[str]],
    mapping: dict[str, str] | None = None,
    delimiter: str | None = None,
) -> CrmFiles:
    """Validate every row of every file; cross-check ids against this import and `known` ones.

    `delimiter` None: each file's is detected from its header line."""
    result = CrmFiles()
    for kind in FILES:
        if kind in files:
            _read_one(kind, files[kind], stage_for, mapping or {}, result, delimiter=delimiter)
    _cross_check(result, known, {k: str(v) for k, v in files.items()})
    return result


def _read_text(path: Path) -> str:
    try:
        with path.open(encoding="utf-8-sig", newline="") as file:  # -sig: Excel's UTF-8 starts with a BOM
            return file.read()
    except UnicodeDecodeError as exc:
        raise CrmImportError(
            f"{path}: not UTF-8 text (byte {exc.start})", fix="re-export the file as UTF-8 CSV"
        ) from exc
    except OSError as exc:
        raise CrmImportError(f"{path}: cannot read: {exc.strerror}", fix="check the path") from exc


def _read_one(
    kind: str,
    path: Path,
    stage_for: Callable[[str], str | None],
    mapping: dict[str, str],
    result: CrmFiles,
    *,
    delimiter: str | None,
) -> None:
    text = _read_text(path)
    wanted = _COLUMNS[kind]

    def rename(cell: str) -> str:
        return mapping.get(cell.strip(), cell.strip())

    delimiter = delimiter or detect_delimiter(text, lambda cells: sum(rename(c) in wanted for c in cells))
    records = read_records(text, delimiter, str(path))
    first = next(records, None)
    header = [rename(cell) for cell in first.fields] if first else []
    _check_header(kind, path, header, result)
    rows: list[dict[str, Any]] = []
    count = 0
    for record in records:
        if record.oversized is None and not any(value.strip() for value in record.fields):
            continue  # a row of empty cells, as spreadsheets export formatted but unused rows
        count += 1
        row = _validate(kind, str(path), header, record, stage_for)
        if isinstance(row, RowError):
            result.errors.append(row)
        else:
            rows.append(row)
    result.rows[kind] = rows
    result.read[kind] = count


def _check_header(kind: str, path: Path, header: list[str], result: CrmFiles) -> None:
    wanted = _COLUMNS[kind]
    missing = [
        c
        for c in _MODELS[kind].required
        if c not in header and _COLUMN_FIELD.get(kind, {}).get(c, c) not in header
    ]
    if missing:
        raise CrmImportError(
            f"{path}: missing column {missing[0]!r} (header: {', '.join(header) or 'empty'})",
            fix=f"columns are {','.join(wanted)}; for another CRM's export: --map 'their name={missing[0]}'; "
            "for another separator than , ; | or tab: --delimiter",
        )
    extra = [c for c in header if c not in wanted]
    if extra:
        result.warnings.append(f"{path}: ignoring extra column(s) {', '.join(extra)}")


def _validate(
    kind: str, file: str, header: list[str], record: Record, stage_for: Callable[[str], str | None]
) -> dict[str, Any] | RowError:
    """The row as the event-log payload has it (plus `_line` and `_warnings`), or what is wrong with it."""
    if record.oversized is not None:
        column = header[record.oversized] if record.oversized < len(header) else None
        return RowError(
            file,
            record.line,
            column,
            f"value over {FIELD_LIMIT:,} characters, the limit for one field{_span(record)}",
        )
    if len(record.fields) != len(header):
        return RowError(
            file,
            record.line,
            None,
            f"row has {len(record.fields)} fields, header has {len(header)}{_span(record)}",
        )
    renamed = _COLUMN_FIELD.get(kind, {})
    cells = [restore(cell) for cell in record.fields]  # a cell `mailsync export` neutralised, as written
    values = {renamed.get(k, k): v for k, v in zip(header, cells, strict=True) if k in _COLUMNS[kind]}
    if kind == "opportunities":
        values["stage_raw"] = values.get("stage", "")
        canonical = stage_for(values.get("stage", ""))
        if canonical is None:
            reason = f"unknown stage {values.get('stage')!r}; add it to [stage_map] in the config"
            return RowError(file, record.line, "stage", reason)
        values["stage"] = canonical
    blank = [c for c in _MODELS[kind].required if not values.get(renamed.get(c, c), "").strip()]
    if blank:
        return RowError(file, record.line, blank[0], "required value is empty")
    warnings = _check_options(file, record.line, values) if kind == "reps" else []
    if kind == "reps" and "active" in values and values["active"] is None:
        # An empty (or unreadable) `active` cell states nothing: it must not bring back a rep deactivated
        # since (`mailsync rep deactivate`; the rule is in mailsync/approval/reps.py). A new rep is active.
        values.pop("active", None)
    # An optional column the file does not have is left out, so a re-import keeps what is stored.
    absent = {name for name in REP_OPTIONS if name not in values} if kind == "reps" else set()
    try:
        row = _MODELS[kind].model_validate(values).model_dump(exclude=absent)
    except ValidationError as exc:
        first = exc.errors()[0]
        column = str(first["loc"][0]) if first["loc"] else None
        column = {v: k for k, v in renamed.items()}.get(column or "", column)
        return RowError(file, record.line, column, str(first["msg"]).removeprefix("Value error, "))
    return row | {"_line": record.line, "_warnings": warnings}


def _check_options(file: str, line: int, values: dict[str, Any]) -> list[str]:
    """Clean reps.csv's optional values in place; a bad one is left empty, with a warning."""
    warnings = []
    for name, check in REP_OPTIONS.items():
        if name not in values:
            continue
        try:
            values[name] = check(values[name].strip())
        except ValueError as exc:
            warnings.append(str(RowError(file, line, name, f"{exc}; left empty")))
            values[name] = check("")
    return warnings


def _span(record: Record) -> str:
    if record.last_line == record.line:
        return ""
    return f" (the row runs from line {record.line} to {record.last_line}: check its quotes)"


def _cross_check(result: CrmFiles, known: dict[str, set[str]], files: dict[str, str]) -> None:
    """Drop rows that point at an account or id that does not exist, or repeat an id; warn about values
    the import keeps but the operator should look at."""
    accounts = known.get("accounts", set()) | {r["id"] for r in result.rows.get("accounts", [])}
    reps = known.get("reps", set()) | {r["email"] for r in result.rows.get("reps", [])}
    for kind in FILES:
        seen: set[str] = set()
        kept = []
        for row in result.rows.get(kind, []):
            key = row.get("id") or row.get("email")
            problem = None
            if key in seen:
                problem = ("id" if "id" in row else "email", f"duplicate {key!r}; the first row is kept")
            elif row.get("account_id") and row["account_id"] not in accounts:
                problem = ("account_id", f"unknown account {row['account_id']!r}")
            if problem:
                result.errors.append(RowError(files[kind], row["_line"], problem[0], problem[1]))
                continue
            seen.add(str(key))
            result.warnings.extend(row["_warnings"])
            result.warnings.extend(str(doubt) for doubt in _doubts(files[kind], row, reps))
            kept.append({k: v for k, v in row.items() if not k.startswith("_")})
        result.rows[kind] = kept


def _doubts(file: str, row: dict[str, Any], reps: set[str]) -> Iterator[RowError]:
    """Values a CRM import can live with, so keeps, but that look wrong."""
    for column in ("owner_rep", "lead"):
        rep = row.get(column)
        if rep and rep not in reps:
            reason = f"unknown rep {rep!r} (not in reps.csv nor in the database); imported anyway"
            yield RowError(file, row["_line"], column, reason)
    currency = row.get("currency")
    if currency and currency not in CURRENCIES:
        reason = f"{currency!r} is not an ISO 4217 currency code; imported as written"
        yield RowError(file, row["_line"], "currency", reason)
