"""The manager digest: each team lead's view of their reps' pipeline, including what nobody typed in.

For a lead it shows every rep whose `reps.lead` names them: open deals and unconfirmed new-deal
proposals; the late-entry table (days between the first email evidence of a deal and its entry in the
CRM, per rep); the win ratio as the CRM has it and with the losses the mail shows (open proposals to move a
deal to closed_lost); and proposals nobody acted on for `stale_after_days`. A departed rep's
(`active = false`) open proposals are the lead's to decide, so they are listed too.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import TYPE_CHECKING, Protocol

from sqlalchemy import select

from mailsync.approval.money import locale_of, money
from mailsync.approval.render import TEMPLATES
from mailsync.mail.display import safe_line
from storage import models as m

if TYPE_CHECKING:
    from datetime import datetime

    from sqlalchemy.orm import Session

    from mailsync.approval.links import Action

LOSS = "closed_lost"


@dataclass(frozen=True, slots=True)
class DealLine:
    name: str
    stage: str
    amount: str  # "" when unknown
    confirmed: bool  # False: an open proposal, not yet in the CRM


@dataclass(frozen=True, slots=True)
class ProposalLine:
    key: str
    summary: str
    age_days: int
    approve_url: str = ""  # a departed rep's proposal: the lead decides it from the digest
    reject_url: str = ""


@dataclass(slots=True)
class RepReport:
    email: str
    name: str
    active: bool
    deals: list[DealLine] = field(default_factory=list)
    late_days: list[int] = field(default_factory=list)  # per deal: CRM entry minus first evidence
    won: int = 0
    lost: int = 0
    detected_losses: int = 0  # open proposals to close a deal as lost
    stale: list[ProposalLine] = field(default_factory=list)

    @property
    def median_late_days(self) -> float | None:
        return statistics.median(self.late_days) if self.late_days else None

    @property
    def win_ratio(self) -> float | None:
        return self.won / (self.won + self.lost) if self.won + self.lost else None

    @property
    def honest_win_ratio(self) -> float | None:
        lost = self.lost + self.detected_losses
        return self.won / (self.won + lost) if self.won + lost else None


@dataclass(frozen=True, slots=True)
class ManagerReport:
    lead: str
    reps: tuple[RepReport, ...]
    departed_proposals: tuple[tuple[str, ProposalLine], ...]  # (departed rep, proposal)


def leads(session: Session) -> list[str]:
    """Every email named as some rep's lead."""
    return sorted({lead for lead in session.scalars(select(m.Rep.lead)) if lead})


def manager_report(
    session: Session, lead: str, *, now: datetime, stale_after_days: int, locale: str | None = None
) -> ManagerReport:
    """The report for one lead at `now` (naive UTC, as the database keeps time), money in `locale`."""
    place = locale_of(locale)
    team = list(session.scalars(select(m.Rep).where(m.Rep.lead == lead).order_by(m.Rep.email)))
    emails = [r.email for r in team]
    reports = {r.email: RepReport(r.email, r.name, r.active) for r in team}
    for opp in session.scalars(select(m.Opportunity).where(m.Opportunity.owner_rep.in_(emails))):
        report = reports[opp.owner_rep or ""]
        if opp.outcome == "won":
            report.won += 1
        elif opp.outcome == "lost":
            report.lost += 1
        else:
            report.deals.append(
                DealLine(opp.name, opp.stage, money(opp.amount, opp.currency, place) or "", confirmed=True)
            )
        if opp.first_seen_at and opp.created_at:
            report.late_days.append(max(0, (opp.created_at - opp.first_seen_at).days))
    cutoff = now - timedelta(days=stale_after_days)
    departed: list[tuple[str, ProposalLine]] = []
    for row in session.scalars(
        select(m.Suggestion)
        .where(m.Suggestion.status == "open", m.Suggestion.owner_rep.in_(emails))
        .order_by(m.Suggestion.created_at)
    ):
        report = reports[row.owner_rep or ""]
        line = ProposalLine(row.key, safe_line(row.summary), (now - row.created_at).days)
        if not report.active:
            departed.append((report.email, line))
        elif row.created_at <= cutoff:
            report.stale.append(line)
        if row.kind == "new_opportunity":
            payload = row.payload
            amount = money(payload.get("amount"), _text(payload.get("currency")), place) or ""
            report.deals.append(
                DealLine(
                    safe_line(str(payload.get("name") or row.summary)), "proposed", amount, confirmed=False
                )
            )
        elif row.kind == "stage_change" and row.payload.get("to_stage") == LOSS:
            report.detected_losses += 1
    return ManagerReport(lead, tuple(reports.values()), tuple(departed))


class Signer(Protocol):
    def url(
        self, action: Action, rep: str, key: str | None = None, digest_token: str | None = None
    ) -> str: ...


def with_links(report: ManagerReport, links: Signer, token: str) -> ManagerReport:
    """The report with Approve/Reject links, signed for the lead, on the departed reps' proposals."""
    departed = tuple(
        (rep, replace(line, approve_url=links.url("approve", report.lead, line.key, token),
                      reject_url=links.url("reject", report.lead, line.key, token)))
        for rep, line in report.departed_proposals
    )  # fmt: skip
    return replace(report, departed_proposals=departed)


def render_manager_digest(report: ManagerReport, *, now: datetime) -> tuple[str, str]:
    """(HTML, plain text) of one lead's report; everything from mail or the CRM is escaped/safe text."""
    context = {"report": report, "generated": now.strftime("%Y-%m-%d %H:%M UTC"), "pct": _pct}
    return TEMPLATES.get_template("manager.html.j2").render(context), TEMPLATES.get_template(
        "manager.txt.j2"
    ).render(context)


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0%}"


def _text(value: object) -> str | None:
    return str(value) if value else None
