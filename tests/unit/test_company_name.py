"""A new account is named as a person would name it, and one message proposes a bounded number of contacts."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from nlp.clean import signature_lines
from nlp.company import closing_lines, company_name, domain_name
from nlp.match import free_mail_domains, match_people
from nlp.propose import ThreadView, propose
from storage.records import AccountRef, Address, CrmSnapshot, ProposalKind

REP = "dana@northwind.example"
ACME = AccountRef(1, "Acme Logistics")
CRM = CrmSnapshot(
    accounts={1: ACME},
    accounts_by_domain={"acme.example": ACME},
    reps=frozenset({REP}),
    internal_domains=frozenset({"northwind.example"}),
    free_mail_domains=free_mail_domains(),
)
GRANITE_BODY = (
    "Hi Dana,\n\nWe keep losing trailers. Could you send me some rough pricing for 35 units?\n\n"
    "Thanks,\nJake\n\n-- \nJake Moreno\nOperations Manager\nGranite Peak Builders\n+1 303 555 0119\n\n"
    "On Fri, Jan 23, 2026 at 7:10 AM Dana Whitfield <dana@northwind.example> wrote:\n"
    "> Hi Jake,\n>\n> -- \n> Dana Whitfield\n> Northwind Traders\n"
)


@pytest.mark.parametrize(
    ("email", "display", "signature", "texts", "named"),
    [
        ("jane@ospreylinen.com", "Jane Doe | Osprey Linen", (), (), "Osprey Linen"),
        ("jane@ospreylinen.com", "Jane Doe (Osprey Linen)", (), (), "Osprey Linen"),
        ("jane@ospreylinen.com", "Jane Doe - Osprey Linen Ltd.", (), (), "Osprey Linen Ltd."),
        ("jane@ospreylinen.com", "Doe, Jane", (), (), None),  # a person, nothing else
        ("jane@ospreylinen.com", "Jane Doe (via LinkedIn)", (), (), None),
        (
            "jake.moreno@granitepeak.example",
            "Jake Moreno",
            ("Jake Moreno", "Operations Manager", "Granite Peak Builders", "+1 303 555 0119"),
            (),
            "Granite Peak Builders",
        ),
        (
            "j.bergmann@spedition-bergmann.example",
            "Jürgen Bergmann",
            ("Jürgen Bergmann", "Geschäftsführer", "Spedition Bergmann GmbH", "Hafenstraße 12, 28217 Bremen"),
            (),
            "Spedition Bergmann GmbH",
        ),
        # A legal form names the company even when the domain is an abbreviation.
        (
            "jo@bwu-mail.example",
            "Jo Park",
            ("Jo Park", "Brightwater Utilities Inc."),
            (),
            "Brightwater Utilities Inc.",
        ),
        (
            "ceo@ibm.example",
            "",
            ("Sam Palmer", "International Business Machines"),
            (),
            "International Business Machines",
        ),
        # Only the mail's own words spell the squashed domain: the subject says "Granite Peak".
        ("jake@granitepeak.example", "Jake", (), ("FleetSense info for Granite Peak",), "Granite Peak"),
        ("jake@granitepeak.example", "Jake", (), ("Thanks Granite Peak team",), "Granite Peak"),
        ("jane@osprey-linen.co.uk", "Jane Doe", ("Jane Doe", "Head of Purchasing"), ("Hello there",), None),
        # Free mail: the address's local part or a legal form, never the person's own name.
        (
            "luis.ortega.hauling@gmail.com",
            "Luis Ortega",
            ("Luis", "Luis Ortega", "Ortega Hauling", "(713) 555-0147"),
            (),
            "Ortega Hauling",
        ),
        ("maria78@gmail.com", "Maria Ortega", ("Maria", "Bookkeeping"), ("At Gmail we",), None),
    ],
)
def test_the_company_is_what_the_mail_calls_it(email, display, signature, texts, named):
    free = email.endswith("@gmail.com")
    assert (
        company_name(email, display_name=display, signature=signature, texts=texts, free_mail=free) == named
    )


@pytest.mark.parametrize(
    ("domain", "name"),
    [
        ("osprey-linen.co.uk", "Osprey Linen"),
        ("mail.osprey-linen.co.uk", "Osprey Linen"),
        ("bwu-mail.example", "Bwu Mail"),
        ("ospreylinen.com", "ospreylinen.com"),  # no word breaks to go by: the domain, not "Ospreylinen"
        ("sales.ospreylinen.com.au", "ospreylinen.com.au"),
    ],
)
def test_without_a_name_in_the_mail_the_domain_stands_in(domain, name):
    assert domain_name(domain) == name


def test_signature_lines_are_the_senders_own_not_a_quoted_one():
    assert signature_lines(GRANITE_BODY) == (
        "Jake Moreno",
        "Operations Manager",
        "Granite Peak Builders",
        "+1 303 555 0119",
    )
    top_posted = (
        "Sounds good.\n\n-----Original Message-----\nFrom: Dana\n-- \nDana Whitfield\nNorthwind Traders"
    )
    assert signature_lines(top_posted) == ()
    assert signature_lines("No signature here.\n> -- \n> Someone Else") == ()


def test_a_closing_without_a_delimiter_is_a_signature_too():
    text = "Please send the quote.\n\nBest regards,\nJane Doe\nOsprey Linen Ltd"
    assert closing_lines(text) == ("Jane Doe", "Osprey Linen Ltd")
    assert closing_lines("Best regards are not what this is about. More text.") == ()


def test_a_new_opportunity_is_named_from_the_signature_not_the_squashed_domain():
    message = match_people(
        fingerprint="fp-1",
        sent_at=datetime(2026, 1, 22, tzinfo=UTC),
        subject="Trailer tracking",
        body=GRANITE_BODY,
        people=[
            ("from", Address("Jake Moreno", "jake.moreno@granitepeak.example")),
            ("to", Address("", REP)),
        ],
        automated=None,
        crm=CRM,
    )
    assert message.signature[2] == "Granite Peak Builders"
    proposals = propose(ThreadView("root@x", "Trailer tracking", None, (message,), REP), CRM)
    (opp,) = [p for p in proposals if p.kind is ProposalKind.NEW_OPPORTUNITY]
    assert opp.payload["account"] == "Granite Peak Builders"  # was "Granitepeak"
    assert opp.payload["new_account_domain"] == "granitepeak.example"
    assert opp.summary.startswith("New opportunity: Granite Peak Builders – ")


def test_one_message_to_thousands_proposes_ten_contacts_and_counts_the_rest():
    copied = [("cc", Address(f"Person {i}", f"person{i:04}@acme.example")) for i in range(5000)]
    message = match_people(
        fingerprint="fp-mailing",
        sent_at=datetime(2026, 3, 2, tzinfo=UTC),
        subject="Spring update",
        body="Hello all, here is our spring update.",
        people=[("from", Address("Ann Sender", "ann@acme.example")), ("to", Address("", REP)), *copied],
        automated=None,
        crm=CRM,
    )
    proposals = propose(ThreadView("root@x", "Spring update", None, (message,), REP), CRM)
    contacts = [p for p in proposals if p.kind is ProposalKind.NEW_CONTACT]
    assert len(contacts) == 10
    assert "new_contact:ann@acme.example" in {p.key for p in contacts}  # the sender always
    assert {p.payload["not_proposed"] for p in contacts} == {4991}  # 5,001 unknown people, 10 proposed


def test_a_small_message_proposes_everyone_and_says_nothing_of_a_cap():
    people = [("cc", Address("", f"p{i}@acme.example")) for i in range(3)]
    message = match_people(
        fingerprint="fp-small", sent_at=datetime(2026, 3, 2, tzinfo=UTC), subject="Hi", body="Hello.",
        people=[("from", Address("", "ann@acme.example")), *people], automated=None, crm=CRM,
    )  # fmt: skip
    contacts = propose(ThreadView("root@x", "Hi", None, (message,), REP), CRM)
    assert len(contacts) == 4
    assert all("not_proposed" not in p.payload for p in contacts)
