"""Reply commands: a rep's answer to a digest, read into decisions. Pure: text in, commands out.

A rep answers a digest with commands, one a line or several separated by ";" (case does not matter):

    approve 1 3          also `approve 1,3`, `approve 1-3`, `approve #2`; synonyms accept, ok, okay, yes
    reject 2             synonyms decline, no
    approve all          every proposal of that digest not named elsewhere in the reply; `reject all` too
    edit 4 amount=50000 stage=proposal
                         approve 4 with these changes; synonym change; a value with spaces in quotes:
                         name="Acme rollout"

Numbers are the digest's own (1..N), mapped to the proposals' stable keys through the digest's items.
A proposal named by number wins over "all" ("approve all" and "reject 2" reject 2 and approve the
rest); the same proposal named twice with different verdicts keeps the first and reports the second.

Only the rep's own text counts. Dropped: quoted lines (`>`), a quote's attribution ("On ... wrote:",
"Am ... schrieb ...:", also when the client wrapped it over up to three lines), and everything from an
Outlook quote header ("-----Original Message-----", a From:/Sent: block, a line of underscores), a
forwarded message, a signature ("-- ") or a mobile footer ("Sent from my iPhone") onwards. Unquoted
lines after an attribution stay: that is where bottom-posted and interleaved replies put their
commands, and every client that writes an attribution quotes with `>` below it. Every other line that
is not a command is kept, with why, for the confirmation.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence

Verdict = Literal["approve", "reject"]

_APPROVE = frozenset({"approve", "approved", "accept", "ok", "okay", "yes"})
_REJECT = frozenset({"reject", "rejected", "decline", "no"})
_EDIT = frozenset({"edit", "change"})
_FILLER = frozenset({"and", "&", "und"})
_MAX_RANGE = 200  # a digest lists at most [digest] max_items (<= 200) proposals
_MAX_LINE = 500  # longer lines are neither commands nor attributions (and no regex scans them twice)
_ATTRIBUTION_LINES = 3  # clients wrap a long "On <date>, <name> <address> wrote:" over up to three

_COMMAND = re.compile(r"^(?:[-*\u2022]\s+)?([^\W\d_]+)\s*:?\s*(.*)$")
_NUMBER = re.compile(r"#?(\d{1,4})")
_NUMBERISH = re.compile(r"\d|^all\W*$", re.IGNORECASE)
_RANGE = re.compile(r"#?(\d{1,4})-#?(\d{1,4})")
_DASHES = re.compile(r"\s*[-\u2013\u2014]\s*")
_SEPARATORS = re.compile(r"[\s,]+")
_FIELD = re.compile(r"^([A-Za-z_]{1,30})=(.+)$", re.DOTALL)
_EQUALS = re.compile(r"\s*=\s*")

_WROTE = re.compile(  # "..., Dana <d@x> wrote:"; Germanic languages put the verb first: "schrieb Dana <d@x>:"
    r"(?:\b(?:wrote|writes|a\s+écrit|escribió|ha\s+scritto|napisał)\s*:?|\b(?:schrieb|schreef|skrev)\b.*:)\s*$",
    re.IGNORECASE,
)
_ATTRIBUTION_START = re.compile(r"^(?:On|Am|Le|El|Il|Op|Den|W dniu)\s", re.IGNORECASE)
_QUOTE_ENDS = re.compile(
    r"^(?:-{2,}\s*(?:original message|ursprüngliche nachricht|message d'origine|forwarded message"
    r"|weitergeleitete nachricht)\s*-*"
    r"|_{10,}"
    r"|begin forwarded message:"
    r"|sent from my\s.+|sent from mail for\s.+|get outlook for\s.+|von meinem\s.+\sgesendet"
    r"|envoyé de mon\s.+)\s*$",
    re.IGNORECASE,
)
_HEADER_FROM = re.compile(r"^\W*(?:from|von|de|van|da)\s*:\W*\S", re.IGNORECASE)
_HEADER_NEXT = re.compile(
    r"^\W*(?:sent|date|to|subject|gesendet|datum|an|betreff|envoyé|enviado|objet)\s*:", re.IGNORECASE
)
_HEADER_INLINE = re.compile(r"\s(?:sent|gesendet|envoyé|enviado)\s*:", re.IGNORECASE)
_SIGNATURE = "--"
_MARKDOWN_ESCAPE = re.compile(r"\\([-\\`*_{}\[\]()#+.!])")  # html2text escapes these: "\\- approve 1"
_WORDS = re.compile(r"\w")


@dataclass(frozen=True, slots=True)
class Command:
    """One understood command, with the line it came from."""

    line: str
    verdict: Verdict
    numbers: tuple[int, ...] = ()  # empty for "all"
    every: bool = False  # "approve all" / "reject all"
    edits: tuple[tuple[str, str], ...] = ()  # (field, value), for `edit`


@dataclass(frozen=True, slots=True)
class Unclear:
    """A line of the rep's own text that did nothing, and why."""

    line: str
    why: str


@dataclass(frozen=True, slots=True)
class Reply:
    commands: tuple[Command, ...]
    unclear: tuple[Unclear, ...]


@dataclass(frozen=True, slots=True)
class Step:
    """One decision to take: proposal `n` of the digest, by its stable key."""

    n: int
    key: str
    verdict: Verdict
    line: str
    edits: tuple[tuple[str, str], ...] = ()
    every: bool = False  # from "approve all" (taken together, as one approve-all)


@dataclass(frozen=True, slots=True)
class Plan:
    steps: tuple[Step, ...]
    unclear: tuple[Unclear, ...]


def own_lines(text: str) -> list[str]:
    """The lines the rep wrote: without quotes, attributions, quoted headers, signature or footer."""
    lines = [_MARKDOWN_ESCAPE.sub(r"\1", line) for line in text.splitlines()]
    kept: list[str] = []
    i = 0
    while i < len(lines):
        if _quote_starts(lines, i):
            break
        skip = _attribution(lines, i)
        if skip:
            i += skip
            continue
        if not lines[i].lstrip().startswith(">") and _WORDS.search(lines[i]):  # not "* * *" either
            kept.append(lines[i])
        i += 1
    return kept


def _quote_starts(lines: Sequence[str], i: int) -> bool:
    """Whether everything from line `i` on is quoted mail, a signature or a client's footer."""
    line = lines[i].strip()
    if line == _SIGNATURE or _QUOTE_ENDS.match(line):
        return True
    if not _HEADER_FROM.match(line):
        return False
    if _HEADER_INLINE.search(line):  # Outlook's header block flattened onto one line
        return True
    return any(_HEADER_NEXT.match(nxt.strip()) for nxt in lines[i + 1 : i + 5])


def _attribution(lines: Sequence[str], i: int) -> int:
    """How many lines from `i` make a quote's attribution ("On ... wrote:"), else 0."""
    if len(lines[i]) > _MAX_LINE:
        return 0
    if _WROTE.search(lines[i]):
        return 1
    if not _ATTRIBUTION_START.match(lines[i].strip()):
        return 0
    for count in range(2, _ATTRIBUTION_LINES + 1):
        part = lines[i : i + count]
        if len(part) < count or len(part[-1]) > _MAX_LINE:
            return 0
        if _WROTE.search(" ".join(line.strip() for line in part)):
            return count
    return 0


def parse_reply(text: str) -> Reply:
    """The commands in a reply's text, and every other line of the rep's own text with why."""
    commands: list[Command] = []
    unclear: list[Unclear] = []
    for raw in own_lines(text):
        for part in raw.split(";"):
            line = part.strip()
            if not line:
                continue
            found = parse_command(line)
            if isinstance(found, Command):
                commands.append(found)
            else:
                unclear.append(found)
    return Reply(tuple(commands), tuple(unclear))


def parse_command(line: str) -> Command | Unclear:
    """One command (see the module docstring), or why `line` is not one."""
    found = _COMMAND.match(line) if len(line) <= _MAX_LINE else None
    if found is None:
        return Unclear(line, "not a command")
    verb, rest = found.group(1).lower(), found.group(2).strip()
    if verb in _EDIT:
        return _edit(line, rest)
    verdict: Verdict | None = "approve" if verb in _APPROVE else "reject" if verb in _REJECT else None
    if verdict is None or (verb != verdict and not _NUMBERISH.search(rest)):  # "yes, thanks", "no idea"
        return Unclear(line, "not a command")
    return _numbers(line, verdict, rest)


def _numbers(line: str, verdict: Verdict, rest: str) -> Command | Unclear:
    rest = rest.rstrip(".!").strip()
    if rest.lower() == "all":
        return Command(line, verdict, every=True)
    numbers: list[int] = []
    for token in _SEPARATORS.split(_DASHES.sub("-", rest)):
        if not token or token.lower() in _FILLER:
            continue
        if span := _RANGE.fullmatch(token):
            low, high = int(span.group(1)), int(span.group(2))
            if not 0 <= high - low < _MAX_RANGE:
                return Unclear(line, f"{token} is not a range of proposal numbers")
            numbers.extend(range(low, high + 1))
        elif single := _NUMBER.fullmatch(token):
            numbers.append(int(single.group(1)))
        else:
            return Unclear(line, f"{token!r} is not a proposal number")
    if not numbers:
        return Unclear(line, f"which proposals? name them by number, e.g. {verdict} 1 3")
    return Command(line, verdict, tuple(dict.fromkeys(numbers)))


def _edit(line: str, rest: str) -> Command | Unclear:
    usage = "edit one proposal with field=value pairs, e.g. edit 4 amount=50000 stage=proposal"
    try:
        tokens = shlex.split(_EQUALS.sub("=", rest))
    except ValueError:
        return Unclear(line, f"unbalanced quotes; {usage}")
    number = _NUMBER.fullmatch(tokens[0]) if tokens else None
    pairs = [_FIELD.match(token) for token in tokens[1:]]
    if number is None or not pairs or not all(pairs):
        return Unclear(line, usage)
    edits = {pair.group(1).lower(): pair.group(2).strip() for pair in pairs if pair}
    return Command(line, "approve", (int(number.group(1)),), edits=tuple(edits.items()))


def plan(reply: Reply, items: Iterable[Mapping[str, Any]]) -> Plan:
    """Map the reply's numbers to stable keys through the digest's items ({"n", "key"}).

    Numbered commands come first, in order (a proposal named again with the same verdict is taken
    once, with another verdict it is reported); "all" then takes every proposal not named."""
    keys = _numbered(items)
    chosen: dict[str, Step] = {}
    unclear = list(reply.unclear)
    for command in (c for c in reply.commands if not c.every):
        for n in command.numbers:
            key = keys.get(n)
            if key is None:
                unclear.append(Unclear(command.line, _no_such(n, keys)))
                continue
            step = Step(n, key, command.verdict, command.line, command.edits)
            earlier = chosen.setdefault(key, step)
            if (earlier.verdict, earlier.edits) != (step.verdict, step.edits):
                unclear.append(
                    Unclear(command.line, f"{n} is already {_past(earlier)} earlier in this reply")
                )
    every = [c for c in reply.commands if c.every]
    unclear.extend(
        Unclear(c.line, f'this reply already says "{every[0].line}"')
        for c in every[1:]
        if c.verdict != every[0].verdict
    )
    if every:
        for n, key in sorted(keys.items()):
            chosen.setdefault(key, Step(n, key, every[0].verdict, every[0].line, every=True))
    return Plan(tuple(chosen.values()), tuple(unclear))


def _numbered(items: Iterable[Mapping[str, Any]]) -> dict[int, str]:
    found: dict[int, str] = {}
    for item in items:
        n, key = item.get("n"), item.get("key")
        if isinstance(n, int) and isinstance(key, str) and key:
            found[n] = key
    return found


def _no_such(n: int, keys: Mapping[int, str]) -> str:
    if not keys:
        return f"there is no proposal {n}: that digest listed none"
    return f"there is no proposal {n} in that digest (it lists {min(keys)}-{max(keys)})"


def _past(step: Step) -> str:
    if step.edits:
        return "edited"
    return "approved" if step.verdict == "approve" else "rejected"
