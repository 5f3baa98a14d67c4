"""uvicorn's h11 protocol with a watchdog on slow and stalled clients, and fair use of connection slots.

uvicorn itself times out only idle keep-alive connections: a client that opens a connection and sends
its headers a byte at a time holds a slot for ever, and enough of them make every other request 503.
Here each connection must deliver its request headers within `header_timeout` seconds (else 408 and
closed), a body the app answered without reading is not kept open by trickling more of it, and when
every slot is taken a new connection makes room by closing the connection that is wasting one the most
(stalled headers first, then the slowest body upload, then idle keep-alive) instead of being refused.

Request bodies that the app reads are paced by `middleware.MinUploadRateMiddleware`.
"""

from __future__ import annotations

import logging

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from ferkit.apps.web.errors import error_bytes

log = logging.getLogger("ferkit.web")
SLOW_AFTER_S = 0.25  # an upload is judged by its rate once it has run this long


def _raw_error(status: int, reason: str, detail: str, code: str) -> bytes:
    body = error_bytes(status, detail, code)
    return (f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
            "connection: close\r\n\r\n").encode() + body


class GuardedH11Protocol(H11Protocol):
    # set by `guarded_protocol()` from the server's settings
    header_timeout = 10.0
    min_rate = 32 * 1024.0
    max_connections = 200

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._timer = None
        self._start_waiting("headers")  # a client that connects and sends nothing is cut off as well
        if len(self.connections) > self.max_connections:
            self._make_room()

    # -- phases: idle (keep-alive) -> headers -> body -> busy (the app has the whole request) -> idle ...
    def _start_waiting(self, phase: str) -> None:
        self._phase, self._since, self._got = phase, self.loop.time(), 0
        self._cancel_timer()
        if phase == "headers":
            self._timer = self.loop.call_later(self.header_timeout, self._headers_overdue)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def data_received(self, data: bytes) -> None:
        if self._phase == "idle":
            self._start_waiting("headers")
        super().data_received(data)
        self._got += len(data)
        state = self.conn.their_state
        if self._phase == "headers" and state is not h11.IDLE:
            self._start_waiting("body" if state is h11.SEND_BODY else "busy")
        elif self._phase == "body" and state is not h11.SEND_BODY:
            # IDLE: the app had answered early and the unwanted rest of the body is in: keep-alive idle
            self._phase = "idle" if state is h11.IDLE else "busy"

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.transport.is_closing():
            return
        if self.conn.their_state is h11.SEND_BODY:  # answered before the body was read: let it end, not linger
            self._cancel_timer()
            self._timer = self.loop.call_later(self.timeout_keep_alive, self._close_quietly)
        elif self.conn.their_state is h11.IDLE and self._phase != "headers":
            self._cancel_timer()
            self._phase, self._since = "idle", self.loop.time()

    def connection_lost(self, exc) -> None:
        self._cancel_timer()
        super().connection_lost(exc)

    # -- cutting off -----------------------------------------------------------------------------------
    def _headers_overdue(self) -> None:
        self._timer = None
        if self._phase == "headers" and not self.transport.is_closing():
            who = f"{self.client[0]}:{self.client[1]}" if self.client else "a client"
            log.info("%s sent no complete request within %g s; connection closed", who, self.header_timeout)
            self._close_with_408(f"the request headers did not arrive within {self.header_timeout:g} s")

    def _close_with_408(self, detail: str) -> None:
        self.transport.write(_raw_error(408, "Request Timeout", detail, "request_timeout"))
        self._close_quietly()

    def _close_quietly(self) -> None:
        self._timer = None
        # out of the count at once (uvicorn drops it only when the close completes): a request parsed
        # meanwhile must not be refused for a slot that is being freed
        self.connections.discard(self)
        if not self.transport.is_closing():
            if self.conn.our_state not in (h11.ERROR, h11.CLOSED):
                try:
                    self.conn.send(h11.ConnectionClosed())
                except h11.LocalProtocolError:
                    pass
            self.transport.close()

    def waste(self, now: float) -> tuple[int, float] | None:
        """How much this connection wastes its slot, for choosing which to close (None: it is working)."""
        age = now - self._since
        if self.transport.is_closing():
            return None
        if self._phase == "headers":  # the oldest first: a visitor's request arrives whole, at once
            return (3, age)
        if self._phase == "body" and age > SLOW_AFTER_S and not self.flow.read_paused \
                and self._got / age < self.min_rate:
            return (2, age / max(self._got, 1))
        if self._phase == "idle":  # a client between requests: it reconnects at no loss when it needs to
            return (1, age)
        return None

    def _make_room(self) -> None:
        now = self.loop.time()
        scored = [(w, c) for c in self.connections if c is not self and isinstance(c, GuardedH11Protocol)
                  and (w := c.waste(now)) is not None]
        excess = len(self.connections) - self.max_connections
        for _, victim in sorted(scored, key=lambda x: x[0], reverse=True)[:excess]:
            if victim._phase == "idle":
                victim._close_quietly()
            else:
                who = f"{victim.client[0]}:{victim.client[1]}" if victim.client else "a client"
                log.info("%s: closing a stalled connection (%s) to make room for a new one", who, victim._phase)
                if victim._phase == "headers":
                    victim._close_with_408("the server needed this connection's slot: the request was too slow")
                else:
                    victim._close_quietly()


def guarded_protocol(header_timeout: float, min_rate: float, max_connections: int) -> type[GuardedH11Protocol]:
    """A GuardedH11Protocol class with these limits (uvicorn builds one instance per connection)."""
    return type("GuardedH11Protocol", (GuardedH11Protocol,), {
        "header_timeout": float(header_timeout), "min_rate": float(min_rate), "max_connections": int(max_connections)})
