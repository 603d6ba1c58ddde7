"""The `email` tool: RFC 5322 messages to a local outbox, and through SMTP when configured.

Every message is first written to the outbox folder as one `.eml` file
(temp file, fsync, rename), so a crash never leaves half a message there and a
copy exists whatever the mail server does. Without `smtp` the outbox is the
hand-off point to whatever delivers mail on the box; with `smtp` the message is
also sent at once and the outbox is a record.

Settings: `from_address` (default `edgefleet@localhost`), `allowed_recipient_domains`
(exact domains; when set, any other recipient is refused), `max_recipients` (10),
`outbox` (default `<data_dir>/tools/outbox`), `smtp: {host, port, starttls, username,
password_env, timeout}`. The SMTP password is read from the environment variable
named by `password_env`, when sending, and is never logged.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import smtplib
import socket
import ssl
import tempfile
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from node_agent.errors import ToolConfigError, ToolError
from node_agent.tools.authoring import data_path, parse_settings, tool_function
from node_agent.tools.base import Tool, ToolContext, ToolFunction

log = logging.getLogger(__name__)

DEFAULT_FROM = "edgefleet@localhost"
MAX_SUBJECT_CHARS = 200
MAX_BODY_CHARS = 20_000

# Deliberately narrower than RFC 5322 (no quoted local parts, comments or IP literals):
# what a model writes should be a plain address, and anything odd is more likely a mistake.
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_DOMAIN = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
_ADDRESS = re.compile(rf"({_ATOM}(?:\.{_ATOM})*)@({_DOMAIN.pattern})")


def check_address(text: str) -> str:
    """`text` if it is a plain address like `name@example.org`; ValueError otherwise."""
    match = _ADDRESS.fullmatch(text)
    if match is None or len(text) > 254 or len(match.group(1)) > 64:
        raise ValueError(f"{text[:80]!r} is not an email address like name@example.org")
    return text


def _domain(address: str) -> str:
    return address.rpartition("@")[2].lower()


class _Smtp(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    host: str = Field(min_length=1)
    port: int | None = Field(None, ge=1, le=65535)
    """Default 587 with STARTTLS, 25 without."""
    starttls: bool = True
    username: str | None = None
    password_env: str | None = None
    timeout: float = Field(30.0, gt=0, le=300)

    @model_validator(mode="after")
    def _login_pair(self) -> _Smtp:
        if (self.username is None) != (self.password_env is None):
            raise ValueError("set both username and password_env, or neither")
        return self


class _Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    from_address: str = DEFAULT_FROM
    allowed_recipient_domains: list[str] | None = Field(None, min_length=1)
    max_recipients: int = Field(10, ge=1, le=100)
    outbox: str | None = None
    smtp: _Smtp | None = None

    @field_validator("from_address")
    @classmethod
    def _from(cls, value: str) -> str:
        return check_address(value)

    @field_validator("allowed_recipient_domains")
    @classmethod
    def _domains(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        domains = [d.strip().lstrip("@").lower() for d in value]
        for domain in domains:
            if not _DOMAIN.fullmatch(domain):
                raise ValueError(f"{domain!r} is not a domain name")
        return domains


class EmailTool(Tool):
    """Writes each message to the outbox and, when `smtp` is set, sends it."""

    name = "email"
    description = "Send email messages (kept in a local outbox; sent by SMTP when configured)."
    network = True

    def __init__(self, config: Mapping[str, Any], context: ToolContext) -> None:
        """Validate the settings, including that the SMTP password variable is set."""
        super().__init__(config, context)
        self.settings = parse_settings(_Settings, self.name, config)
        self.outbox: Path = data_path(context, self.settings.outbox, "outbox")
        smtp = self.settings.smtp
        if smtp is not None and smtp.password_env and smtp.password_env not in os.environ:
            raise ToolConfigError(
                f"tool_config.email.smtp.password_env: environment variable "
                f"{smtp.password_env} is not set on this node"
            )

    def functions(self) -> list[ToolFunction]:
        """`email_send`."""
        allowed = self.settings.allowed_recipient_domains
        return [
            tool_function(
                name="email_send",
                description=(
                    "Send a plain-text email."
                    + (f" Recipients must be at: {', '.join(allowed)}." if allowed else "")
                ),
                parameters={
                    "type": "object",
                    "properties": {
                        "to": {
                            "type": "array",
                            "items": {"type": "string", "minLength": 3, "maxLength": 254},
                            "minItems": 1,
                            "maxItems": self.settings.max_recipients,
                            "description": "Recipient addresses, e.g. name@example.org",
                        },
                        "subject": {
                            "type": "string",
                            "minLength": 1,
                            "maxLength": MAX_SUBJECT_CHARS,
                        },
                        "body": {"type": "string", "maxLength": MAX_BODY_CHARS},
                    },
                    "required": ["to", "subject", "body"],
                    "additionalProperties": False,
                },
                side_effects=True,
                run=self._send_call,
            )
        ]

    async def _send_call(self, arguments: dict[str, Any]) -> str:
        recipients = self._recipients(arguments["to"])
        subject = " ".join(arguments["subject"].split())
        if not subject:
            raise ToolError("`subject` is empty")
        message = self.compose(recipients, subject, arguments["body"])
        path = await asyncio.to_thread(self._write, message)
        where = {
            "agent": self.context.agent,
            "message_id": message["Message-ID"],
            "file": path.name,
        }
        result: dict[str, Any] = {"message_id": message["Message-ID"], "to": recipients}
        if self.settings.smtp is None:
            log.info("email saved to outbox", extra=where)
            return json.dumps({"status": "saved to outbox", **result}, separators=(",", ":"))
        refused = await asyncio.to_thread(self._send, self.settings.smtp, message, recipients)
        log.info("email sent", extra={**where, "refused": len(refused)})
        if refused:
            result["refused_by_server"] = sorted(refused)
        return json.dumps({"status": "sent", **result}, separators=(",", ":"))

    def _recipients(self, given: list[str]) -> list[str]:
        recipients = list(dict.fromkeys(address.strip() for address in given))
        if len(recipients) > self.settings.max_recipients:
            raise ToolError(f"at most {self.settings.max_recipients} recipients per message")
        for address in recipients:
            try:
                check_address(address)
            except ValueError as exc:
                raise ToolError(str(exc)) from None
        allowed = self.settings.allowed_recipient_domains
        if allowed is not None:
            outside = [a for a in recipients if _domain(a) not in allowed]
            if outside:
                log.warning(
                    "email recipients refused",
                    extra={"agent": self.context.agent, "domains": sorted(map(_domain, outside))},
                )
                raise ToolError(
                    f"not allowed to send to {', '.join(outside)}; "
                    f"recipients must be at: {', '.join(allowed)}"
                )
        return recipients

    def compose(self, recipients: list[str], subject: str, body: str) -> EmailMessage:
        """The message as it is written and sent."""
        sender = self.settings.from_address
        message = EmailMessage()
        message["From"] = sender
        message["To"] = ", ".join(recipients)
        message["Subject"] = subject
        message["Date"] = format_datetime(datetime.now(UTC))
        # An explicit domain spares make_msgid a DNS lookup, which can hang offline.
        message["Message-ID"] = make_msgid(domain=_domain(sender))
        message["X-EdgeFleet-Agent"] = self.context.agent
        message.set_content(body)
        return message

    def _write(self, message: EmailMessage) -> Path:
        try:
            self.outbox.mkdir(parents=True, exist_ok=True)
            stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
            final = self.outbox / f"{stamp}-{uuid.uuid4().hex[:12]}.eml"
            # A dot-name that does not end in .eml: outbox readers never see a partial file.
            fd, temp = tempfile.mkstemp(prefix=".", suffix=".tmp", dir=self.outbox)
            try:
                with os.fdopen(fd, "wb") as handle:
                    handle.write(message.as_bytes())
                    handle.flush()
                    os.fsync(handle.fileno())
                os.replace(temp, final)
            except BaseException:
                Path(temp).unlink(missing_ok=True)
                raise
            folder = os.open(self.outbox, os.O_RDONLY)
            try:
                os.fsync(folder)
            finally:
                os.close(folder)
        except OSError as exc:
            log.error(
                "cannot write to the email outbox",
                extra={"agent": self.context.agent, "path": str(self.outbox), "error": str(exc)},
            )
            raise ToolError("email is not available right now; the message was not sent") from None
        return final

    def _send(self, smtp: _Smtp, message: EmailMessage, recipients: list[str]) -> dict[str, Any]:
        """Send over SMTP (blocking); the recipients the server refused, if some were accepted."""
        port = smtp.port or (587 if smtp.starttls else 25)
        try:
            # gethostname, not the default getfqdn: no DNS lookup that could stall offline.
            with smtplib.SMTP(
                smtp.host, port, timeout=smtp.timeout, local_hostname=socket.gethostname()
            ) as client:
                client.ehlo()
                if smtp.starttls:
                    client.starttls(context=ssl.create_default_context())
                    client.ehlo()
                if smtp.username and smtp.password_env:
                    client.login(smtp.username, os.environ.get(smtp.password_env, ""))
                refused: dict[str, Any] = client.send_message(
                    message, from_addr=self.settings.from_address, to_addrs=recipients
                )
                return refused
        except (smtplib.SMTPException, OSError) as exc:
            reason = _smtp_reason(exc)
            log.error(
                "email not sent",
                extra={
                    "agent": self.context.agent,
                    "message_id": message["Message-ID"],
                    "host": smtp.host,
                    "port": port,
                    "reason": reason,
                    "error": repr(exc),
                },
            )
            raise ToolError(
                f"the message was not sent ({reason}); it is kept in the outbox for the "
                "operator, so do not send it again"
            ) from None


def _smtp_reason(exc: Exception) -> str:
    """A short reason for the model; the full error goes to the log only."""
    if isinstance(exc, smtplib.SMTPAuthenticationError):
        return "the mail server refused the login"
    if isinstance(exc, smtplib.SMTPNotSupportedError):
        return "the mail server does not support a required feature (STARTTLS or login)"
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        return "the mail server refused every recipient"
    if isinstance(exc, smtplib.SMTPSenderRefused):
        return "the mail server refused the sender address"
    if isinstance(exc, smtplib.SMTPResponseException):
        return f"the mail server answered {exc.smtp_code}"
    if isinstance(exc, ssl.SSLError):
        return "the secure connection to the mail server failed"
    return "the mail server could not be reached"
