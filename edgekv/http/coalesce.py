"""One write per answer on the door's connections: what a response writes in one turn of the loop.

uvicorn writes a response's head when the application sends
``http.response.start`` and its body on ``http.response.body``: two
``send()`` syscalls and, with TCP_NODELAY (uvloop's default), two segments, so
the client wakes for the head and again for the body. :class:`CoalescingTransport`
holds what is written during one turn of the event loop and writes it at the
end of that turn (``call_soon``) as one buffer: one syscall, one segment, one
wake-up for a small answer. Nothing waits longer than the current turn, and
``close()`` writes what is held first; ``abort()`` drops it, as the transport
would. :meth:`write_now` writes a whole answer at once (edgekv/http/direct.py).
"""

from __future__ import annotations

import asyncio
from typing import Any


class CoalescingTransport:
    """``transport`` with its writes of one loop turn joined. Used from the loop only."""

    __slots__ = ("_held", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: list[bytes] = []

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not data:
            return
        if not self._held:
            self._loop.call_soon(self._flush)
        self._held.append(bytes(data))

    def write_now(self, data: bytes) -> None:
        """Write ``data`` at once, after anything held, in one write (a whole answer
        that is complete now: holding it to the end of the turn gains nothing)."""
        if self._held:
            self._held.append(data)
            self._flush()
        elif not self._transport.is_closing():
            self._transport.write(data)

    def writelines(self, chunks: Any) -> None:
        for chunk in chunks:
            self.write(chunk)

    def _flush(self) -> None:
        held = self._held
        if not held:
            return
        self._held = []
        if not self._transport.is_closing():
            self._transport.write(held[0] if len(held) == 1 else b"".join(held))

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def abort(self) -> None:
        self._held = []
        self._transport.abort()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + sum(map(len, self._held))

    def __getattr__(self, name: str) -> Any:
        # get_extra_info, pause_reading, resume_reading, set_protocol, ...
        return getattr(self._transport, name)


__all__ = ["CoalescingTransport"]
