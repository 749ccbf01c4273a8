"""``CoalescingTransport`` sends a response's head and body in one write, and never holds a
write past the event loop's next turn."""

from __future__ import annotations

import asyncio
from typing import Any

from meterd.api.http_protocol import CoalescingTransport


class RecordingTransport:
    def __init__(self) -> None:
        self.calls: list[Any] = []

    def write(self, data: bytes) -> None:
        self.calls.append(("write", bytes(data)))

    def close(self) -> None:
        self.calls.append("close")

    def abort(self) -> None:
        self.calls.append("abort")

    def is_closing(self) -> bool:
        return False


def run(body: Any) -> list[Any]:
    async def main() -> list[Any]:
        inner = RecordingTransport()
        await body(CoalescingTransport(inner, asyncio.get_running_loop()))  # type: ignore[arg-type]
        await asyncio.sleep(0)
        return inner.calls

    return asyncio.run(main())


def test_a_head_and_its_body_are_one_write() -> None:
    async def body(transport: CoalescingTransport) -> None:
        transport.write(b"HTTP/1.1 200 OK\r\n\r\n")
        transport.write(b"{}")

    assert run(body) == [("write", b"HTTP/1.1 200 OK\r\n\r\n{}")]


def test_a_lone_write_goes_out_on_the_next_turn_of_the_loop() -> None:
    async def body(transport: CoalescingTransport) -> None:
        transport.write(b"head")
        assert transport._transport.calls == []  # type: ignore[attr-defined]
        await asyncio.sleep(0)
        assert transport._transport.calls == [("write", b"head")]  # type: ignore[attr-defined]
        transport.write(b"chunk 1")
        transport.write(b"chunk 2")
        transport.write(b"chunk 3")

    assert run(body) == [("write", b"head"), ("write", b"chunk 1chunk 2"), ("write", b"chunk 3")]


def test_close_sends_what_is_held_first_and_abort_drops_it() -> None:
    async def closing(transport: CoalescingTransport) -> None:
        transport.write(b"bye")
        transport.close()

    async def aborting(transport: CoalescingTransport) -> None:
        transport.write(b"lost")
        transport.abort()

    assert run(closing) == [("write", b"bye"), "close"]
    assert run(aborting) == ["abort"]


def test_everything_else_is_the_transport_s() -> None:
    async def body(transport: CoalescingTransport) -> None:
        assert transport.is_closing() is False

    assert run(body) == []
