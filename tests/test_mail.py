"""Email: address parsing, composition, and the all-or-nothing Mailer against a real sink.

Every Mailer test talks SMTP to `sidecar.testing.smtp.SmtpSink` on 127.0.0.1 and checks
what the sink received, parsed back from its bytes.
"""

from __future__ import annotations

import asyncio
import email
import logging
import re
import ssl
import string
from collections.abc import AsyncIterator
from email import policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
import trustme
from hypothesis import given
from hypothesis import strategies as st

from sidecar.config import SmtpConfig
from sidecar.errors import InvalidInput, MailError
from sidecar.mail import (
    Attachment,
    DashboardLink,
    Mailer,
    compose,
    parse_addresses,
    parse_reply_to,
)
from sidecar.testing.smtp import ReceivedMessage, SmtpSink

SENDER = "grafana@reports.example.com"
RECIPIENTS = ("alice@example.com", "bob@example.org", "carol@example.net")
PASSWORD = "correct-horse-battery-staple"
PDF = b"%PDF-1.7\n" + bytes(range(256)) * 64 + b"\n%%EOF\n"


# --- fixtures and helpers ---------------------------------------------------------------


@pytest.fixture
async def sink() -> AsyncIterator[SmtpSink]:
    """A running SMTP sink on loopback, stopped after the test."""
    server = SmtpSink()
    async with server:
        yield server


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    """A throw-away certificate authority that no system trusts."""
    return trustme.CA()


def server_context(ca: trustme.CA, *identities: str) -> ssl.SSLContext:
    """A server-side TLS context presenting a certificate from `ca` for `identities`."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert(*identities).configure_cert(context)
    return context


# Built in sync fixtures: trustme writes temporary files, which must not happen on the loop.
@pytest.fixture(scope="module")
def loopback_tls(ca: trustme.CA) -> ssl.SSLContext:
    """A server TLS context whose certificate (from `ca`) names 127.0.0.1."""
    return server_context(ca, "127.0.0.1")


@pytest.fixture(scope="module")
def other_host_tls(ca: trustme.CA) -> ssl.SSLContext:
    """A server TLS context whose certificate (from `ca`) names another host."""
    return server_context(ca, "mail.example.com")


@pytest.fixture
def trusted_ca(ca: trustme.CA, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the client trust `ca` the way an operator would: through SSL_CERT_FILE."""
    bundle = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    monkeypatch.setenv("SSL_CERT_FILE", str(bundle))


def config_for(sink: SmtpSink, **changes: Any) -> SmtpConfig:
    """SMTP settings pointing at `sink`, with a short timeout so failures are quick."""
    values: dict[str, Any] = {
        "host": sink.host,
        "port": sink.port,
        "from_address": SENDER,
        "from_name": "Grafana Reports",
        "timeout_seconds": 5,
    }
    values.update(changes)
    return SmtpConfig(**values)


def report_email(recipients: tuple[str, ...] = RECIPIENTS, **changes: Any) -> EmailMessage:
    """A typical report email; `changes` override compose's arguments."""
    arguments: dict[str, Any] = {
        "subject": "Weekly status",
        "message": "Hi,\nPlease find attached a PDF status report.\nBest,",
        "recipients": recipients,
        "sender_address": SENDER,
        "sender_name": "Grafana Reports",
        "links": [DashboardLink("Service overview", "https://grafana.example.com/d/abc/svc")],
        "attachments": [Attachment("Weekly status.pdf", PDF)],
        "footer_text": "Grafana Labs",
        "footer_link": "https://grafana.com",
    }
    arguments.update(changes)
    return compose(**arguments)


def reparse(message: EmailMessage) -> EmailMessage:
    """The message as a receiver sees it: serialised for SMTP, then parsed back."""
    return email.message_from_bytes(message.as_bytes(), policy=policy.default)


def text_parts(message: EmailMessage) -> tuple[str, str]:
    """The text/plain and text/html bodies of a message, with line ends normalised to LF."""
    plain = message.get_body(preferencelist=("plain",))
    rich = message.get_body(preferencelist=("html",))
    assert plain is not None
    assert rich is not None
    return (
        str(plain.get_content()).replace("\r\n", "\n"),
        str(rich.get_content()).replace("\r\n", "\n"),
    )


def only_message(sink: SmtpSink) -> ReceivedMessage:
    """The one message the sink received."""
    assert len(sink.messages) == 1
    return sink.messages[0]


def error_chain_text(error: BaseException) -> str:
    """Everything an error and its causes would show in a log or a response."""
    texts: list[str] = []
    current: BaseException | None = error
    while current is not None:
        texts.extend([str(current), repr(current)])
        current = current.__cause__ or current.__context__
    return "\n".join(texts)


# --- parse_addresses --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("alice@example.com", ["alice@example.com"]),
        ("alice@example.com,bob@example.org", ["alice@example.com", "bob@example.org"]),
        (
            " alice@example.com ; bob@example.org ,carol@example.net ",
            ["alice@example.com", "bob@example.org", "carol@example.net"],
        ),
        ("alice@example.com;;, ,bob@example.org,", ["alice@example.com", "bob@example.org"]),
        (
            "Alice@Example.com, alice@example.com; ALICE@EXAMPLE.COM, bob@example.org",
            ["Alice@Example.com", "bob@example.org"],
        ),
        ("grafana@localhost", ["grafana@localhost"]),
        ("first.last+reports@mail.example.co.uk", ["first.last+reports@mail.example.co.uk"]),
        ("o'neil@example.com", ["o'neil@example.com"]),
        ("ops-team@sub-domain.example.io\t", ["ops-team@sub-domain.example.io"]),
    ],
)
def test_parse_addresses_accepts_lists(text: str, expected: list[str]) -> None:
    """Commas and semicolons separate; blanks vanish; case-insensitive duplicates go."""
    assert parse_addresses(text) == expected


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "no recipient"),
        (" , ; ,", "no recipient"),
        ("a@b.com\r\nBcc: x@y.com", r"'a@b.com\r\nBcc: x@y.com'"),
        ("a@b.com\nBcc: x@y.com", "control character"),
        ("Evil <a@b.com>", "'Evil <a@b.com>'"),
        ("a@b.com <c@d.com>", "'a@b.com <c@d.com>'"),
        ('"a"@b.com', "quotes"),
        ('"a@b.com"', "quotes"),
        ("a(comment)@b.com", "'a(comment)@b.com'"),
        ("ab.com", "exactly one @"),
        ("a@b@c.com", "exactly one @"),
        ("a@b", "domain name"),
        ("a@-b.com", "domain name"),
        ("a@b..com", "domain name"),
        ("a@1.2.3.4", "domain name"),
        ("a@[127.0.0.1]", "'a@[127.0.0.1]'"),
        ("a..b@c.com", "mailbox name"),
        (".a@c.com", "mailbox name"),
        ("a.@c.com", "mailbox name"),
        ("@c.com", "mailbox name"),
        ("a b@c.com", "space"),
        ("jürgen@example.de", "ASCII"),
        ("a@b.com\x00", "control character"),
        ("a@b.com\u2028c@d.com", "control character"),
        ("x" * 65 + "@example.com", "mailbox name"),
        ("a@" + "b" * 250 + ".com", "longer than 254"),
    ],
)
def test_parse_addresses_refuses(text: str, fragment: str) -> None:
    """Anything but plain local@domain entries is refused, and the error says which/why."""
    with pytest.raises(InvalidInput) as caught:
        parse_addresses(text)
    assert fragment in str(caught.value)


def test_one_bad_address_fails_the_whole_list() -> None:
    """A bad entry among good ones is named; the good ones are not blamed."""
    with pytest.raises(InvalidInput) as caught:
        parse_addresses("ok@example.com, Mallory <m@example.com>, fine@example.org")
    message = str(caught.value)
    assert "'Mallory <m@example.com>'" in message
    assert "ok@example.com" not in message


def test_error_message_is_single_line_and_bounded() -> None:
    """Errors repeat the bad value repr-escaped (no raw line breaks) and cut short."""
    with pytest.raises(InvalidInput) as caught:
        parse_addresses("a@b.com\r\nBcc: x@y.com" + "z" * 500)
    message = str(caught.value)
    assert "\r" not in message
    assert "\n" not in message
    assert len(message) < 300


# Characters that matter for address parsing, so random text hits the interesting cases.
_TRICKY = st.text(alphabet="ab.@,; <>\"'\r\n\t()[]\\\x00é", max_size=40)


@given(text=st.one_of(_TRICKY, st.text(max_size=60)))
def test_parse_addresses_never_returns_unsafe_text(text: str) -> None:
    """Whatever the input, any returned address is one bare, printable, ASCII mailbox."""
    try:
        addresses = parse_addresses(text)
    except InvalidInput:
        return
    assert addresses
    for address in addresses:
        assert not set(address) & set('\r\n \t<>",;()[]\\')
        assert address.isascii()
        assert address.isprintable()
        assert address.count("@") == 1


_ATEXT = string.ascii_letters + string.digits + "!#$%&'*+/=?^_`{|}~-"
_LOCAL = st.lists(st.text(alphabet=_ATEXT, min_size=1, max_size=8), min_size=1, max_size=3).map(
    ".".join
)
_LABEL = st.text(alphabet=string.ascii_lowercase + string.digits, min_size=1, max_size=10)
_TLD = st.text(alphabet=string.ascii_lowercase, min_size=2, max_size=6)
_DOMAIN = st.builds(
    lambda labels, tld: ".".join([*labels, tld]), st.lists(_LABEL, min_size=1, max_size=3), _TLD
)
_ADDRESS = st.builds(lambda local, domain: f"{local}@{domain}", _LOCAL, _DOMAIN)


@given(
    addresses=st.lists(_ADDRESS, min_size=1, max_size=6, unique_by=str.lower),
    separators=st.lists(st.sampled_from([",", ";", ", ", " ; ", "\t,", ",,"]), min_size=6),
)
def test_parse_addresses_round_trips_valid_lists(
    addresses: list[str], separators: list[str]
) -> None:
    """Valid addresses joined by any mix of separators come back unchanged, in order."""
    text = addresses[0]
    for address, separator in zip(addresses[1:], separators, strict=False):
        text += separator + address
    assert parse_addresses(text) == addresses


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", None),
        ("  ", None),
        (" ; ", None),
        ("team@example.com", "team@example.com"),
        ("team@example.com; lead@example.com,", "team@example.com, lead@example.com"),
    ],
)
def test_parse_reply_to(text: str, expected: str | None) -> None:
    """Blank means no Reply-To; a list becomes one comma-separated header value."""
    assert parse_reply_to(text) == expected


def test_parse_reply_to_refuses_display_names() -> None:
    """Reply-To follows the same strict rules as recipients."""
    with pytest.raises(InvalidInput, match="Evil"):
        parse_reply_to("Evil <evil@example.com>")


# --- compose ----------------------------------------------------------------------------


def test_compose_structure_and_headers() -> None:
    """mixed(alternative(plain, html), pdf); all recipients in To; Date, Message-ID set."""
    message = reparse(report_email(reply_to="team@example.com; lead@example.com"))
    assert message.get_content_type() == "multipart/mixed"
    parts = list(message.iter_parts())
    assert [part.get_content_type() for part in parts] == [
        "multipart/alternative",
        "application/pdf",
    ]
    assert [part.get_content_type() for part in parts[0].iter_parts()] == [
        "text/plain",
        "text/html",
    ]
    assert [address.addr_spec for address in message["To"].addresses] == list(RECIPIENTS)
    assert message["From"].addresses[0].display_name == "Grafana Reports"
    assert message["From"].addresses[0].addr_spec == SENDER
    assert message["Reply-To"] == "team@example.com, lead@example.com"
    assert message["Date"].datetime is not None
    assert message["Message-ID"].endswith("@reports.example.com>")
    assert message["Auto-Submitted"] == "auto-generated"


_EXPECTED_HEADERS = {
    "subject",
    "from",
    "to",
    "date",
    "message-id",
    "auto-submitted",
    "mime-version",
    "content-type",
}


@pytest.mark.parametrize(
    ("subject", "sender_name"),
    [
        ("Report\r\nBcc: evil@example.com", "Grafana"),
        ("Report\nX-Evil: 1\n\nbody injection", "Grafana"),
        ("Report\rX-Evil: 1", "Grafana\r\nX-Injected: yes"),
        ("Report\u2028X-Evil: 1\x85X-Other: 2", "Grafana\nBcc: evil@example.com"),
    ],
)
def test_header_injection_is_impossible(subject: str, sender_name: str) -> None:
    """Line breaks in the subject or sender name never make a header of their own."""
    message = reparse(report_email(subject=subject, sender_name=sender_name))
    assert {name.lower() for name in message} == _EXPECTED_HEADERS
    assert "\n" not in message["Subject"]
    assert message["Subject"].startswith("Report ")
    assert message["From"].addresses[0].addr_spec == SENDER


@given(subject=st.text(max_size=200), sender_name=st.text(max_size=60))
def test_header_injection_property(subject: str, sender_name: str) -> None:
    """For any subject and sender name, the parsed message has exactly the expected headers."""
    message = reparse(report_email(subject=subject, sender_name=sender_name, attachments=()))
    assert {name.lower() for name in message} == _EXPECTED_HEADERS
    assert message["From"].addresses[0].addr_spec == SENDER
    assert [address.addr_spec for address in message["To"].addresses] == list(RECIPIENTS)


def test_html_escapes_every_user_string() -> None:
    """Message, link titles and URLs, and the footer are escaped; newlines become <br>."""
    message = reparse(
        report_email(
            message='<script>alert(1)</script> & "quotes"\nsecond line',
            links=[DashboardLink("<b>Bold</b>", 'https://g.example.com/d/x?a=1&b="2"')],
            footer_text="<i>ACME</i>",
            footer_link="https://acme.example.com/?x=<y>",
        )
    )
    plain, rich = text_parts(message)
    assert "<script>" not in rich
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; &quot;quotes&quot;<br>" in rich
    assert "second line" in rich
    assert "&lt;b&gt;Bold&lt;/b&gt;" in rich
    assert 'href="https://g.example.com/d/x?a=1&amp;b=&quot;2&quot;"' in rich
    assert 'Sent by <a href="https://acme.example.com/?x=&lt;y&gt;">&lt;i&gt;ACME' in rich
    # The text part keeps the strings as written.
    assert '<script>alert(1)</script> & "quotes"\nsecond line' in plain


def test_links_and_footer_in_both_parts() -> None:
    """Every dashboard link and the "Sent by" footer appear in the text and the HTML."""
    links = [
        DashboardLink("Service overview", "https://grafana.example.com/d/abc/svc"),
        DashboardLink("Databases", "https://grafana.example.com/d/def/db?orgId=2"),
    ]
    plain, rich = text_parts(reparse(report_email(links=links)))
    for link in links:
        assert f"{link.title}: {link.url}" in plain
        assert f'<a href="{link.url.replace("&", "&amp;")}">{link.title}</a>' in rich
    assert "Sent by Grafana Labs (https://grafana.com)" in plain
    assert 'Sent by <a href="https://grafana.com">Grafana Labs</a>' in rich


def test_no_footer_without_footer_text() -> None:
    """The footer is left out when no footer text is set."""
    plain, rich = text_parts(reparse(report_email(footer_text="", footer_link="")))
    assert "Sent by" not in plain
    assert "Sent by" not in rich


@pytest.mark.parametrize("url", ["javascript:alert(1)", "data:text/html,hi", "//evil", ""])
def test_only_http_links_become_anchors(url: str) -> None:
    """A non-http(s) URL is never linked: the title is shown alone."""
    plain, rich = text_parts(reparse(report_email(links=[DashboardLink("Dash", url)])))
    assert "href" not in rich.split("Sent by")[0]
    assert "Dash" in rich
    assert "Dash" in plain
    if url:
        assert url not in plain


def test_attachments_round_trip_bit_exact() -> None:
    """Attachments are base64 and decode to exactly the bytes given, with their names."""
    binary = bytes(range(256)) * 300 + b"\r\n.\r\n\x00\xff"
    csv = "name,value\r\nä,1\n".encode()
    message = reparse(
        report_email(
            attachments=[
                Attachment("Report ü.pdf", binary),
                Attachment("table.csv", csv, "text/csv"),
            ]
        )
    )
    received = list(message.iter_attachments())
    assert [part.get_filename() for part in received] == ["Report ü.pdf", "table.csv"]
    assert [part.get_content_type() for part in received] == ["application/pdf", "text/csv"]
    assert all(part["Content-Transfer-Encoding"] == "base64" for part in received)
    assert [part.get_payload(decode=True) for part in received] == [binary, csv]


def test_dashboard_images_are_inline_in_the_html_in_order() -> None:
    """Dashboard images are related parts of the HTML, shown by cid under the message.

    Their alternative text is escaped; they are no attachments; the logo is related too.
    """
    first, second = b"\x89PNG first", b"\x89PNG second"
    message = reparse(
        report_email(
            images=[
                Attachment("Overview.png", first, "image/png"),
                Attachment('Evil "><script>.png', second, "image/png"),
            ],
            logo=Attachment("logo", b"\x89PNG logo", "image/png"),
        )
    )
    html = message.get_body(preferencelist=("html",))
    assert html is not None
    markup = html.get_content()
    shown = re.findall(r'<img src="cid:([^"]+)" alt="([^"]*)" style', markup)
    assert [alt for _, alt in shown] == ["Overview", "Evil &quot;&gt;&lt;script&gt;"]
    assert "<script>" not in markup
    assert markup.index("Best,") < markup.index(f"cid:{shown[0][0]}")
    related = {
        str(part["Content-ID"]).strip("<>"): part.get_payload(decode=True)
        for part in message.walk()
        if part["Content-ID"]
    }
    assert [related[content_id] for content_id, _ in shown] == [first, second]
    assert len(related) == 3  # and the logo
    assert [part.get_filename() for part in message.iter_attachments()] == ["Weekly status.pdf"]


def test_attachment_names_cannot_escape() -> None:
    """File names lose directories and control characters."""
    message = reparse(report_email(attachments=[Attachment("../../etc/pass\r\nwd", b"x")]))
    (part,) = message.iter_attachments()
    assert part.get_filename() == "_.._etc_pass  wd"


def test_non_ascii_subject_body_and_name() -> None:
    """Non-ASCII text is encoded for 7-bit transport and decodes back unchanged."""
    subject = "Rapport mensuel — été 📈 " + "très long sujet " * 8
    body = "Grüße aus Köln\n日本語のレポート\n📊 ça marche"
    composed = report_email(subject=subject, message=body, sender_name="Équipe Grafana")
    raw = composed.as_bytes()
    assert raw.isascii()
    assert all(len(line) <= 998 for line in raw.split(b"\r\n"))
    message = reparse(composed)
    assert message["Subject"] == subject.strip()
    assert message["From"].addresses[0].display_name == "Équipe Grafana"
    plain, rich = text_parts(message)
    assert body in plain
    assert "日本語のレポート<br>" in rich


def test_compose_refuses_bad_input() -> None:
    """No recipient, a bad recipient or sender, or a bent MIME type are refused."""
    with pytest.raises(InvalidInput, match="no recipient"):
        report_email(recipients=())
    with pytest.raises(InvalidInput, match="Evil"):
        report_email(recipients=("Evil <e@example.com>",))
    with pytest.raises(InvalidInput, match="sender"):
        report_email(sender_address="not an address")
    with pytest.raises(InvalidInput, match="MIME type"):
        report_email(attachments=[Attachment("a.pdf", b"x", "application/pdf\r\nX-Evil: 1")])


# --- Mailer against the sink ------------------------------------------------------------


async def test_send_delivers_what_was_composed(sink: SmtpSink) -> None:
    """The received message equals the composed one: headers, parts, attachment bytes."""
    composed = report_email(reply_to="team@example.com")
    await Mailer(config_for(sink)).send(composed)
    received = only_message(sink)
    assert received.mail_from == SENDER
    assert received.rcpt_tos == RECIPIENTS
    assert not received.secure
    message = received.message
    assert message["Subject"] == "Weekly status"
    assert message["Message-ID"] == composed["Message-ID"]
    assert message["Reply-To"] == "team@example.com"
    assert [address.addr_spec for address in message["To"].addresses] == list(RECIPIENTS)
    (attachment,) = message.iter_attachments()
    assert attachment.get_filename() == "Weekly status.pdf"
    assert attachment.get_payload(decode=True) == PDF
    assert text_parts(message) == text_parts(reparse(composed))


async def test_each_send_uses_its_own_connection(sink: SmtpSink) -> None:
    """Concurrent sends through one Mailer do not interfere."""
    mailer = Mailer(config_for(sink))
    first = report_email(recipients=("one@example.com",), subject="first")
    second = report_email(recipients=("two@example.com",), subject="second")
    await asyncio.gather(mailer.send(first), mailer.send(second))
    delivered = {message.message["Subject"]: message.rcpt_tos for message in sink.messages}
    assert delivered == {"first": ("one@example.com",), "second": ("two@example.com",)}


async def test_bcc_is_envelope_only(sink: SmtpSink) -> None:
    """A Bcc recipient gets the mail, but the header is not transmitted."""
    composed = report_email(recipients=("to@example.com",))
    composed["Bcc"] = "hidden@example.com"
    await Mailer(config_for(sink)).send(composed)
    received = only_message(sink)
    assert received.rcpt_tos == ("to@example.com", "hidden@example.com")
    assert b"hidden@example.com" not in received.raw
    assert composed["Bcc"] == "hidden@example.com"  # the caller's message is untouched


async def test_one_rejected_recipient_means_nobody_gets_it(
    sink: SmtpSink, caplog: pytest.LogCaptureFixture
) -> None:
    """550 for one of three recipients: not retryable, names it, and nothing is delivered."""
    sink.rejected_recipients.add("BOB@example.org")
    caplog.set_level(logging.DEBUG, logger="sidecar.mail")
    with pytest.raises(MailError) as caught:
        await Mailer(config_for(sink)).send(report_email())
    assert caught.value.retryable is False
    message = str(caught.value)
    assert "bob@example.org" in message
    assert "550" in message
    assert "User unknown" in message
    assert "alice@example.com" not in message
    assert sink.messages == []
    # Logs carry counts, never the recipient list.
    for record in caplog.records:
        assert all(address not in record.getMessage() for address in RECIPIENTS)


async def test_every_refused_recipient_is_named(sink: SmtpSink) -> None:
    """All refused recipients are listed at once, so one fix covers them all."""
    sink.rejected_recipients.update({"alice@example.com", "carol@example.net"})
    with pytest.raises(MailError) as caught:
        await Mailer(config_for(sink)).send(report_email())
    message = str(caught.value)
    assert "refused 2 of 3 recipient(s)" in message
    assert "alice@example.com (550" in message
    assert "carol@example.net (550" in message
    assert sink.messages == []


async def test_temporary_rcpt_failure_is_retryable(sink: SmtpSink) -> None:
    """451 on RCPT: retryable, nothing delivered."""
    sink.rcpt_temporary_failure = True
    with pytest.raises(MailError) as caught:
        await Mailer(config_for(sink)).send(report_email())
    assert caught.value.retryable is True
    assert "451" in str(caught.value)
    assert sink.messages == []


async def test_temporary_data_failure_is_retryable(sink: SmtpSink) -> None:
    """451 after DATA: retryable, nothing recorded."""
    sink.data_temporary_failure = True
    with pytest.raises(MailError) as caught:
        await Mailer(config_for(sink)).send(report_email())
    assert caught.value.retryable is True
    assert "refused the message: 451" in str(caught.value)
    assert sink.messages == []


async def test_server_down_is_retryable_and_recovery_works(sink: SmtpSink) -> None:
    """Connection refused is retryable; once the server is back on its port, sending works."""
    mailer = Mailer(config_for(sink))
    await sink.stop()
    with pytest.raises(MailError) as caught:
        await mailer.send(report_email())
    assert caught.value.retryable is True
    assert f"{sink.host}:{sink.port}" in str(caught.value)
    await sink.start()
    await mailer.send(report_email())
    assert only_message(sink).rcpt_tos == RECIPIENTS


async def test_silent_server_times_out_retryably() -> None:
    """A server that accepts but never greets: the timeout applies and it is retryable."""
    release = asyncio.Event()

    async def never_greet(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Hold the connection open without a word until the test ends."""
        await release.wait()
        writer.close()

    server = await asyncio.start_server(never_greet, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    config = SmtpConfig(host="127.0.0.1", port=port, timeout_seconds=0.2)
    try:
        with pytest.raises(MailError) as caught:
            await Mailer(config).send(report_email())
    finally:
        release.set()
        server.close()
        await server.wait_closed()
    assert caught.value.retryable is True
    assert "did not answer within 0.2 s" in str(caught.value)


async def test_mandatory_starttls_without_offer_sends_nothing(sink: SmtpSink) -> None:
    """MandatoryStartTLS against a server without STARTTLS: not retryable, nothing sent."""
    config = config_for(sink, starttls_policy="MandatoryStartTLS")
    with pytest.raises(MailError) as caught:
        await Mailer(config).send(report_email())
    assert caught.value.retryable is False
    assert "does not offer STARTTLS" in str(caught.value)
    assert sink.messages == []


async def test_opportunistic_without_offer_sends_in_clear(sink: SmtpSink) -> None:
    """OpportunisticStartTLS against a server without STARTTLS sends unencrypted."""
    await Mailer(config_for(sink, starttls_policy="OpportunisticStartTLS")).send(report_email())
    assert only_message(sink).secure is False


async def test_no_starttls_never_upgrades(sink: SmtpSink, loopback_tls: ssl.SSLContext) -> None:
    """NoStartTLS ignores an offered STARTTLS."""
    sink.tls_context = loopback_tls
    await Mailer(config_for(sink, starttls_policy="NoStartTLS")).send(report_email())
    assert only_message(sink).secure is False


@pytest.mark.parametrize("starttls_policy", ["MandatoryStartTLS", "OpportunisticStartTLS"])
async def test_starttls_untrusted_certificate_fails(
    sink: SmtpSink, loopback_tls: ssl.SSLContext, starttls_policy: str
) -> None:
    """A self-signed certificate fails verification (not retryable) and nothing is sent."""
    sink.tls_context = loopback_tls
    config = config_for(sink, starttls_policy=starttls_policy, skip_verify=False)
    with pytest.raises(MailError) as caught:
        await Mailer(config).send(report_email())
    assert caught.value.retryable is False
    assert "could not be verified (unable to get local issuer" in str(caught.value)
    assert "skip_verify" in str(caught.value)
    assert sink.messages == []


@pytest.mark.parametrize("starttls_policy", ["MandatoryStartTLS", "OpportunisticStartTLS"])
async def test_starttls_skip_verify_succeeds(
    sink: SmtpSink, loopback_tls: ssl.SSLContext, starttls_policy: str
) -> None:
    """With skip_verify the self-signed certificate is accepted and the session encrypted."""
    sink.tls_context = loopback_tls
    config = config_for(sink, starttls_policy=starttls_policy, skip_verify=True)
    await Mailer(config).send(report_email())
    assert only_message(sink).secure is True


async def test_starttls_trusted_certificate_verifies(
    sink: SmtpSink, loopback_tls: ssl.SSLContext, trusted_ca: None
) -> None:
    """A certificate from a trusted CA for the configured host passes full verification."""
    sink.tls_context = loopback_tls
    config = config_for(sink, starttls_policy="MandatoryStartTLS", skip_verify=False)
    await Mailer(config).send(report_email())
    assert only_message(sink).secure is True


async def test_starttls_checks_the_host_name(
    sink: SmtpSink, other_host_tls: ssl.SSLContext, trusted_ca: None
) -> None:
    """A trusted certificate for another host name is refused: verification includes names."""
    sink.tls_context = other_host_tls
    config = config_for(sink, starttls_policy="MandatoryStartTLS", skip_verify=False)
    with pytest.raises(MailError) as caught:
        await Mailer(config).send(report_email())
    assert caught.value.retryable is False
    assert "could not be verified (IP address mismatch" in str(caught.value)
    assert sink.messages == []


@pytest.fixture
async def implicit_tls_sink(loopback_tls: ssl.SSLContext) -> AsyncIterator[SmtpSink]:
    """A sink on port 465 speaking TLS from the first byte (tests and CI run as root)."""
    server = SmtpSink(port=465, implicit_tls=loopback_tls)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


async def test_port_465_uses_implicit_tls(implicit_tls_sink: SmtpSink) -> None:
    """Port 465 means TLS from the start, verified unless skip_verify."""
    with pytest.raises(MailError) as caught:
        await Mailer(config_for(implicit_tls_sink)).send(report_email())
    assert caught.value.retryable is False
    assert "could not be verified" in str(caught.value)
    assert implicit_tls_sink.messages == []
    await Mailer(config_for(implicit_tls_sink, skip_verify=True)).send(report_email())
    assert only_message(implicit_tls_sink).secure is True


async def test_auth_succeeds(sink: SmtpSink) -> None:
    """With the right user and password the server accepts the login and the mail."""
    sink.credentials = ("reporter", PASSWORD)
    await Mailer(config_for(sink, user="reporter", password=PASSWORD)).send(report_email())
    assert only_message(sink).login == "reporter"


async def test_auth_after_starttls(sink: SmtpSink, loopback_tls: ssl.SSLContext) -> None:
    """The usual submission setup: STARTTLS first, then AUTH inside the encrypted session."""
    sink.tls_context = loopback_tls
    sink.credentials = ("reporter", PASSWORD)
    config = config_for(
        sink,
        starttls_policy="MandatoryStartTLS",
        skip_verify=True,
        user="reporter",
        password=PASSWORD,
    )
    await Mailer(config).send(report_email())
    received = only_message(sink)
    assert received.secure is True
    assert received.login == "reporter"


async def test_auth_wrong_password_never_shows_it(
    sink: SmtpSink, caplog: pytest.LogCaptureFixture
) -> None:
    """A refused login is not retryable, names the user, and never contains the password."""
    sink.credentials = ("reporter", "the-real-one")
    caplog.set_level(logging.DEBUG)
    with pytest.raises(MailError) as caught:
        await Mailer(config_for(sink, user="reporter", password=PASSWORD)).send(report_email())
    assert caught.value.retryable is False
    message = str(caught.value)
    assert "'reporter'" in message
    assert "535" in message
    assert PASSWORD not in error_chain_text(caught.value)
    assert PASSWORD not in caplog.text
    assert sink.messages == []


async def test_auth_required_but_not_configured(sink: SmtpSink) -> None:
    """A server that demands AUTH refuses MAIL from an anonymous client: not retryable."""
    sink.credentials = ("reporter", PASSWORD)
    with pytest.raises(MailError) as caught:
        await Mailer(config_for(sink)).send(report_email())
    assert caught.value.retryable is False
    assert "530" in str(caught.value)
    assert sink.messages == []


async def test_message_without_recipients_is_refused(sink: SmtpSink) -> None:
    """A message with no To/Cc/Bcc is an input error, caught before connecting."""
    message = EmailMessage()
    message["Subject"] = "nobody"
    message.set_content("hello")
    with pytest.raises(InvalidInput, match="no recipient"):
        await Mailer(config_for(sink)).send(message)
    assert sink.messages == []


async def test_sink_stop_ends_open_sessions(sink: SmtpSink) -> None:
    """Stopping the sink drops connected clients (SMTP down), and it restarts on its port."""
    reader, writer = await asyncio.open_connection(sink.host, sink.port)
    greeting = await reader.readline()
    assert greeting.startswith(b"220 sink.localhost")
    port = sink.port
    await asyncio.wait_for(sink.stop(), timeout=5)
    assert await asyncio.wait_for(reader.read(), timeout=5) == b""
    writer.close()
    await writer.wait_closed()
    await sink.start()
    assert sink.port == port
    await Mailer(config_for(sink)).send(report_email())
    assert only_message(sink).rcpt_tos == RECIPIENTS
