"""The email tool: real .eml files in the outbox, and real SMTP to a local responder."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, TypeVar

import pytest

from node_agent.errors import ToolConfigError, ToolError
from node_agent.tools.base import ToolContext
from node_agent.tools.email import EmailTool

T = TypeVar("T")
PASSWORD = "s3cret-Pa55"


@pytest.fixture
def context(tmp_path: Path) -> ToolContext:
    return ToolContext(data_dir=tmp_path, agent="notifier")


def send(tool: EmailTool, **arguments: Any) -> Any:
    return json.loads(asyncio.run(send_async(tool, **arguments)))


async def send_async(tool: EmailTool, **arguments: Any) -> str:
    (fn,) = tool.functions()
    return await fn.call(arguments)


def outbox_files(tool: EmailTool) -> list[Path]:
    return sorted(tool.outbox.iterdir()) if tool.outbox.exists() else []


def parse(path: Path) -> EmailMessage:
    message = BytesParser(policy=policy.default).parsebytes(path.read_bytes())
    assert isinstance(message, EmailMessage)
    return message


def test_a_message_is_written_to_the_outbox_as_rfc5322(context: ToolContext) -> None:
    tool = EmailTool({"from_address": "desk@clinic.example"}, context)
    result = send(
        tool,
        to=["ada@clinic.example", "bob@example.org", "ada@clinic.example"],
        subject="Your appointment",
        body="See you on Monday at 09:00.\nÀ bientôt.",
    )
    (path,) = outbox_files(tool)
    assert path.parent == context.data_dir / "tools" / "outbox"
    assert path.suffix == ".eml"
    message = parse(path)
    assert message["From"] == "desk@clinic.example"
    assert message["To"] == "ada@clinic.example, bob@example.org"
    assert message["Subject"] == "Your appointment"
    assert message["Message-ID"] == result["message_id"]
    assert message["Message-ID"].endswith("@clinic.example>")
    assert message["X-EdgeFleet-Agent"] == "notifier"
    sent_at = parsedate_to_datetime(message["Date"])
    assert abs((datetime.now(UTC) - sent_at).total_seconds()) < 60
    body = message.get_body()
    assert body is not None
    assert body.get_content() == "See you on Monday at 09:00.\nÀ bientôt.\n"
    assert result == {
        "status": "saved to outbox",
        "message_id": message["Message-ID"],
        "to": ["ada@clinic.example", "bob@example.org"],
    }


def test_each_message_gets_its_own_file_and_no_temp_files_remain(context: ToolContext) -> None:
    tool = EmailTool({"outbox": "mail/out"}, context)

    async def three() -> list[str]:
        return await asyncio.gather(
            *(send_async(tool, to=["a@b.example"], subject=f"n{i}", body="") for i in range(3))
        )

    ids = {json.loads(r)["message_id"] for r in asyncio.run(three())}
    files = outbox_files(tool)
    assert tool.outbox == context.data_dir / "mail" / "out"
    assert len(ids) == len(files) == 3
    assert all(p.suffix == ".eml" and not p.name.startswith(".") for p in files)
    assert {parse(p)["Message-ID"] for p in files} == ids
    assert parse(files[0])["From"] == "edgefleet@localhost"


def test_recipients_outside_the_allowed_domains_are_refused(
    context: ToolContext, caplog: pytest.LogCaptureFixture
) -> None:
    tool = EmailTool({"allowed_recipient_domains": ["clinic.example", "@Lab.Example"]}, context)
    refusal = r"not allowed to send to eve@evil\.example; recipients must be at: clinic\.example, "
    with (
        caplog.at_level(logging.WARNING, logger="node_agent.tools.email"),
        pytest.raises(ToolError, match=refusal + r"lab\.example"),
    ):
        send(tool, to=["ada@clinic.example", "eve@evil.example"], subject="s", body="b")
    assert outbox_files(tool) == []
    assert caplog.records[0].__dict__["domains"] == ["evil.example"]
    # Exact domains only: a subdomain is another domain.
    with pytest.raises(ToolError, match="not allowed"):
        send(tool, to=["x@mail.clinic.example"], subject="s", body="b")
    assert send(tool, to=["Ada@CLINIC.example", "lab@lab.example"], subject="s", body="b")
    assert "clinic.example, lab.example" in tool.functions()[0].description


@pytest.mark.parametrize(
    "address",
    [
        "Ada <ada@clinic.example>",
        "ada",
        "ada@",
        "@clinic.example",
        "ada@clinic..example",
        "ada.@clinic.example",
        "ada@-clinic.example",
        "ada@clinic.example\nBcc: eve@evil.example",
        "ada@clinic.example, eve@evil.example",
        "a" * 65 + "@clinic.example",
    ],
)
def test_malformed_addresses_are_refused(context: ToolContext, address: str) -> None:
    tool = EmailTool({}, context)
    with pytest.raises(ToolError, match=r"is not an email address like name@example\.org"):
        send(tool, to=[address], subject="s", body="b")
    assert outbox_files(tool) == []


def test_a_subject_cannot_inject_headers(context: ToolContext) -> None:
    tool = EmailTool({}, context)
    send(tool, to=["a@b.example"], subject="Hello\r\nBcc: eve@evil.example", body="b")
    message = parse(outbox_files(tool)[0])
    assert message["Subject"] == "Hello Bcc: eve@evil.example"
    assert message["Bcc"] is None


def test_the_recipient_limit_holds(context: ToolContext) -> None:
    tool = EmailTool({"max_recipients": 2}, context)
    with pytest.raises(ToolError, match=r"argument `to`: .* is too long"):
        send(tool, to=["a@b.example", "c@b.example", "d@b.example"], subject="s", body="b")
    assert tool.functions()[0].parameters["properties"]["to"]["maxItems"] == 2


@pytest.mark.parametrize(
    ("config", "setting"),
    [
        ({"from_address": "Desk <desk@clinic.example>"}, "from_address"),
        ({"allowed_recipient_domains": []}, "allowed_recipient_domains"),
        ({"allowed_recipient_domains": ["not a domain"]}, "allowed_recipient_domains"),
        ({"max_recipients": 0}, "max_recipients"),
        ({"smtp": {"port": 25}}, "smtp.host"),
        ({"smtp": {"host": "h", "username": "u"}}, "smtp"),
        ({"smtp": {"host": "h", "tls": True}}, "smtp.tls"),
        ({"smtp": {"host": "h", "username": "u", "password_env": "EDGEFLEET_UNSET_X"}}, "smtp"),
    ],
)
def test_bad_settings_name_the_setting(
    context: ToolContext, config: dict[str, Any], setting: str
) -> None:
    with pytest.raises(ToolConfigError, match=rf"tool_config\.email\.{setting}\b"):
        EmailTool(config, context)


# --- a minimal SMTP responder on 127.0.0.1 ---------------------------------------------------


@dataclass
class Mailbox:
    """What the responder accepted, and how it behaves."""

    require_auth: bool = False
    refuse: set[str] = field(default_factory=set)
    logins: list[tuple[str, str]] = field(default_factory=list)
    envelopes: list[tuple[str, list[str], bytes]] = field(default_factory=list)


async def serve_smtp(mailbox: Mailbox) -> asyncio.Server:
    """Enough of RFC 5321 for smtplib: EHLO, AUTH PLAIN, MAIL, RCPT, DATA, RSET, NOOP, QUIT."""

    async def session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        def reply(line: str) -> None:
            writer.write(line.encode() + b"\r\n")

        reply("220 localhost test SMTP")
        sender, recipients, authed = "", list[str](), False
        while line := (await reader.readline()).decode().rstrip("\r\n"):
            verb, _, rest = line.partition(" ")
            verb = verb.upper()
            if verb in ("EHLO", "HELO"):
                reply("250-localhost\r\n250-AUTH PLAIN\r\n250 8BITMIME")
            elif verb == "AUTH":
                _, username, password = base64.b64decode(rest.split()[1]).decode().split("\0")
                mailbox.logins.append((username, password))
                authed = password == PASSWORD
                reply("235 ok" if authed else "535 5.7.8 bad credentials")
            elif verb == "MAIL":
                if mailbox.require_auth and not authed:
                    reply("530 5.7.0 authentication required")
                    continue
                sender, recipients = rest.split(":", 1)[1].strip("<> "), []
                reply("250 ok")
            elif verb == "RCPT":
                rcpt = rest.split(":", 1)[1].strip("<> ")
                if rcpt in mailbox.refuse:
                    reply("550 5.1.1 no such user")
                else:
                    recipients.append(rcpt)
                    reply("250 ok")
            elif verb == "DATA":
                reply("354 go ahead")
                lines = []
                while (data := await reader.readline()) != b".\r\n":
                    lines.append(data[1:] if data.startswith(b"..") else data)
                mailbox.envelopes.append((sender, recipients, b"".join(lines)))
                reply("250 queued")
            elif verb in ("RSET", "NOOP"):
                reply("250 ok")
            elif verb == "QUIT":
                reply("221 bye")
                break
            else:
                reply("502 not implemented")
            await writer.drain()
        await writer.drain()
        writer.close()

    return await asyncio.start_server(session, "127.0.0.1", 0)


def with_smtp(mailbox: Mailbox, use: Callable[[int], Awaitable[T]]) -> T:
    async def scenario() -> T:
        server = await serve_smtp(mailbox)
        async with server:
            port = server.sockets[0].getsockname()[1]
            return await use(port)

    return asyncio.run(scenario())


def smtp_tool(context: ToolContext, port: int, **smtp: Any) -> EmailTool:
    settings = {"host": "127.0.0.1", "port": port, "starttls": False, "timeout": 5, **smtp}
    return EmailTool({"from_address": "desk@clinic.example", "smtp": settings}, context)


def test_a_message_is_sent_over_smtp_and_kept_in_the_outbox(context: ToolContext) -> None:
    mailbox = Mailbox()

    async def use(port: int) -> str:
        tool = smtp_tool(context, port)
        return await send_async(tool, to=["ada@clinic.example"], subject="Hi", body="Body")

    result = json.loads(with_smtp(mailbox, use))
    assert result["status"] == "sent"
    ((sender, recipients, data),) = mailbox.envelopes
    assert (sender, recipients) == ("desk@clinic.example", ["ada@clinic.example"])
    received = BytesParser(policy=policy.default).parsebytes(data)
    (kept,) = (context.data_dir / "tools" / "outbox").iterdir()
    assert received["Message-ID"] == parse(kept)["Message-ID"] == result["message_id"]
    assert received["Subject"] == "Hi"


def test_smtp_login_uses_the_password_from_the_environment_and_never_logs_it(
    context: ToolContext, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("EDGEFLEET_TEST_SMTP_PASSWORD", PASSWORD)
    mailbox = Mailbox(require_auth=True)

    async def use(port: int) -> str:
        tool = smtp_tool(
            context, port, username="desk", password_env="EDGEFLEET_TEST_SMTP_PASSWORD"
        )
        return await send_async(tool, to=["ada@clinic.example"], subject="s", body="b")

    with caplog.at_level(logging.DEBUG):
        result = with_smtp(mailbox, use)
    assert mailbox.logins == [("desk", PASSWORD)]
    assert len(mailbox.envelopes) == 1
    assert PASSWORD not in result
    logged = " ".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    assert "email sent" in logged
    assert PASSWORD not in logged


def test_a_refused_login_is_reported_and_the_message_kept(
    context: ToolContext, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("EDGEFLEET_TEST_SMTP_PASSWORD", "wrong")
    mailbox = Mailbox(require_auth=True)

    async def use(port: int) -> str:
        tool = smtp_tool(
            context, port, username="desk", password_env="EDGEFLEET_TEST_SMTP_PASSWORD"
        )
        return await send_async(tool, to=["ada@clinic.example"], subject="s", body="b")

    with pytest.raises(ToolError, match=r"not sent \(the mail server refused the login\).*outbox"):
        with_smtp(mailbox, use)
    assert mailbox.envelopes == []
    assert len(list((context.data_dir / "tools" / "outbox").iterdir())) == 1
    assert "wrong" not in " ".join(str(r.__dict__) for r in caplog.records)


def test_recipients_the_server_refuses_are_reported(context: ToolContext) -> None:
    mailbox = Mailbox(refuse={"gone@clinic.example"})

    async def some(port: int) -> str:
        tool = smtp_tool(context, port)
        return await send_async(
            tool, to=["ada@clinic.example", "gone@clinic.example"], subject="s", body="b"
        )

    result = json.loads(with_smtp(mailbox, some))
    assert result["status"] == "sent"
    assert result["refused_by_server"] == ["gone@clinic.example"]
    assert mailbox.envelopes[0][1] == ["ada@clinic.example"]

    async def every(port: int) -> str:
        tool = smtp_tool(context, port)
        return await send_async(tool, to=["gone@clinic.example"], subject="s", body="b")

    with pytest.raises(ToolError, match="refused every recipient"):
        with_smtp(mailbox, every)


def test_starttls_is_required_when_configured(context: ToolContext) -> None:
    async def use(port: int) -> str:
        tool = smtp_tool(context, port, starttls=True)
        return await send_async(tool, to=["ada@clinic.example"], subject="s", body="b")

    mailbox = Mailbox()
    with pytest.raises(ToolError, match="does not support a required feature"):
        with_smtp(mailbox, use)
    assert mailbox.envelopes == []


def test_an_unreachable_server_is_reported(context: ToolContext) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    tool = smtp_tool(context, port)
    with pytest.raises(ToolError, match=r"could not be reached.*do not send it again"):
        send(tool, to=["ada@clinic.example"], subject="s", body="b")
    assert len(outbox_files(tool)) == 1
