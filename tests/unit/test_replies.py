"""Reply commands: real-looking replies from the usual clients read into commands, numbers into keys."""

from __future__ import annotations

import textwrap

import pytest

from config.settings import ParseLimits
from mailsync.approval.replies import Command, Step, Unclear, own_lines, parse_command, parse_reply, plan
from mailsync.mail.digest_mail import digest_token, is_digest_mail, replied_tokens
from mailsync.mail.parse import parse_message

TOKEN = "0123456789abcdef0123456789abcdef"
ITEMS = [
    {"n": 1, "key": "k-one"},
    {"n": 2, "key": "k-two"},
    {"n": 3, "key": "k-three"},
    {"n": 4, "key": "k-four"},
]

EDIT_USAGE = "edit one proposal with field=value pairs, e.g. edit 4 amount=50000 stage=proposal"

# What the quoted digest says: every line of it would be a command if it were not dropped.
DIGEST_TEXT = """\
CRM digest for Dana: 3 proposals

1. Link this conversation to Acme – rollout?
   Reply: approve 1 · reject 1
2. New contact Rachel Kim (Acme)?
   Reply: approve 2 · reject 2
3. Move Acme – rollout to proposal?
   Reply: edit 3 stage=negotiation

approve all"""


def quoted(text: str, prefix: str = "> ") -> str:
    return "\n".join(f"{prefix}{line}".rstrip() for line in text.splitlines())


def commands(text: str) -> list[tuple[str, tuple[int, ...], bool, tuple[tuple[str, str], ...]]]:
    return [(c.verdict, c.numbers, c.every, c.edits) for c in parse_reply(text).commands]


def unclear(text: str) -> list[str]:
    return [u.line for u in parse_reply(text).unclear]


# --- clients ---------------------------------------------------------------------------------------


def test_gmail_top_posted_reply_reads_only_the_reps_lines():
    text = (
        "approve 1 3\nreject 2\n\n"
        "On Mon, Nov 30, 2026 at 7:30 AM CRM digest <crm-digest@northwind.example> wrote:\n\n"
        f"{quoted(DIGEST_TEXT)}\n"
    )
    assert commands(text) == [("approve", (1, 3), False, ()), ("reject", (2,), False, ())]
    assert unclear(text) == []


def test_gmail_attribution_wrapped_over_two_lines_is_not_a_line_to_report():
    text = (
        "approve all\n\nOn Mon, Nov 30, 2026 at 7:30 AM CRM digest <\n"
        f"crm-digest@northwind.example> wrote:\n\n{quoted(DIGEST_TEXT)}\n"
    )
    assert commands(text) == [("approve", (), True, ())]
    assert unclear(text) == []


def test_outlook_desktop_cuts_at_the_header_block_and_keeps_the_greeting_as_not_understood():
    text = (
        textwrap.dedent(
            """\
        Approve 1,3
        Reject 2

        Thanks,
        Dana

        ________________________________
        From: CRM digest <crm-digest@northwind.example>
        Sent: Monday, November 30, 2026 7:30 AM
        To: Dana Smith <dana@northwind.example>
        Subject: CRM digest: 3 proposals

        """
        )
        + DIGEST_TEXT
    )  # Outlook quotes without ">"
    assert commands(text) == [("approve", (1, 3), False, ()), ("reject", (2,), False, ())]
    assert unclear(text) == ["Thanks,", "Dana"]


def test_outlook_original_message_separator_and_header_block_without_separator():
    separator = f"reject 4\n\n-----Original Message-----\nFrom: CRM digest\nSent: Mon\n\n{DIGEST_TEXT}"
    assert commands(separator) == [("reject", (4,), False, ())]
    german = f"approve 2\n\nVon: CRM digest <crm-digest@northwind.example>\nGesendet: Montag\n\n{DIGEST_TEXT}"
    assert commands(german) == [("approve", (2,), False, ())]
    flattened = f"approve 2\nFrom: CRM digest <crm@x.example> Sent: Monday 07:30\n{DIGEST_TEXT}"
    assert commands(flattened) == [("approve", (2,), False, ())]


def test_apple_mail_on_iphone_with_its_footer():
    text = (
        "Reject 2\n\nSent from my iPhone\n\n"
        "> On 30 Nov 2026, at 07:30, CRM digest <crm-digest@northwind.example> wrote:\n>\n"
        f"{quoted(DIGEST_TEXT)}\n"
    )
    assert commands(text) == [("reject", (2,), False, ())]
    assert unclear(text) == []


def test_apple_mail_attribution_starting_with_a_date():
    text = f"ok 3\n\nOn 30 Nov 2026, at 07:30, CRM digest <crm-digest@northwind.example> wrote:\n\n{quoted(DIGEST_TEXT)}"
    assert commands(text) == [("approve", (3,), False, ())]
    assert unclear(text) == []


def test_bottom_posted_interleaved_reply_keeps_commands_under_each_quote_and_drops_the_signature():
    text = textwrap.dedent(
        """\
        On 30/11/2026 07:30, CRM digest wrote:
        > 1. Link this conversation to Acme – rollout?
        approve 1
        > 2. New contact Rachel Kim (Acme)?
        reject 2

        --\x20
        Dana Smith | Northwind | approve everything
        """
    )
    assert commands(text) == [("approve", (1,), False, ()), ("reject", (2,), False, ())]
    assert unclear(text) == []


def test_german_gmail_am_schrieb_attribution_and_german_iphone_footer():
    text = (
        "approve 1\nedit 3 amount=12500 stage=proposal\n\nVon meinem iPhone gesendet\n\n"
        "Am Mo., 30. Nov. 2026 um 07:30 Uhr schrieb CRM digest <\n"
        f"crm-digest@northwind.example>:\n\n{quoted(DIGEST_TEXT)}\n"
    )
    assert commands(text) == [
        ("approve", (1,), False, ()),
        ("approve", (3,), False, (("amount", "12500"), ("stage", "proposal"))),
    ]
    without_footer = (
        "reject 4\n\nAm 30.11.2026 um 07:30 schrieb CRM digest <crm-digest@northwind.example>:\n\n"
        f"{quoted(DIGEST_TEXT)}\n"
    )
    assert commands(without_footer) == [("reject", (4,), False, ())]
    assert unclear(without_footer) == []


def test_forwarded_message_is_not_read():
    text = f"approve 1\n\n---------- Forwarded message ---------\nFrom: CRM digest\n\n{DIGEST_TEXT}"
    assert commands(text) == [("approve", (1,), False, ())]


def html_mail(html: str) -> bytes:
    return (
        "From: Dana Smith <dana@northwind.example>\nTo: crm-digest@northwind.example\n"
        f"Subject: Re: CRM digest\nMessage-ID: <r1@northwind.example>\n"
        f"In-Reply-To: <digest.{TOKEN}@northwind.example>\n"
        f"MIME-Version: 1.0\nContent-Type: text/html; charset=utf-8\n\n{html}\n"
    ).encode()


def parsed_body(raw: bytes) -> str:
    return parse_message(raw, fingerprint="f" * 64, archive_key="a" * 64, limits=ParseLimits()).body_text


def test_html_only_gmail_reply_converted_to_text():
    html = (
        '<div dir="ltr">approve 1 3<div>- reject 2</div><div>edit 4 close_date=2026-12-01 stage=closed_won</div>'
        '</div><br><div class="gmail_quote"><div dir="ltr" class="gmail_attr">On Mon, Nov 30, 2026 at 7:30 AM'
        ' CRM digest &lt;<a href="mailto:crm-digest@northwind.example">crm-digest@northwind.example</a>&gt;'
        ' wrote:<br></div><blockquote class="gmail_quote"><p>1. Link this conversation to Acme?</p>'
        "<p>Reply approve 1 or reject 1</p><p>approve all</p></blockquote></div>"
    )
    body = parsed_body(html_mail(html))
    assert commands(body) == [
        ("approve", (1, 3), False, ()),
        ("reject", (2,), False, ()),
        ("approve", (4,), False, (("close_date", "2026-12-01"), ("stage", "closed_won"))),
    ]
    assert unclear(body) == []


def test_html_only_outlook_reply_converted_to_text():
    html = (
        "<html><body><div>Approve 1</div><div>edit 2 amount=50000</div><div>Cheers</div><div><br></div>"
        '<hr style="display:inline-block;width:98%"><div id="divRplyFwdMsg" dir="ltr"><font face="Calibri">'
        "<b>From:</b> CRM digest &lt;crm-digest@northwind.example&gt;<br><b>Sent:</b> Monday, November 30,"
        " 2026 7:30 AM<br><b>To:</b> Dana &lt;dana@northwind.example&gt;<br><b>Subject:</b> CRM digest"
        "</font></div><div><p>1. Link this conversation to Acme?</p><p>approve all</p></div></body></html>"
    )
    body = parsed_body(html_mail(html))
    assert commands(body) == [("approve", (1,), False, ()), ("approve", (2,), False, (("amount", "50000"),))]
    assert unclear(body) == ["Cheers"]  # the rule above the header block is decoration, not a line


def test_signature_after_dash_dash_space_even_when_html2text_escaped_it():
    assert own_lines("approve 1\n\\-- \nDana\napprove 2") == ["approve 1"]
    assert own_lines("approve 1\n-- \nDana\napprove 2") == ["approve 1"]


# --- grammar ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "verdict", "numbers"),
    [
        ("approve 1 3", "approve", (1, 3)),
        ("approve 1,3", "approve", (1, 3)),
        ("Approve 1, 3.", "approve", (1, 3)),
        ("APPROVE: #1 and #3", "approve", (1, 3)),
        ("approve 2-4", "approve", (2, 3, 4)),
        ("approve 2 – 4", "approve", (2, 3, 4)),
        ("approve 3 1 3", "approve", (3, 1)),
        ("- approve 1", "approve", (1,)),
        ("ok 3", "approve", (3,)),
        ("Okay 3!", "approve", (3,)),
        ("yes 1", "approve", (1,)),
        ("accept 2", "approve", (2,)),
        ("reject 2", "reject", (2,)),
        ("Rejected 2 & 4", "reject", (2, 4)),
        ("decline 2", "reject", (2,)),
        ("no 4", "reject", (4,)),
    ],
)
def test_approve_and_reject_forms(line, verdict, numbers):
    assert parse_command(line) == Command(line, verdict, numbers)


def test_all_and_edit_forms():
    assert parse_command("approve all") == Command("approve all", "approve", every=True)
    assert parse_command("Reject ALL.") == Command("Reject ALL.", "reject", every=True)
    assert parse_command("edit 4 amount=50000 stage=proposal").edits == (
        ("amount", "50000"),
        ("stage", "proposal"),
    )
    assert parse_command('change #4 Amount = 50000 name="Acme rollout 2"') == Command(
        'change #4 Amount = 50000 name="Acme rollout 2"',
        "approve",
        (4,),
        edits=(("amount", "50000"), ("name", "Acme rollout 2")),
    )


@pytest.mark.parametrize(
    ("line", "why"),
    [
        ("approve", "which proposals? name them by number, e.g. approve 1 3"),
        ("approve 1 please", "'please' is not a proposal number"),
        ("approve 1-900", "1-900 is not a range of proposal numbers"),
        ("approve 123456", "'123456' is not a proposal number"),
        ("ok", "not a command"),
        ("Yes please", "not a command"),
        ("No idea what 2 is", "'idea' is not a proposal number"),
        ("thanks!", "not a command"),
        ("1 3", "not a command"),
        ("edit 4", EDIT_USAGE),
        ("edit 4 5 amount=1", EDIT_USAGE),
        ('edit 4 name="Acme', f"unbalanced quotes; {EDIT_USAGE}"),
    ],
)
def test_lines_that_are_not_commands_say_why(line, why):
    assert parse_command(line) == Unclear(line, why)


def test_several_commands_on_one_line_and_every_other_line_kept():
    reply = parse_reply("Hi,\napprove 1; reject 2\nplease call Rachel about 4\n\n")
    assert [(c.verdict, c.numbers) for c in reply.commands] == [("approve", (1,)), ("reject", (2,))]
    assert [u.line for u in reply.unclear] == ["Hi,", "please call Rachel about 4"]


# --- numbers to keys -------------------------------------------------------------------------------


def test_numbers_map_to_the_digests_keys_and_a_missing_number_is_reported():
    result = plan(parse_reply("approve 1 9\nreject 3"), ITEMS)
    assert result.steps == (
        Step(1, "k-one", "approve", "approve 1 9"),
        Step(3, "k-three", "reject", "reject 3"),
    )
    assert result.unclear == (Unclear("approve 1 9", "there is no proposal 9 in that digest (it lists 1-4)"),)


def test_approve_all_takes_what_no_numbered_command_named():
    result = plan(parse_reply("approve all\nreject 2"), ITEMS)
    assert [(s.n, s.verdict, s.every) for s in result.steps] == [
        (2, "reject", False),
        (1, "approve", True),
        (3, "approve", True),
        (4, "approve", True),
    ]
    assert result.unclear == ()


def test_conflicting_verdicts_keep_the_first_and_report_the_second():
    result = plan(parse_reply("approve 1\napprove 1\nreject 1\napprove all\nreject all"), ITEMS[:1])
    assert result.steps == (Step(1, "k-one", "approve", "approve 1"),)
    assert result.unclear == (
        Unclear("reject 1", "1 is already approved earlier in this reply"),
        Unclear("reject all", 'this reply already says "approve all"'),
    )


def test_edit_carries_its_changes_and_a_digest_without_items_is_named():
    result = plan(parse_reply("edit 4 amount=50000"), ITEMS)
    assert result.steps == (Step(4, "k-four", "approve", "edit 4 amount=50000", (("amount", "50000"),)),)
    empty = plan(parse_reply("approve 1"), [{"n": "x"}, {"key": "k"}])
    assert empty.unclear == (Unclear("approve 1", "there is no proposal 1: that digest listed none"),)


# --- recognising digest mail -------------------------------------------------------------------------


def test_digest_mail_is_recognised_by_header_message_id_or_reply_reference():
    def parsed(headers: str) -> object:
        raw = f"From: a@b.example\nTo: c@d.example\nSubject: s\n{headers}\n\nbody\n".encode()
        return parse_message(raw, fingerprint="f" * 64, archive_key="a" * 64, limits=ParseLimits())

    digest = parsed(f"Message-ID: <digest.{TOKEN}@northwind.example>\nX-Mailsync-Digest: {TOKEN}")
    reply = parsed(
        f"Message-ID: <r@x.example>\nReferences: <a@x.example> <digest.{TOKEN.upper()}@northwind.example>"
    )
    customer = parsed("Message-ID: <digest.notatoken@x.example>\nIn-Reply-To: <digest.12@x.example>")
    assert digest.mailsync_digest == TOKEN
    assert is_digest_mail(digest)
    assert is_digest_mail(reply)
    assert replied_tokens(reply) == (TOKEN,)
    assert not is_digest_mail(customer)
    assert digest_token("digest.abc@x") is None
