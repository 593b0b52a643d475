"""Report emails: strict address parsing, pure composition, and an all-or-nothing SMTP sender.

`parse_addresses` and `parse_reply_to` turn Enterprise's one-string recipient fields
(separated by `,` or `;`) into plain `local@domain` addresses, refusing anything that could
smuggle a header or a display name. `compose` builds the `EmailMessage` (pure: no I/O).
`Mailer.send` speaks SMTP itself so that a report reaches every recipient or none: each
RCPT TO must be accepted before DATA is sent. Failures raise `MailError` whose
`retryable` says whether trying again later may help (connection refused, timeouts, 4xx)
or not (5xx, TLS verification, STARTTLS required but not offered).
"""

from __future__ import annotations

import copy
import html
import logging
import re
import socket
import ssl
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage, Message
from email.utils import format_datetime, getaddresses, make_msgid
from urllib.parse import urlsplit

import aiosmtplib

from sidecar.config import SmtpConfig
from sidecar.errors import InvalidInput, MailError

__all__ = [
    "Attachment",
    "DashboardLink",
    "Mailer",
    "compose",
    "parse_addresses",
    "parse_reply_to",
]

logger = logging.getLogger(__name__)

# RFC 5322 dot-atom: atext runs joined by single dots. Quoted local parts, comments and
# domain literals are valid RFC 5322 but never needed for a report recipient, and each is a
# way to hide something, so they are refused.
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LOCAL_PART = re.compile(rf"{_ATEXT}(?:\.{_ATEXT})*")
_DOMAIN_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_SEPARATORS = re.compile(r"[,;]")
_MAX_ADDRESS = 254  # RFC 5321 path limit less the angle brackets
_MAX_LOCAL_PART = 64
_MAX_DOMAIN = 253
_SHOWN_CHARS = 80  # how much of a refused value an error message repeats
_MIME_TYPE = re.compile(r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*")
_SAFE_LINK_SCHEMES = frozenset({"http", "https"})
_IMPLICIT_TLS_PORT = 465  # Grafana (go-mail) also means implicit TLS by it


# --- addresses ------------------------------------------------------------------------


def parse_addresses(text: str) -> list[str]:
    """Split Enterprise's `recipients` string on `,` and `;` into plain addresses.

    Whitespace around each entry is dropped, empty entries are ignored, and addresses that
    differ only in case are kept once, in their first spelling. Every entry must be a
    plain `local@domain` (no display name, quotes, angle brackets, spaces or control
    characters; a dotted domain or `localhost`).

    Raises:
        InvalidInput: no address at all, or an entry that is not a plain address (named).
    """
    addresses = _split_addresses(text)
    if not addresses:
        raise InvalidInput("no recipient: give at least one email address")
    return addresses


def parse_reply_to(text: str) -> str | None:
    """Enterprise's `replyTo` as a Reply-To header value, or None when it is blank.

    Enterprise documents a comma-separated list, so several addresses are allowed (split
    and checked as in `parse_addresses`) and returned joined by `", "`.

    Raises:
        InvalidInput: an entry that is not a plain address (named).
    """
    addresses = _split_addresses(text)
    return ", ".join(addresses) if addresses else None


def _split_addresses(text: str) -> list[str]:
    """Split, strip, check and de-duplicate (case-insensitively, first spelling wins)."""
    seen: set[str] = set()
    addresses: list[str] = []
    for entry in _SEPARATORS.split(text):
        candidate = entry.strip()
        if not candidate:
            continue
        _check_address(candidate)
        key = candidate.lower()
        if key not in seen:
            seen.add(key)
            addresses.append(candidate)
    return addresses


def _check_address(candidate: str, what: str = "email address") -> None:
    """Accept only a plain ASCII `local@domain`; raise InvalidInput naming it otherwise."""
    problem = _address_problem(candidate)
    if problem:
        raise InvalidInput(f"invalid {what} {_shown(candidate)}: {problem}")


def _address_problem(candidate: str) -> str:
    """Why `candidate` is not a plain address, or "" when it is one."""
    for broken, problem in _ADDRESS_RULES:
        if broken(candidate):
            return problem
    return ""


def _valid_local_part(local: str) -> bool:
    """A dot-atom of at most 64 characters."""
    return 0 < len(local) <= _MAX_LOCAL_PART and bool(_LOCAL_PART.fullmatch(local))


def _stdlib_disagrees(candidate: str) -> bool:
    """The stdlib must see one bare mailbox that it writes back unchanged.

    So nothing written into a header can differ from what the rules above checked.
    """
    if getaddresses([candidate]) != [("", candidate)]:
        return True
    return str(Address(addr_spec=candidate)) != candidate


# Checked in order, so the message names the most telling fault first.
_ADDRESS_RULES: tuple[tuple[Callable[[str], bool], str], ...] = (
    (
        lambda text: any(_is_control(char) for char in text),
        "it contains a control character (line breaks are not allowed)",
    ),
    (
        lambda text: any(char.isspace() for char in text),
        "it contains a space; give a plain address like name@example.com",
    ),
    (
        lambda text: any(char in text for char in '<>"()[]\\'),
        "give a plain address like name@example.com, without a name, quotes or <>",
    ),
    (lambda text: not text.isascii(), "only ASCII addresses are supported"),
    (lambda text: text.count("@") != 1, "it must contain exactly one @"),
    (lambda text: len(text) > _MAX_ADDRESS, f"it is longer than {_MAX_ADDRESS} characters"),
    (
        lambda text: not _valid_local_part(text.partition("@")[0]),
        "the part before @ is not a valid mailbox name",
    ),
    (
        lambda text: not _valid_domain(text.partition("@")[2]),
        "the part after @ must be a domain name like example.com",
    ),
    (_stdlib_disagrees, "it is not a plain email address"),
)


def _valid_domain(domain: str) -> bool:
    """A DNS name with at least one dot, or `localhost` (Grafana's own default sender)."""
    if domain.lower() == "localhost":
        return True
    labels = domain.split(".")
    return (
        len(domain) <= _MAX_DOMAIN
        and len(labels) >= 2  # noqa: PLR2004 - a dot separates at least two labels
        and all(_DOMAIN_LABEL.fullmatch(label) for label in labels)
        and not labels[-1].isdigit()  # a bare IPv4 address is not a domain
    )


def _is_control(char: str) -> bool:
    """Control characters and line/paragraph separators: none belong in a header line."""
    return unicodedata.category(char) in {"Cc", "Zl", "Zp"}


def _shown(value: str) -> str:
    """A value for an error message: repr-escaped (no raw CR/LF) and cut to a sane length."""
    if len(value) > _SHOWN_CHARS:
        return repr(value[:_SHOWN_CHARS]) + "..."
    return repr(value)


# --- composition ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Attachment:
    """A file attached to the email, sent base64-encoded."""

    filename: str
    content: bytes
    mime_type: str = "application/pdf"


@dataclass(frozen=True, slots=True)
class DashboardLink:
    """A link to a dashboard of the report, listed in the email body."""

    title: str
    url: str


def compose(
    *,
    subject: str,
    message: str,
    recipients: Sequence[str],
    sender_address: str,
    sender_name: str,
    reply_to: str | None = None,
    links: Sequence[DashboardLink] = (),
    attachments: Sequence[Attachment] = (),
    footer_text: str = "",
    footer_link: str = "",
    logo: Attachment | None = None,
    logo_url: str = "",
    message_id: str = "",
    images: Sequence[Attachment] = (),
) -> EmailMessage:
    """Build a report email (no I/O).

    The result is multipart/mixed: first a multipart/alternative with a text/plain and an
    HTML rendering of `message` (every user string escaped, line breaks kept), the
    dashboard links and the "Sent by <footer_text>" footer; then each attachment, base64.
    Line breaks and other control characters in `subject` and `sender_name` become spaces,
    so no value can start a header of its own. Every recipient is in To, like Enterprise.
    `message_id` (dot-atom text, without the domain) gives a resent scheduled run the
    Message-ID of its first sending; without it the Message-ID is random. `images` (the
    `image` format's dashboard pictures) are shown in the HTML body, inline (cid:), in
    order under the message, each with its file name's stem as alternative text.

    Raises:
        InvalidInput: no recipient, a recipient, sender or reply-to that is not a plain
            address, or an attachment MIME type that is not `type/subtype`.
    """
    if not recipients:
        raise InvalidInput("no recipient: give at least one email address")
    for address in recipients:
        _check_address(address, "recipient address")
    _check_address(sender_address, "sender address (smtp.from_address)")
    reply_to_value = parse_reply_to(reply_to) if reply_to else None

    composed = EmailMessage(policy=policy.SMTP)
    composed["Subject"] = _one_line(subject)
    composed["From"] = Address(display_name=_one_line(sender_name), addr_spec=sender_address)
    composed["To"] = [Address(addr_spec=address) for address in recipients]
    if reply_to_value:
        composed["Reply-To"] = reply_to_value
    composed["Date"] = format_datetime(datetime.now(UTC))
    # An explicit domain: without one make_msgid asks DNS for this host's name.
    domain = sender_address.rpartition("@")[2]
    composed["Message-ID"] = f"<{message_id}@{domain}>" if message_id else make_msgid(domain=domain)
    # RFC 3834: tells vacation responders not to answer a machine-sent report.
    composed["Auto-Submitted"] = "auto-generated"

    body = message.replace("\r\n", "\n").replace("\r", "\n")
    # Quoted-printable keeps the text parts 7-bit, so no server needs 8BITMIME.
    composed.set_content(
        _plain_body(body, links, footer_text, footer_link),
        subtype="plain",
        charset="utf-8",
        cte="quoted-printable",
    )
    # The email logo: an uploaded image travels inline (cid:), an http(s) URL is linked.
    # Dashboard images always travel inline.
    logo_id = make_msgid(domain=domain) if logo else ""
    image_ids = [make_msgid(domain=domain) for _ in images]
    logo_src = f"cid:{logo_id[1:-1]}" if logo else logo_url if _is_safe_link(logo_url) else ""
    composed.add_alternative(
        _html_body(
            body,
            links=links,
            footer_text=footer_text,
            footer_link=footer_link,
            logo_src=logo_src,
            pictures=[
                (f"cid:{image_id[1:-1]}", image.filename.rpartition(".")[0] or image.filename)
                for image_id, image in zip(image_ids, images, strict=True)
            ],
        ),
        subtype="html",
        charset="utf-8",
        cte="quoted-printable",
    )
    related = [*([(logo_id, logo)] if logo else []), *zip(image_ids, images, strict=True)]
    if related:
        html_part = composed.get_body(preferencelist=("html",))
        if html_part is None:
            raise RuntimeError("the HTML part just added is missing")
        for content_id, picture in related:
            maintype, subtype = _mime_type(picture.mime_type)
            html_part.add_related(
                picture.content, maintype=maintype, subtype=subtype, cid=content_id
            )
    composed.make_mixed()
    for attachment in attachments:
        maintype, subtype = _mime_type(attachment.mime_type)
        composed.add_attachment(
            attachment.content,
            maintype=maintype,
            subtype=subtype,
            filename=_safe_filename(attachment.filename),
        )
    return composed


def _one_line(value: str) -> str:
    """`value` with every control or line-separator character replaced by a space."""
    return "".join(" " if _is_control(char) else char for char in value).strip()


def _plain_body(
    message: str, links: Sequence[DashboardLink], footer_text: str, footer_link: str
) -> str:
    """The text/plain rendering: message, one line per link, the footer."""
    sections = [message] if message else []
    if links:
        sections.append(
            "\n".join(
                f"{link.title}: {link.url}" if _is_safe_link(link.url) else link.title
                for link in links
            )
        )
    if footer_text:
        footer = f"Sent by {footer_text}"
        if _is_safe_link(footer_link):
            footer += f" ({footer_link})"
        sections.append(footer)
    return "\n\n".join(sections) + "\n"


def _html_body(
    message: str,
    *,
    links: Sequence[DashboardLink],
    footer_text: str,
    footer_link: str,
    logo_src: str = "",
    pictures: Sequence[tuple[str, str]] = (),
) -> str:
    """The text/html rendering; every user-supplied string is HTML-escaped.

    `pictures`: (src, alternative text) of each dashboard image, shown under the message.
    """
    parts = [
        "<!DOCTYPE html>",
        '<html><head><meta charset="utf-8"></head>',
        '<body style="font-family: Arial, Helvetica, sans-serif; font-size: 14px;">',
    ]
    if logo_src:
        parts.append(f'<p><img src="{html.escape(logo_src, quote=True)}" alt="" height="40"></p>')
    if message:
        parts.append(f"<p>{_html_lines(message)}</p>")
    parts.extend(
        f'<p><img src="{html.escape(src, quote=True)}" alt="{html.escape(alt, quote=True)}"'
        ' style="max-width: 100%; height: auto;"></p>'
        for src, alt in pictures
    )
    if links:
        parts.append("<ul>")
        parts.extend(f"<li>{_html_link(link.title, link.url)}</li>" for link in links)
        parts.append("</ul>")
    if footer_text:
        parts.append(
            '<p style="color: #6e6e6e; font-size: 12px;">'
            f"Sent by {_html_link(footer_text, footer_link)}</p>"
        )
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _html_lines(text: str) -> str:
    """Escaped text whose line breaks are shown as <br>."""
    return "<br>\n".join(html.escape(line) for line in text.split("\n"))


def _html_link(text: str, url: str) -> str:
    """An escaped anchor, or the escaped text alone when `url` is not http(s)."""
    if not _is_safe_link(url):
        return html.escape(text)
    return f'<a href="{html.escape(url, quote=True)}">{html.escape(text)}</a>'


def _is_safe_link(url: str) -> bool:
    """Only http(s) URLs become links: `javascript:` and friends never reach a mail client."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    return parts.scheme.lower() in _SAFE_LINK_SCHEMES and bool(parts.netloc)


def _mime_type(value: str) -> tuple[str, str]:
    """Split `type/subtype`, refusing anything that could bend the Content-Type header."""
    if not _MIME_TYPE.fullmatch(value):
        raise InvalidInput(f"invalid attachment MIME type {_shown(value)}")
    maintype, _, subtype = value.lower().partition("/")
    return maintype, subtype


def _safe_filename(name: str) -> str:
    """A file name without control characters or directories (mail clients save it as is)."""
    cleaned = _one_line(name).replace("/", "_").replace("\\", "_")
    return cleaned.lstrip(".") or "attachment"


# --- sending --------------------------------------------------------------------------


class Mailer:
    """Sends composed emails through the configured SMTP server, all or nothing.

    Each `send` opens its own connection and closes it before returning: nothing is
    shared between sends. Port 465 means implicit TLS; any other port follows
    `starttls_policy` (Grafana's names). Certificates are verified unless `skip_verify`.
    """

    def __init__(self, config: SmtpConfig) -> None:
        self._config = config
        self._ehlo_name = _ehlo_name()

    @property
    def _server(self) -> str:
        """host:port for messages."""
        return f"{self._config.host}:{self._config.port}"

    async def send(self, message: EmailMessage) -> None:
        """Deliver `message` to every address in its To, Cc and Bcc headers, or to none.

        Raises:
            InvalidInput: the message names no recipient, or one that is not a plain address.
            MailError: the server could not be reached or refused something; `retryable`
                is true for connection failures, timeouts and 4xx replies.
        """
        recipients = _envelope_recipients(message)
        payload = _wire_bytes(message)
        config = self._config
        client = aiosmtplib.SMTP(
            hostname=config.host,
            port=config.port,
            timeout=config.timeout_seconds,
            use_tls=config.port == _IMPLICIT_TLS_PORT,
            # False, not None: None would make aiosmtplib upgrade on its own terms.
            start_tls=False,
            validate_certs=not config.skip_verify,
            local_hostname=self._ehlo_name,
        )
        try:
            await self._open(client)
            await client.mail(config.from_address)
            await self._add_recipients(client, recipients)
            await client.data(payload)
            await _quit_quietly(client)
        except MailError:
            raise
        except (aiosmtplib.SMTPException, OSError) as exc:
            # SSL errors are OSErrors too, and refused connections arrive wrapped.
            raise self._failure(exc) from exc
        finally:
            client.close()
        logger.info(
            "report email sent",
            extra={"recipient_count": len(recipients), "size_bytes": len(payload)},
        )

    async def _open(self, client: aiosmtplib.SMTP) -> None:
        """Connect, greet, upgrade to TLS as the policy says, and log in when a user is set."""
        config = self._config
        await client.connect()
        await _greet(client)
        if config.port != _IMPLICIT_TLS_PORT and config.starttls_policy != "NoStartTLS":
            if client.supports_extension("starttls"):
                await client.starttls()
                # RFC 3207: what the server said before TLS no longer counts.
                await _greet(client)
            elif config.starttls_policy == "MandatoryStartTLS":
                await _quit_quietly(client)
                raise MailError(
                    f"the SMTP server {self._server} does not offer STARTTLS, and "
                    "smtp.starttls_policy is MandatoryStartTLS; nothing was sent",
                    retryable=False,
                )
        if config.user:
            await client.login(config.user, config.password.get_secret_value())

    async def _add_recipients(self, client: aiosmtplib.SMTP, recipients: Sequence[str]) -> None:
        """RCPT TO for every recipient; if any is refused, abandon the transaction and raise.

        Every recipient is tried so that the error names all the refused ones at once.
        """
        refused: list[aiosmtplib.SMTPRecipientRefused] = []
        for recipient in recipients:
            try:
                await client.rcpt(recipient)
            except aiosmtplib.SMTPRecipientRefused as exc:
                refused.append(exc)
        if not refused:
            return
        await _reset_quietly(client)
        await _quit_quietly(client)
        listed = "; ".join(
            f"{exc.recipient} ({exc.code} {_reply_text(exc.message)})" for exc in refused
        )
        logger.warning(
            "SMTP server refused recipients; nothing sent",
            extra={"refused_count": len(refused), "recipient_count": len(recipients)},
        )
        raise MailError(
            self._redact(
                f"the SMTP server {self._server} refused {len(refused)} of "
                f"{len(recipients)} recipient(s), so the report was sent to nobody: {listed}"
            ),
            # Retrying helps only if every refusal was temporary.
            retryable=all(_is_temporary(exc.code) for exc in refused),
        )

    def _failure(self, exc: Exception) -> MailError:
        """Turn an SMTP, TLS or socket failure into a MailError with a clear message."""
        message, retryable = self._describe(exc)
        error = MailError(self._redact(message), retryable=retryable)
        # Only refused recipients would put addresses in a message, and they never get here.
        logger.warning("SMTP send failed: %s", error, extra={"retryable": retryable})
        return error

    def _describe(self, exc: Exception) -> tuple[str, bool]:
        """The message and retryability of one failure."""
        server = self._server
        tls_problem = _tls_cause(exc)
        if tls_problem is not None:
            # A certificate or protocol mismatch does not heal by waiting.
            return self._tls_failure(tls_problem), False
        if isinstance(exc, aiosmtplib.SMTPResponseException):
            reply = f"{exc.code} {_reply_text(exc.message)}"
            message = f"the SMTP server {server} {self._refusal(exc)}: {reply}"
            return message, _is_temporary(exc.code)
        if isinstance(exc, aiosmtplib.SMTPTimeoutError | TimeoutError):
            timeout = self._config.timeout_seconds
            return f"the SMTP server {server} did not answer within {timeout:g} s", True
        if isinstance(exc, aiosmtplib.SMTPConnectError | aiosmtplib.SMTPServerDisconnected):
            return f"cannot talk to the SMTP server {server}: {exc}", True
        if isinstance(exc, aiosmtplib.SMTPException):
            # What is left is aiosmtplib's own refusals, e.g. AUTH not offered at all.
            return f"SMTP with {server} failed: {exc}", False
        return f"cannot talk to the SMTP server {server}: {exc}", True

    def _tls_failure(self, problem: ssl.SSLError) -> str:
        """Why TLS failed, with the way out for an unverifiable certificate."""
        if isinstance(problem, ssl.SSLCertVerificationError):
            return (
                f"the TLS certificate of the SMTP server {self._server} could not be verified "
                f"({problem.verify_message}); install a trusted certificate, or set "
                "smtp.skip_verify only on a network you trust"
            )
        return f"TLS with the SMTP server {self._server} failed: {problem}"

    def _refusal(self, exc: aiosmtplib.SMTPResponseException) -> str:
        """What the server refused, in words, for a reply-code failure."""
        if isinstance(exc, aiosmtplib.SMTPAuthenticationError):
            return f"refused the login of user {self._config.user!r}"
        if isinstance(exc, aiosmtplib.SMTPSenderRefused):
            return f"refused the sender {exc.sender}"
        if isinstance(exc, aiosmtplib.SMTPDataError):
            return "refused the message"
        if isinstance(exc, aiosmtplib.SMTPConnectResponseError):
            return "refused the connection"
        return "answered"

    def _redact(self, text: str) -> str:
        """Defence in depth: the password never appears, whatever a server echoes."""
        password = self._config.password.get_secret_value()
        return text.replace(password, "***") if password else text


async def _greet(client: aiosmtplib.SMTP) -> None:
    """EHLO, falling back to HELO for a server that knows no ESMTP."""
    try:
        await client.ehlo()
    except aiosmtplib.SMTPHeloError:
        await client.helo()


async def _reset_quietly(client: aiosmtplib.SMTP) -> None:
    """RSET, ignoring failures: the connection is being abandoned anyway."""
    if client.is_connected:
        try:
            await client.rset()
        except (aiosmtplib.SMTPException, OSError):
            logger.debug("RSET failed while abandoning an SMTP transaction")


async def _quit_quietly(client: aiosmtplib.SMTP) -> None:
    """QUIT, ignoring failures: the message is either delivered or being abandoned."""
    if client.is_connected:
        try:
            await client.quit()
        except (aiosmtplib.SMTPException, OSError):
            logger.debug("QUIT failed; closing the SMTP connection anyway")


def _tls_cause(exc: BaseException) -> ssl.SSLError | None:
    """The TLS error behind `exc` (aiosmtplib wraps implicit-TLS failures), if any."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLError):
            return seen
        seen = seen.__cause__
    return None


def _is_temporary(code: int) -> bool:
    """SMTP 4xx replies are transient by definition (RFC 5321 §4.2.1)."""
    return 400 <= code < 500  # noqa: PLR2004 - the reply-code classes


def _reply_text(text: str) -> str:
    """A server reply on one line, repr-free but with control characters removed."""
    return " ".join(_one_line(text).split())


def _envelope_recipients(message: Message) -> list[str]:
    """Every plain address in To, Cc and Bcc, checked and de-duplicated."""
    values: list[str] = [
        str(value) for name in ("To", "Cc", "Bcc") for value in message.get_all(name, [])
    ]
    seen: set[str] = set()
    recipients: list[str] = []
    for _, address in getaddresses(values):
        _check_address(address)
        if address.lower() not in seen:
            seen.add(address.lower())
            recipients.append(address)
    if not recipients:
        raise InvalidInput("no recipient: the message has no To, Cc or Bcc address")
    return recipients


def _wire_bytes(message: EmailMessage) -> bytes:
    """The message as sent: CRLF line ends, and Bcc removed (it is envelope-only)."""
    if "Bcc" in message:
        message = copy.deepcopy(message)
        del message["Bcc"]
    return message.as_bytes(policy=message.policy.clone(linesep="\r\n"))


def _ehlo_name() -> str:
    """This host's name for EHLO, as Grafana sends it; `localhost` if it is unusable."""
    # gethostname is a local syscall; getfqdn (aiosmtplib's default) may wait on DNS.
    name = socket.gethostname()
    usable = name.isascii() and name.isprintable() and " " not in name and name
    return name if usable else "localhost"
