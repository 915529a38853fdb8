"""
A small fault-injecting HTTP proxy between the gateway and a real S3.

Each request is relayed unchanged (the C{Host} header too, so SigV4
signatures still verify upstream) unless a rule matches it.  A matching
rule's L{Fault} can delay the request, answer it with an S3 error, reset
the connection, or flip a byte of the body on its way upstream.  It runs
on threads in the test process; only integration tests use it.
"""

from __future__ import annotations

import http.client
import socket
import struct
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Union

from attrs import frozen


@frozen
class Fault:
    """
    What to do to a request.

    @ivar delay: seconds to wait before anything else.
    @ivar status: answer with this HTTP status and S3 error C{code}.
    @ivar code: the S3 error code for C{status}.
    @ivar reset: close the client's connection with a TCP reset instead
        of answering.
    @ivar corrupt: flip one byte of the body before relaying it.
    """

    delay: float = 0.0
    status: int | None = None
    code: str = "InternalError"
    reset: bool = False
    corrupt: bool = False

    @property
    def label(self) -> int | str:
        """
        @return: what the fault log records: the status, or the kind.
        """
        if self.reset:
            return "reset"
        if self.corrupt:
            return "corrupt"
        return self.status or "delay"


#: A rule: (method, path with query) -> a L{Fault}, a (status, S3 error
#: code) pair, or None to leave the request alone.
Rule = Callable[[str, str], Union[Fault, "tuple[int, str]", None]]


def once(rule: Rule) -> Rule:
    """
    @return: a rule that applies C{rule} to the first request it matches
        only.
    """
    lock = threading.Lock()
    fired = []

    def firstOnly(method: str, path: str) -> Fault | tuple[int, str] | None:
        with lock:
            if fired:
                return None
            fault = rule(method, path)
            if fault is not None:
                fired.append(fault)
            return fault

    return firstOnly


def isPart(method: str, path: str, number: int | None = None) -> bool:
    """
    @return: whether a request is an UploadPart (of part C{number}, if
        given).
    """
    if method != "PUT" or "uploadId=" not in path:
        return False
    return number is None or f"partNumber={number}&" in path + "&"


_HOP = {"connection", "keep-alive", "transfer-encoding", "expect", "proxy-connection"}


class FaultProxy:
    """
    Relay HTTP to C{upstreamPort} on loopback, failing what L{rules} say.

    @ivar port: the proxy's own port.
    @ivar rules: consulted in order for every request.
    @ivar faults: C{(method, path, label)} of each request a rule
        matched (see L{Fault.label}).
    @ivar requests: C{(method, path, headers)} of every request, headers
        with lower-case names.
    """

    def __init__(self, upstreamPort: int) -> None:
        self.rules: list[Rule] = []
        self.faults: list[tuple[str, str, int | str]] = []
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    chunks = []
                    while True:
                        size = int(self.rfile.readline().split(b";")[0], 16)
                        chunk = self.rfile.read(size + 2)[:size]
                        if size == 0:
                            while self.rfile.readline() not in (b"\r\n", b""):
                                pass
                            return b"".join(chunks)
                        chunks.append(chunk)
                return self.rfile.read(int(self.headers.get("Content-Length", 0)))

            def finish(self) -> None:
                try:
                    super().finish()
                except (OSError, ValueError):
                    pass  # the connection was reset on purpose

            def _fault(self) -> Fault | None:
                for rule in proxy.rules:
                    fault = rule(self.command, self.path)
                    if isinstance(fault, tuple):
                        fault = Fault(status=fault[0], code=fault[1])
                    if fault is not None:
                        proxy.faults.append((self.command, self.path, fault.label))
                        return fault
                return None

            def _relay(self) -> None:
                body = self._body()
                proxy.requests.append(
                    (self.command, self.path, {k.lower(): v for k, v in self.headers.items()})
                )
                fault = self._fault()
                if fault is not None:
                    time.sleep(fault.delay)
                    if fault.reset:
                        self.connection.setsockopt(
                            socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                        )
                        self.connection.close()
                        self.close_connection = True
                        return
                    if fault.status is not None:
                        payload = (
                            f"<?xml version='1.0' encoding='UTF-8'?><Error><Code>{fault.code}"
                            f"</Code><Message>injected</Message></Error>"
                        ).encode()
                        self.send_response(fault.status)
                        self.send_header("Content-Type", "application/xml")
                        self.send_header("Content-Length", str(len(payload)))
                        self.end_headers()
                        self.wfile.write(payload)
                        return
                    if fault.corrupt and body:
                        middle = len(body) // 2
                        body = body[:middle] + bytes([body[middle] ^ 0xFF]) + body[middle + 1 :]
                upstream = http.client.HTTPConnection("127.0.0.1", upstreamPort, timeout=60)
                try:
                    headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
                    if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                        headers.pop("Content-Length", None)
                    headers["Content-Length"] = str(len(body))
                    upstream.request(self.command, self.path, body=body, headers=headers)
                    response = upstream.getresponse()
                    data = response.read()
                    self.send_response(response.status, response.reason)
                    for k, v in response.getheaders():
                        if k.lower() not in _HOP and k.lower() != "content-length":
                            self.send_header(k, v)
                    # A HEAD reply has no body but the object's length.
                    length = response.getheader("Content-Length", "0")
                    self.send_header(
                        "Content-Length", length if self.command == "HEAD" else str(len(data))
                    )
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(data)
                finally:
                    upstream.close()

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _relay

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def endpointURL(self) -> str:
        """
        The URL to give the gateway as its S3 endpoint.
        """
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        """
        Stop serving.
        """
        self._server.shutdown()
        self._server.server_close()
