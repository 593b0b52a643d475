"""An embedded SMTP server on loopback that keeps what it receives (tests, `sidecar demo`).

`SmtpSink` runs aiosmtpd's `SMTP` protocol on the *current* asyncio loop (no thread), on
127.0.0.1 and an ephemeral port that it keeps across `stop()` and `start()`, so a test can
take the server down and bring it back where the client expects it. Faults are plain
attributes, read at each command, so they can be switched while the server runs:

```python
sink = SmtpSink()
async with sink as (host, port):
    sink.rejected_recipients.add("nobody@example.com")   # RCPT -> 550
    sink.rcpt_temporary_failure = True                    # RCPT -> 451
    sink.data_temporary_failure = True                    # DATA -> 451
    sink.credentials = ("user", "secret")                 # AUTH required before MAIL
    sink.tls_context = server_context                     # offer STARTTLS (new connections)
    await sink.stop(); await sink.start()                 # down, then back on the same port
    sink.messages[0].message["Subject"]
```
"""

from __future__ import annotations

import asyncio
import email
import logging
import ssl
from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage
from types import TracebackType
from typing import Any

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session, TLSSetupException

__all__ = ["ReceivedMessage", "SmtpSink"]

logger = logging.getLogger(__name__)

_OK = "250 OK"
_TEMPORARY = "451 4.3.0 Temporary failure, please try again later"
_AUTH_REQUIRED = "530 5.7.0 Authentication required"


@dataclass(frozen=True, slots=True)
class ReceivedMessage:
    """One message the sink accepted: the envelope, the bytes, and the parsed message."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    raw: bytes
    message: EmailMessage
    # Whether the session had been upgraded with STARTTLS (or was TLS from the start).
    secure: bool
    # The user the client logged in as, if it did.
    login: str | None


@dataclass(slots=True)
class SmtpSink:
    """An SMTP server on loopback recording every message; see the module docstring.

    `implicit_tls` makes the listening socket itself TLS (like port 465). `port` 0 picks a
    free port at the first `start()`; later starts reuse it.
    """

    host: str = "127.0.0.1"
    port: int = 0
    implicit_tls: ssl.SSLContext | None = None
    # The name the server greets with; set, because aiosmtpd's default asks DNS.
    hostname: str = "sink.localhost"
    messages: list[ReceivedMessage] = field(default_factory=list)
    rejected_recipients: set[str] = field(default_factory=set)
    rcpt_temporary_failure: bool = False
    data_temporary_failure: bool = False
    credentials: tuple[str, str] | None = None
    tls_context: ssl.SSLContext | None = None
    _server: asyncio.Server | None = field(default=None, init=False, repr=False)
    _sessions: set[SMTP] = field(default_factory=set, init=False, repr=False)

    async def __aenter__(self) -> tuple[str, int]:
        """Start and return (host, port)."""
        await self.start()
        return self.host, self.port

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Stop, closing every open session."""
        await self.stop()

    @property
    def running(self) -> bool:
        """Whether the server is listening."""
        return self._server is not None

    async def start(self) -> None:
        """Listen on `host`:`port` (a free port the first time, the same one after)."""
        if self._server is not None:
            return
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self._new_session, self.host, self.port, ssl=self.implicit_tls
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Stop listening and end every open session; returns when they are over."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        # Python 3.11's Server.close() leaves accepted connections open: close them here,
        # then wait for each session's task so nothing outlives the sink.
        tasks = []
        for session in tuple(self._sessions):
            if isinstance(session.transport, asyncio.WriteTransport):
                # abort(), not close(): a server going down does not say goodbye.
                session.transport.abort()
            # aiosmtpd gives no public handle on a session's task; waiting for it is the
            # only way to know the session has really finished.
            task = session._handler_coroutine  # noqa: SLF001
            if task is not None:
                tasks.append(task)
        self._sessions.clear()
        await asyncio.gather(*tasks, return_exceptions=True)
        await server.wait_closed()

    def _new_session(self) -> SMTP:
        """One aiosmtpd protocol per connection, configured from the current fault modes."""
        session = _SinkSMTP(
            self,
            hostname=self.hostname,
            tls_context=self.tls_context,
            # A test server offers AUTH without TLS too; `credentials` decides if it is needed.
            auth_require_tls=False,
            authenticator=self._authenticate,
            loop=asyncio.get_running_loop(),
        )
        self._sessions.add(session)
        return session

    def _forget(self, session: SMTP) -> None:
        """A session ended: stop tracking it."""
        self._sessions.discard(session)

    def _authenticate(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        mechanism: str,
        auth_data: Any,
    ) -> AuthResult:
        """Accept exactly `credentials`; anything else gets aiosmtpd's 535."""
        del server, session, envelope, mechanism
        ok = (
            self.credentials is not None
            and isinstance(auth_data, LoginPassword)
            and (auth_data.login, auth_data.password)
            == (self.credentials[0].encode(), self.credentials[1].encode())
        )
        # handled=False lets aiosmtpd send its own 535 reply for a failure.
        return AuthResult(success=ok, handled=False, auth_data=auth_data if ok else None)

    # aiosmtpd handler hooks (found by name on the handler object).

    async def handle_EHLO(  # noqa: N802 - aiosmtpd's hook name
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        """Advertise AUTH only while credentials are required, like a real relay."""
        del server, envelope
        session.host_name = hostname
        if self.credentials is not None:
            return responses
        return [line for line in responses if not line[4:].upper().startswith("AUTH")]

    async def handle_MAIL(  # noqa: N802 - aiosmtpd's hook name
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        """Refuse MAIL before AUTH when credentials are required."""
        del server
        if self.credentials is not None and not session.authenticated:
            return _AUTH_REQUIRED
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return _OK

    async def handle_RCPT(  # noqa: N802 - aiosmtpd's hook name
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        """550 for a rejected address, 451 while RCPT fails temporarily, else accept."""
        del server, session
        if address.lower() in {rejected.lower() for rejected in self.rejected_recipients}:
            return f"550 5.1.1 <{address}>: Recipient address rejected: User unknown"
        if self.rcpt_temporary_failure:
            return _TEMPORARY
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return _OK

    async def handle_DATA(  # noqa: N802 - aiosmtpd's hook name
        self, server: SMTP, session: Session, envelope: Envelope
    ) -> str:
        """Record the message, unless DATA fails temporarily."""
        del server
        if self.data_temporary_failure:
            return _TEMPORARY
        raw = envelope.original_content or b""
        parsed = email.message_from_bytes(raw, policy=policy.default)
        self.messages.append(
            ReceivedMessage(
                mail_from=envelope.mail_from or "",
                rcpt_tos=tuple(envelope.rcpt_tos),
                raw=raw,
                message=parsed,
                secure=session.ssl is not None or self.implicit_tls is not None,
                login=_login_of(session),
            )
        )
        return "250 2.0.0 OK: queued"

    async def handle_exception(self, error: Exception) -> str:
        """A client giving up on the TLS handshake is expected here; other errors are not."""
        if isinstance(error, TLSSetupException):
            # Clients that refuse the sink's certificate do this on purpose in tests.
            logger.info("SMTP client abandoned the TLS handshake")
        else:
            logger.error("SMTP sink session failed", exc_info=error)
        return f"500 Error: ({type(error).__name__}) {error}"


class _SinkSMTP(SMTP):
    """aiosmtpd's protocol, telling the sink when its connection is gone."""

    def __init__(self, sink: SmtpSink, **kwargs: Any) -> None:
        super().__init__(sink, **kwargs)
        self._sink = sink

    def connection_lost(self, error: Exception | None) -> None:
        """Untrack the session, then let aiosmtpd clean up."""
        self._sink._forget(self)  # noqa: SLF001 - the sink's own bookkeeping
        super().connection_lost(error)


def _login_of(session: Session) -> str | None:
    """The user name a session authenticated as, if any."""
    # aiosmtpd types auth_data as None; the authenticator above stores a LoginPassword.
    data: object = session.auth_data
    if session.authenticated and isinstance(data, LoginPassword):
        return data.login.decode(errors="replace")
    return None
