"""The pages behind digest links: a GET shows what the link would do and changes nothing; the POST from
that page (CSRF-checked) does it, once.

    approve | reject | edit   one proposal: GET asks for confirmation (edit: a form), POST decides
    approve_all               every open proposal of one digest: GET lists them, one POST approves them all
    unsubscribe               RFC 8058: a POST with `List-Unsubscribe=One-Click` pauses the rep's digest;
                              GET shows a button and pauses nothing
    list                      the rep's open proposals, each with fresh links to its confirmation page

A mail scanner that follows every link only GETs, so it approves nothing. A refusal is a page with a
4xx status and a `link_refused` warning naming the reason, never the token: forged, expired, reused,
not_yours, unknown (the proposal or digest no longer exists, e.g. after a rebuild), decided (saying by
whom and when), bad_csrf, bad_request.

Single use: a POST claims the link's nonce (a used_link row; its primary key makes one of two racing
POSTs the winner) before deciding, and gives it back when the decision is refused (decided meanwhile,
a bad edit), so clicking again says why once more instead of "already used".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn

import structlog
from flask import Response, make_response, render_template, request
from sqlalchemy.exc import IntegrityError

from config.errors import DecisionError, StorageError
from mailsync.approval.decisions import DecisionRequest, decide, decide_all
from mailsync.approval.links import KEYED, PATH
from mailsync.approval.reps import pause_rep
from mailsync.service import link_views
from storage import models as m

if TYPE_CHECKING:
    from datetime import datetime

    from flask import Flask

    from mailsync.approval.links import LinkClaim, LinkSigner
    from mailsync.service.link_views import ProposalView
    from storage.eventlog import EventLog
    from storage.repo import Repo

log = structlog.get_logger()

# reason -> (HTTP status, page title)
REFUSALS: dict[str, tuple[int, str]] = {
    "forged": (403, "This link is not valid"),
    "expired": (410, "This link has expired"),
    "reused": (409, "This link was already used"),
    "not_yours": (403, "This is not yours to decide"),
    "unknown": (404, "This no longer exists"),
    "decided": (409, "Already decided"),
    "bad_edit": (422, "That change cannot be made"),
    "bad_csrf": (400, "This form could not be checked"),
    "bad_request": (400, "Nothing was done"),
}
PAGE_HEADERS = {
    # No scripts, no images, no framing; forms post back here only. The token is in the URL: no Referer.
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; "
        "base-uri 'none'"
    ),
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}
ONE_CLICK = ("List-Unsubscribe", "One-Click")  # RFC 8058's POST body


class Refused(Exception):  # noqa: N818 - named for what the rep sees
    """A link page refused: rendered as a page with REFUSALS[reason]'s status and title."""

    def __init__(self, reason: str, message: str, fix: str | None = None, action: str | None = None) -> None:
        super().__init__(message)
        self.reason, self.fix, self.action = reason, fix, action

    @classmethod
    def of(cls, exc: DecisionError, action: str | None) -> Refused:
        """The refusal for a DecisionError, in its words."""
        return cls(exc.reason, str(exc), exc.fix, action)


@dataclass(frozen=True, slots=True)
class LinkPages:
    """The link pages, given what they need: the database, the event log, the link signer, and the
    locale of reps without one of their own ([digest] locale)."""

    repo: Repo
    events: EventLog
    signer: LinkSigner
    locale: str = "en_US"

    def register(self, app: Flask) -> None:
        """Serve the pages at /a/<token> of `app`."""
        app.add_url_rule(
            f"{PATH}<token>", "link", self.page, methods=["GET", "POST"], provide_automatic_options=False
        )
        app.register_error_handler(Refused, _refused)
        app.register_error_handler(StorageError, _unavailable)

    def page(self, token: str) -> Response:
        """The page for one link: what its action shows (GET) or does (POST)."""
        try:
            claim = self.signer.verify(token)
        except DecisionError as exc:
            raise Refused.of(exc, None) from exc
        post = request.method == "POST"
        if claim.action in KEYED:
            return self._decide(claim) if post else self._confirm(claim)
        if claim.action == "approve_all":
            return self._approve_all(claim) if post else self._confirm_all(claim)
        if claim.action == "unsubscribe":
            return self._pause(claim) if post else self._confirm_pause()
        if post:  # the list only shows
            return _page("message.html.j2", 405, title="Nothing to do", lines=["This page only lists."])
        return self._list(claim)

    # One proposal: approve, reject, edit.

    def _confirm(self, claim: LinkClaim, error: str = "", values: dict[str, str] | None = None) -> Response:
        self._unused(claim)
        view = self._open(claim)
        if not error:  # a trial run, written nowhere: refuse now what the POST would (e.g. not_yours)
            try:
                decide(self.repo, self.events, self._request(claim, {}), dry_run=True)
            except DecisionError as exc:
                raise Refused.of(exc, claim.action) from exc
        title = {"approve": "Approve this?", "reject": "Reject this?", "edit": "Change, then approve"}
        return _page(
            "proposal.html.j2",
            422 if error else 200,
            title=title[claim.action],
            p=view,
            action=claim.action,
            csrf=self.signer.form_token(claim),
            stages=link_views.STAGES,
            error=error,
            values=values or {},
        )

    def _decide(self, claim: LinkClaim) -> Response:
        self._check_form(claim)
        self._unused(claim)  # "already used" before "already decided": the rep's own click did it
        view = self._open(claim)
        edits = _edits(view) if claim.action == "edit" else {}
        self._use(claim)
        try:
            result = decide(self.repo, self.events, self._request(claim, edits))
        except DecisionError as exc:
            self._release(claim)
            if exc.reason == "bad_edit":
                _warn(exc.reason, claim.action)
                return self._confirm(claim, error=f"{exc} {exc.fix or ''}".strip(), values=edits)
            raise (
                self._decided(claim) if exc.reason == "decided" else Refused.of(exc, claim.action)
            ) from exc
        log.info("link_decided", action=claim.action, verdict=result.verdict, suggestion=result.suggestion_id)
        return _page("message.html.j2", title="Done", style="done", done=[result.summary])

    @staticmethod
    def _request(claim: LinkClaim, edits: dict[str, str]) -> DecisionRequest:
        assert claim.key is not None  # noqa: S101 - KEYED actions always carry one (links.py)
        return DecisionRequest(
            key=claim.key,
            verdict="reject" if claim.action == "reject" else "approve",
            who=claim.rep,
            how="link",
            edits=edits,
            digest_token=claim.digest_token,
        )

    def _open(self, claim: LinkClaim) -> ProposalView:
        """The link's proposal while it is open; refused when it is gone or already decided."""
        assert claim.key is not None  # noqa: S101 - KEYED actions always carry one (links.py)
        with self.repo.session() as session:
            locale = link_views.rep_locale(session, claim.rep, self.locale)
            view = link_views.proposal(session, claim.key, locale)
        if view is None:
            raise Refused(
                "unknown",
                "This proposal no longer exists: it may have been withdrawn, or the database was rebuilt.",
                "look at your latest digest for what is open now",
                claim.action,
            )
        if view.status == "withdrawn":
            raise Refused(
                "unknown",
                "This proposal was withdrawn: later mail showed it was not needed.",
                "look at your latest digest for what is open now",
                claim.action,
            )
        if view.status != "open":
            raise self._decided(claim)
        return view

    # Every open proposal of one digest.

    def _digest_open(self, claim: LinkClaim) -> list[ProposalView]:
        assert claim.digest_token is not None  # noqa: S101 - approve_all links always carry one
        with self.repo.session() as session:
            found = link_views.digest_keys(session, claim.digest_token)
            if found is None:
                raise Refused(
                    "unknown", "This digest is no longer known.", "use your latest digest", claim.action
                )
            rep, keys = found
            if rep.lower() != claim.rep.lower():
                raise Refused("not_yours", "This digest was sent to someone else.", None, claim.action)
            locale = link_views.rep_locale(session, claim.rep, self.locale)
            return link_views.open_proposals(session, locale, keys=keys)

    def _confirm_all(self, claim: LinkClaim) -> Response:
        self._unused(claim)
        views = self._digest_open(claim)
        if not views:
            return _page("message.html.j2", title="Nothing left to approve", lines=[_ALL_DECIDED])
        items = [{"proposal": view, "links": ()} for view in views]
        return _page(
            "proposals.html.j2",
            title=f"Approve all {len(views)}?",
            items=items,
            csrf=self.signer.form_token(claim),
        )

    def _approve_all(self, claim: LinkClaim) -> Response:
        self._check_form(claim)
        self._unused(claim)
        keys = [view.key for view in self._digest_open(claim)]
        self._use(claim)
        results = decide_all(
            self.repo, self.events, keys, who=claim.rep, how="link", digest_token=claim.digest_token
        )
        done = [r.summary for r in results if not isinstance(r, DecisionError)]
        problems = [f"{r} {r.fix or ''}".strip() for r in results if isinstance(r, DecisionError)]
        log.info("link_decided", action=claim.action, approved=len(done), refused=len(problems))
        lines = [] if keys else [_ALL_DECIDED]
        return _page("message.html.j2", title="Done", style="done", lines=lines, done=done, problems=problems)

    # Pause (one-click unsubscribe) and the full list.

    def _confirm_pause(self) -> Response:
        return _page(
            "message.html.j2",
            title="Pause your digest?",
            lines=["You will get no digest until you resume it (ask your CRM admin: mailsync rep resume)."],
            form={"fields": [ONE_CLICK], "label": "Pause my digest", "style": "reject"},
        )

    def _pause(self, claim: LinkClaim) -> Response:
        if request.form.get(ONE_CLICK[0]) != ONE_CLICK[1]:
            raise Refused(
                "bad_request",
                "An unsubscribe request must say List-Unsubscribe=One-Click.",
                "use the button on this link's page",
                claim.action,
            )
        try:
            changed = pause_rep(self.repo, self.events, claim.rep, how="link")
        except DecisionError as exc:
            raise Refused.of(exc, claim.action) from exc
        line = "Your digest is paused." if changed else "Your digest was already paused."
        return _page(
            "message.html.j2",
            title="Digest paused",
            style="done",
            lines=[line, "To get it again, ask your CRM admin to run: mailsync rep resume."],
        )

    def _list(self, claim: LinkClaim) -> Response:
        with self.repo.session() as session:
            locale = link_views.rep_locale(session, claim.rep, self.locale)
            views = link_views.open_proposals(session, locale, rep=claim.rep)
        items = [{"proposal": view, "links": self._links(claim, view)} for view in views]
        intro = f"{len(views)} open proposals." if views else "Nothing is waiting for you."
        return _page("proposals.html.j2", title="Your open proposals", intro=intro, items=items)

    def _links(self, claim: LinkClaim, view: ProposalView) -> list[tuple[str, str, str]]:
        """Fresh single-use links to each action's confirmation page (for the list's owner only)."""
        url = self.signer.url
        rep, digest = claim.rep, claim.digest_token
        return [
            ("Approve", "approve", url("approve", rep, view.key, digest)),
            ("Reject", "reject", url("reject", rep, view.key, digest)),
            ("Edit", "secondary", url("edit", rep, view.key, digest)),
        ]

    # Single use and the CSRF check.

    def _unused(self, claim: LinkClaim) -> None:
        """Refuse a link whose nonce was used (a GET, too: no form that can only fail)."""
        with self.repo.session() as session:
            used = session.get(m.UsedLink, claim.nonce)
            if used is not None:
                _reused(claim, used.used_at)

    def _use(self, claim: LinkClaim) -> None:
        """Claim the link's nonce for this POST; refused when it was used (or is being used) already."""
        self._unused(claim)
        try:
            with self.repo.session() as session:
                session.add(m.UsedLink(nonce=claim.nonce, rep=claim.rep))
        except IntegrityError as exc:  # another POST of the same link got there first
            raise Refused("reused", "This link was already used.", None, claim.action) from exc

    def _release(self, claim: LinkClaim) -> None:
        """Give the nonce back: the POST that claimed it changed nothing."""
        with self.repo.session() as session:
            used = session.get(m.UsedLink, claim.nonce)
            if used is not None:
                session.delete(used)

    def _check_form(self, claim: LinkClaim) -> None:
        if not self.signer.form_token_ok(claim, request.form.get("csrf", "")):
            raise Refused(
                "bad_csrf",
                "This form did not come from its confirmation page, so nothing was done.",
                "open the link again and confirm on the page it shows",
                claim.action,
            )

    def _decided(self, claim: LinkClaim) -> Refused:
        """The refusal of a link to a proposal decided already (by reply, CLI or another link): by whom,
        how and when."""
        assert claim.key is not None  # noqa: S101 - KEYED actions always carry one (links.py)
        with self.repo.session() as session:
            note = link_views.decided_note(session, claim.key)
        return Refused("decided", f"This proposal was already decided. {note}".strip(), None, claim.action)


_ALL_DECIDED = "Everything in this digest was already decided."


def _edits(view: ProposalView) -> dict[str, str]:
    """The form's fields that differ from what was proposed (an empty field keeps the proposal)."""
    edits = {}
    for field in view.fields:
        value = request.form.get(field.name, "").strip()
        if value and value != field.value:
            edits[field.name] = value
    return edits


def _reused(claim: LinkClaim, used_at: datetime) -> NoReturn:
    raise Refused(
        "reused",
        f"This link was already used on {used_at:%Y-%m-%d at %H:%M} UTC: each link works once.",
        "look at your latest digest, or its full list, for what is still open",
        claim.action,
    )


def _page(template: str, status: int = 200, **context: Any) -> Response:
    defaults: dict[str, Any] = {"lines": [], "done": [], "problems": [], "fix": None, "form": None}
    defaults |= {"style": "", "intro": "", "csrf": "", "error": "", "values": {}}
    response = make_response(render_template(template, **(defaults | context)), status)
    response.headers.update(PAGE_HEADERS)
    return response


def _warn(reason: str, action: str | None) -> None:
    log.warning("link_refused", reason=reason, action=action)


def _refused(exc: Refused) -> Response:
    _warn(exc.reason, exc.action)
    status, title = REFUSALS[exc.reason]
    return _page("message.html.j2", status, title=title, style="refused", lines=[str(exc)], fix=exc.fix)


def _unavailable(exc: StorageError) -> Response:
    log.error("link_page_failed", error=str(exc), fix=exc.fix)
    return _page(
        "message.html.j2",
        503,
        title="Try again in a minute",
        style="refused",
        lines=["The CRM database cannot be reached just now. Nothing was changed."],
    )
