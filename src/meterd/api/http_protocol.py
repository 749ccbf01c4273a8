"""uvicorn's httptools protocol, writing each answer's head and body in one socket write.

uvicorn writes a response's head when the app sends ``http.response.start`` and its body on
``http.response.body``: two ``send()`` system calls for every answer, each made while holding
the GIL. On the meter event stream the event loop's time is what bounds throughput, and those
writes were 7-13% of it (py-spy). :class:`CoalescingTransport` holds a write back until the
next one and sends both together; whatever is still held when the event loop next turns is
sent then, so a streamed or head-only answer is never delayed beyond the current callback.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class CoalescingTransport:
    """A transport whose first write waits for the second (or for the loop's next turn)."""

    __slots__ = ("_held", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: bytes | None = None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        held = self._held
        if held is None:
            self._held = bytes(data)
            self._loop.call_soon(self._flush)
        else:
            self._held = None
            self._transport.write(held + data)

    def _flush(self) -> None:
        held = self._held
        if held is not None:
            self._held = None
            self._transport.write(held)

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def write_eof(self) -> None:
        self._flush()
        self._transport.write_eof()

    def abort(self) -> None:
        self._held = None
        self._transport.abort()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class CoalescingHttpToolsProtocol(HttpToolsProtocol):
    """:class:`HttpToolsProtocol` on a :class:`CoalescingTransport`."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """uvloop's transports are not :class:`asyncio.Transport` subclasses, only alike."""
        super().connection_made(CoalescingTransport(transport, self.loop))  # type: ignore[arg-type]
