"""A fault-injecting TCP proxy on loopback, between the agent and the
simulator, for what the simulator cannot do by itself: cut a request half
way through its upload, and aim one of the simulator's fault switches at
exactly the n-th request of a given kind in the middle of a sync."""

from __future__ import annotations

import socket
import struct
import threading
from dataclasses import dataclass
from typing import Callable

CUT = "cut"  # forward half the request, then reset both connections


@dataclass
class Rule:
    marker: bytes  # in the request's body, e.g. b"wsfunction=tool_mobile_call_external_functions"
    nth: int  # 1-based, among the requests with the marker
    action: Callable[[], None] | str  # CUT, or run just before the request goes on
    seen: int = 0
    fired: bool = False


def _reset(sock: socket.socket) -> None:
    """Close with an RST, the way a dropped link or a killed proxy looks."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    sock.close()


class Proxy:
    def __init__(self, upstream_url: str):
        host, port = upstream_url.split("//", 1)[1].rsplit(":", 1)
        self.upstream = (host, int(port))
        self.server = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.server.getsockname()[1]}"
        self.rules: list[Rule] = []
        self.lock = threading.Lock()
        self.requests = 0
        self._stopped = False
        threading.Thread(target=self._accept, daemon=True).start()

    def on(self, marker: str, nth: int, action: Callable[[], None] | str) -> Rule:
        rule = Rule(marker.encode(), nth, action)
        with self.lock:
            self.rules.append(rule)
        return rule

    def stop(self) -> None:
        self._stopped = True
        self.server.close()

    # -- plumbing ------------------------------------------------------------

    def _accept(self) -> None:
        while not self._stopped:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        upstream = socket.create_connection(self.upstream)
        threading.Thread(target=self._answers, args=(upstream, client), daemon=True).start()
        buffer = b""
        try:
            while True:
                request, buffer = self._read_request(client, buffer)
                if request is None:
                    break
                action = self._match(request)
                if action == CUT:
                    upstream.sendall(request[: len(request) // 2])
                    _reset(upstream)
                    _reset(client)
                    return
                if action is not None:
                    action()
                upstream.sendall(request)
        except OSError:
            pass
        for sock in (upstream, client):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _answers(self, upstream: socket.socket, client: socket.socket) -> None:
        """Bytes back as they come; a reset from the server is passed on as one."""
        try:
            while True:
                data = upstream.recv(65536)
                if not data:
                    client.shutdown(socket.SHUT_WR)
                    return
                client.sendall(data)
        except ConnectionResetError:
            _reset(client)
        except OSError:
            pass

    @staticmethod
    def _read_request(sock: socket.socket, buffer: bytes) -> tuple[bytes | None, bytes]:
        while b"\r\n\r\n" not in buffer:
            data = sock.recv(65536)
            if not data:
                return None, b""
            buffer += data
        head, _, rest = buffer.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value.strip())
        while len(rest) < length:
            data = sock.recv(65536)
            if not data:
                return None, b""
            rest += data
        return head + b"\r\n\r\n" + rest[:length], rest[length:]

    def _match(self, request: bytes) -> Callable[[], None] | str | None:
        with self.lock:
            self.requests += 1
            for rule in self.rules:
                if rule.fired or rule.marker not in request:
                    continue
                rule.seen += 1
                if rule.seen == rule.nth:
                    rule.fired = True
                    return rule.action
        return None
