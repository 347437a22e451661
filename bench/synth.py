"""Deterministic synthetic CRM and mail for the benchmarks: names, companies, deal talk in EN/DE/ES."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from nlp.match import free_mail_domains
from storage.records import AccountRef, Address, ContactRef, CrmSnapshot, OpportunityRef

INTERNAL_DOMAIN = "northwind.example"
REPS = tuple(f"{n}@{INTERNAL_DOMAIN}" for n in ("dana", "sam", "lee", "ines", "jonas", "maria"))
FREE_MAIL = ("gmail.com", "yahoo.com", "outlook.com", "gmx.de", "web.de", "hotmail.es")

FIRST = [
    "Anna",
    "Ben",
    "Carla",
    "David",
    "Elena",
    "Felix",
    "Greta",
    "Hugo",
    "Irene",
    "Jonas",
    "Klara",
    "Lukas",
    "Marta",
    "Nico",
    "Olga",
    "Pablo",
    "Queenie",
    "Rafael",
    "Sofia",
    "Tom",
    "Ute",
    "Victor",
    "Wanda",
    "Xavier",
    "Yara",
    "Zoe",
    "Rachel",
    "Jan",
    "Lucia",
    "Jorge",
    "Fatima",
    "Omar",
    "Mei",
    "Kenji",
    "Priya",
    "Arjun",
    "Chloe",
    "Liam",
    "Emma",
    "Noah",
    "Mia",
    "Leon",
    "Hannah",
    "Paul",
    "Lena",
    "Diego",
    "Carmen",
    "Alba",
    "Sergio",
]
LAST = [
    "Kim",
    "Becker",
    "Müller",
    "Schmidt",
    "Garcia",
    "Fernandez",
    "Lopez",
    "Martin",
    "Rossi",
    "Novak",
    "Kowalski",
    "Nielsen",
    "Jensen",
    "Okafor",
    "Whitfield",
    "Tanaka",
    "Singh",
    "Patel",
    "Brown",
    "Smith",
    "Weber",
    "Wagner",
    "Hoffmann",
    "Schulz",
    "Ruiz",
    "Moreno",
    "Diaz",
    "Romero",
    "Navarro",
    "Torres",
    "Dubois",
    "Laurent",
    "Fischer",
    "Meyer",
    "Wolf",
    "Keller",
    "Huber",
    "Costa",
    "Silva",
    "Sato",
    "Chen",
    "Park",
]
SYLLABLES = [
    "ac",
    "me",
    "har",
    "bor",
    "cold",
    "chain",
    "nor",
    "th",
    "ter",
    "ra",
    "blue",
    "peak",
    "fleet",
    "sense",
    "vel",
    "ox",
    "in",
    "dus",
    "tri",
    "al",
    "gran",
    "ite",
    "sol",
    "ar",
    "mar",
    "ket",
    "lo",
    "gis",
    "tic",
    "nova",
    "terra",
    "alp",
    "ine",
    "berg",
    "stadt",
    "rio",
    "sur",
    "cam",
    "po",
    "luna",
    "verde",
]
INDUSTRY = ("Logistics", "GmbH", "S.L.", "Inc.", "Foods", "Energy", "Systems", "Freight", "Retail", "AG")
PRODUCTS = ("FleetSense", "ColdTrack", "RouteIQ", "DockView", "Telematics", "Sensor kit", "Analytics")
OPEN_STAGES = ("qualification", "discovery", "demo", "proposal", "negotiation")

GREETINGS = {
    "en": ("Hi {n},", "Hello {n},", "Dear {n},", "Good morning {n},"),
    "de": ("Hallo {n},", "Guten Tag {n},", "Sehr geehrte Frau {n},", "Liebe {n},"),
    "es": ("Hola {n},", "Buenos días {n},", "Estimada {n},", "Buenas tardes {n},"),
}
DEAL = {
    "en": (
        "Could you send us a quote for 40 units of {p}?",
        "We would like to start a pilot of {p} next month.",
        "What is the pricing for {p} if we sign a two-year contract?",
        "Please find our purchase order for USD 52,000 attached.",
        "We have decided to go ahead with your proposal.",
        "Unfortunately we decided to go with another vendor.",
        "Can we schedule a demo of {p} for our operations team?",
        "Our budget for this project is around EUR 30,000.",
        "We signed the contract this morning, thanks for your patience.",
        "Legal is reviewing the redlines, we should be able to sign next week.",
    ),
    "de": (
        "Könnten Sie uns ein Angebot für 40 Einheiten {p} schicken?",
        "Wir möchten eine Teststellung von {p} im nächsten Monat starten.",
        "Was kostet {p} bei einem Vertrag über zwei Jahre?",
        "Anbei unsere Bestellung über 52.000 EUR.",
        "Wir haben uns für Ihr Angebot entschieden.",
        "Leider haben wir uns für einen anderen Anbieter entschieden.",
        "Können wir eine Vorführung von {p} für unser Team vereinbaren?",
        "Unser Budget liegt bei etwa 30.000 EUR.",
    ),
    "es": (
        "¿Podrían enviarnos una cotización para 40 unidades de {p}?",
        "Nos gustaría empezar un piloto de {p} el mes que viene.",
        "¿Cuál es el precio de {p} con un contrato de dos años?",
        "Adjunto nuestra orden de compra por 52.000 EUR.",
        "Hemos decidido seguir adelante con su propuesta.",
        "Lamentablemente hemos elegido otro proveedor.",
        "¿Podemos agendar una demostración de {p} para el equipo?",
    ),
}
SMALL_TALK = {
    "en": (
        "Thanks for the call yesterday.",
        "I hope you had a good weekend.",
        "Attached are the notes from our meeting.",
        "Let me know if Thursday works for you.",
        "I have copied my colleague who handles procurement.",
        "The weekly numbers are in the shared folder.",
    ),
    "de": (
        "Danke für das Gespräch gestern.",
        "Ich hoffe, Sie hatten ein schönes Wochenende.",
        "Anbei die Notizen aus unserem Termin.",
        "Passt Ihnen Donnerstag?",
    ),
    "es": (
        "Gracias por la llamada de ayer.",
        "Espero que haya tenido un buen fin de semana.",
        "Adjunto las notas de nuestra reunión.",
        "¿Le viene bien el jueves?",
    ),
}
SUBJECTS = {
    "en": (
        "Pricing for {p}",
        "{p} pilot",
        "Quote request",
        "Follow-up",
        "Next steps",
        "Contract",
        "Meeting notes",
    ),
    "de": ("Angebot {p}", "Teststellung {p}", "Rückfrage", "Vertrag", "Termin"),
    "es": ("Cotización {p}", "Piloto {p}", "Seguimiento", "Contrato", "Reunión"),
}
SIGNOFF = {"en": "Best regards,", "de": "Viele Grüße", "es": "Saludos cordiales,"}


@dataclass(frozen=True, slots=True)
class Crm:
    snapshot: CrmSnapshot
    contacts: tuple[tuple[str, ContactRef], ...]  # (email, contact)
    domains: tuple[str, ...]  # account domains, index = account id - 1


@dataclass(frozen=True, slots=True)
class Mail:
    """One synthetic message, before it becomes bytes or a Match."""

    kind: str  # known | unknown | freemail | internal
    lang: str
    sender: Address
    to: tuple[Address, ...]
    cc: tuple[Address, ...]
    subject: str
    body: str
    sent_at: datetime


def _company(rng: random.Random) -> str:
    stem = "".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 3)))
    return f"{stem.title()} {rng.choice(INDUSTRY)}"


def _person(rng: random.Random) -> str:
    return f"{rng.choice(FIRST)} {rng.choice(LAST)}"


def _local(name: str, rng: random.Random) -> str:
    first, last = name.lower().split(" ", 1)
    style = rng.random()
    if style < 0.6:
        return f"{first}.{last}"
    if style < 0.85:
        return f"{first[0]}{last}"
    return first


def build_crm(contacts: int = 50_000, accounts: int = 10_000, opportunities: int = 5_000) -> Crm:
    """A CRM snapshot built directly, from `random.Random(42)`: same input, same CRM."""
    rng = random.Random(42)  # noqa: S311 - synthetic, deterministic data
    account_refs: dict[int, AccountRef] = {}
    by_domain: dict[str, AccountRef] = {}
    domains = []
    for i in range(1, accounts + 1):
        name = _company(rng)
        ref = AccountRef(id=i, name=name)
        account_refs[i] = ref
        domain = f"{name.split()[0].lower()}-{i}.example"
        domains.append(domain)
        by_domain[domain] = ref
    by_email: dict[str, ContactRef] = {}
    pairs = []
    for i in range(1, contacts + 1):
        account_id = rng.randint(1, accounts)
        name = _person(rng)
        email = f"{_local(name, rng)}{i}@{domains[account_id - 1]}"
        contact = ContactRef(id=i, name=name, account_id=account_id, owner_rep=rng.choice(REPS))
        by_email[email] = contact
        pairs.append((email, contact))
    open_opps: dict[int, list[OpportunityRef]] = {}
    for i in range(1, opportunities + 1):
        account_id = rng.randint(1, accounts)
        product = rng.choice(PRODUCTS)
        opp = OpportunityRef(
            id=i,
            external_id=f"OPP-{i:05d}",
            account_id=account_id,
            name=f"{account_refs[account_id].name} - {product} rollout ({rng.randint(5, 200)} units)",
            stage=rng.choice(OPEN_STAGES),
            amount=Decimal(rng.randint(5, 500) * 1000),
            currency=rng.choice(("USD", "EUR")),
            owner_rep=rng.choice(REPS),
        )
        open_opps.setdefault(account_id, []).append(opp)
    snapshot = CrmSnapshot(
        contacts_by_email=by_email,
        accounts=account_refs,
        accounts_by_domain=by_domain,
        open_opportunities={k: tuple(v) for k, v in open_opps.items()},
        reps=frozenset(REPS),
        internal_domains=frozenset({INTERNAL_DOMAIN}),
        free_mail_domains=free_mail_domains(),
    )
    return Crm(snapshot=snapshot, contacts=tuple(pairs), domains=tuple(domains))


def _body(rng: random.Random, lang: str, to_name: str, from_name: str, *, long: bool = False) -> str:
    product = rng.choice(PRODUCTS)
    lines = [rng.choice(GREETINGS[lang]).format(n=to_name.split(maxsplit=1)[0]), ""]
    count = rng.randint(6, 14) if long else rng.randint(1, 3)
    sentences = [rng.choice(SMALL_TALK[lang]) for _ in range(count)]
    if rng.random() < 0.7:
        sentences.insert(rng.randint(0, len(sentences)), rng.choice(DEAL[lang]).format(p=product))
    lines.append(" ".join(sentences))
    lines += ["", SIGNOFF[lang], from_name]
    if rng.random() < 0.4:
        lines += ["", f"On Mon, 2 Mar 2026 at 10:00, {to_name} wrote:"]
        lines += [f"> {rng.choice(SMALL_TALK['en'])}" for _ in range(rng.randint(2, 8))]
    return "\n".join(lines)


def make_mail(crm: Crm, count: int, seed: int = 7, *, long: bool = False) -> list[Mail]:
    """`count` messages: 40 % known contacts, 25 % unknown people at known domains, 20 % free-mail,
    15 % internal; a rep is always on the other side."""
    rng = random.Random(seed)  # noqa: S311 - synthetic, deterministic data
    start = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
    mails = []
    for i in range(count):
        lang = rng.choices(("en", "de", "es"), weights=(6, 2, 2))[0]
        rep = Address(name=rng.choice(FIRST), email=rng.choice(REPS))
        roll = rng.random()
        if roll < 0.40:
            kind = "known"
            email, contact = rng.choice(crm.contacts)
            other = Address(name=contact.name, email=email)
        elif roll < 0.65:
            kind = "unknown"
            name = _person(rng)
            other = Address(name=name, email=f"{_local(name, rng)}@{rng.choice(crm.domains)}")
        elif roll < 0.85:
            kind = "freemail"
            name = _person(rng)
            other = Address(
                name=name, email=f"{_local(name, rng)}{rng.randint(1, 99)}@{rng.choice(FREE_MAIL)}"
            )
        else:
            kind = "internal"
            other = Address(name=rng.choice(FIRST), email=rng.choice(REPS))
        inbound = rng.random() < 0.6
        sender, recipient = (other, rep) if inbound else (rep, other)
        cc: tuple[Address, ...] = ()
        if kind != "internal" and rng.random() < 0.3:
            email, contact = rng.choice(crm.contacts)
            cc = (Address(name=contact.name, email=email.upper() if rng.random() < 0.1 else email),)
        subject = rng.choice(SUBJECTS[lang]).format(p=rng.choice(PRODUCTS))
        if rng.random() < 0.4:
            subject = f"Re: {subject}"
        mails.append(
            Mail(
                kind=kind,
                lang=lang,
                sender=sender,
                to=(recipient,),
                cc=cc,
                subject=subject,
                body=_body(rng, lang, recipient.name or "there", sender.name, long=long),
                sent_at=start + timedelta(minutes=7 * i),
            )
        )
    return mails
