"""Email over SMTP (implicit TLS, STARTTLS or plain loopback; optional login).

Built on the standard library's ``smtplib`` and ``email`` packages. The message gets
a deterministic Message-ID from the idempotency key, HTML and plain-text alternatives,
and inline images as ``multipart/related`` parts.
"""

from __future__ import annotations

import email.policy
import smtplib
import socket
import ssl
from email.message import EmailMessage
from email.utils import formatdate, parseaddr

from txmon.alerting.channels.base import Channel, OutboundMessage, Receipt, check_address
from txmon.alerting.config import SmtpConfig
from txmon.alerting.errors import ChannelError
from txmon.infra.masking import redact

# CRLF line ends on the wire and 7-bit transfer encodings (quoted-printable/base64 for
# non-ASCII such as the rupee sign), so any relay accepts it without 8BITMIME/SMTPUTF8.
_POLICY = email.policy.SMTP.clone(cte_type="7bit")


def build_email(message: OutboundMessage, from_address: str) -> EmailMessage:
    """The MIME message for one delivery (text, optional HTML with inline images)."""
    mail = EmailMessage(policy=_POLICY)
    mail["From"] = from_address
    mail["To"] = message.recipient.address
    mail["Subject"] = message.subject
    mail["Date"] = formatdate(usegmt=True)
    mail["Message-ID"] = f"<{message.idempotency_key}@txmon>"
    for name, value in message.headers:
        mail[name] = value
    mail.set_content(message.text)
    if message.html is not None:
        mail.add_alternative(message.html, subtype="html")
        *_, html_part = mail.iter_parts()
        for image in message.inline_images:
            html_part.add_related(image.data, maintype="image", subtype=image.subtype, cid=f"<{image.cid}>")
    return mail


class EmailChannel(Channel):
    """One SMTP connection per message: simple, thread-safe, and a dead server costs
    only the connect attempt."""

    name = "email"

    def __init__(self, config: SmtpConfig) -> None:
        self.config = config
        self._password = config.password()  # read from the environment now: fail at start-up

    def _connect(self) -> smtplib.SMTP:
        c = self.config
        if c.security == "ssl":
            smtp: smtplib.SMTP = smtplib.SMTP_SSL(
                c.host, c.port, timeout=c.timeout_s, context=ssl.create_default_context()
            )
        else:
            smtp = smtplib.SMTP(c.host, c.port, timeout=c.timeout_s)
            if c.security == "starttls":
                smtp.starttls(context=ssl.create_default_context())
        if c.username:
            assert self._password is not None
            smtp.login(c.username, self._password.get_secret_value())
        return smtp

    def send(self, message: OutboundMessage) -> Receipt:
        check_address(message.recipient)
        mail = build_email(message, self.config.from_address)
        try:
            smtp = self._connect()
        except (OSError, smtplib.SMTPException) as exc:
            raise _classify(exc, "connect") from exc
        try:
            smtp.ehlo_or_helo_if_needed()
            code, reply = smtp.mail(self._envelope_from())
            if code != 250:
                raise smtplib.SMTPSenderRefused(code, reply, self._envelope_from())
            code, reply = smtp.rcpt(message.recipient.address)
            if code not in (250, 251):
                raise smtplib.SMTPRecipientsRefused({message.recipient.masked: (code, reply)})
            code, reply = smtp.data(mail.as_bytes())
            if code != 250:
                raise smtplib.SMTPDataError(code, reply)
        except (OSError, smtplib.SMTPException) as exc:
            raise _classify(exc, "send") from exc
        finally:
            try:
                smtp.quit()
            except (OSError, smtplib.SMTPException):
                smtp.close()
        return Receipt(redact(f"{code} {reply.decode(errors='replace')}"))

    def _envelope_from(self) -> str:
        return parseaddr(self.config.from_address)[1]


def _classify(exc: BaseException, stage: str) -> ChannelError:
    """4xx replies, timeouts and dropped connections are worth retrying; 5xx are not."""
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        codes = [code for code, _ in exc.recipients.values()]
        transient = all(400 <= code < 500 for code in codes)
        return ChannelError(f"SMTP refused the recipient: {codes}", transient=transient, response=redact(str(codes)))
    if isinstance(exc, smtplib.SMTPResponseException):
        text = exc.smtp_error.decode(errors="replace") if isinstance(exc.smtp_error, bytes) else str(exc.smtp_error)
        response = redact(f"{exc.smtp_code} {text}")
        if isinstance(exc, smtplib.SMTPAuthenticationError):
            return ChannelError(
                f"SMTP login failed ({response}); check smtp.username and the password environment variable",
                transient=False,
                response=response,
            )
        return ChannelError(
            f"SMTP {stage} rejected: {response}", transient=400 <= exc.smtp_code < 500, response=response
        )
    if isinstance(exc, (smtplib.SMTPServerDisconnected, ConnectionError, socket.timeout, TimeoutError)):
        return ChannelError(f"SMTP {stage} failed: {type(exc).__name__}: {redact(str(exc))}", transient=True)
    if isinstance(exc, ssl.SSLError):
        return ChannelError(f"SMTP TLS failed ({exc}); check smtp.security and port", transient=False)
    return ChannelError(f"SMTP {stage} failed: {type(exc).__name__}: {redact(str(exc))}", transient=True)
