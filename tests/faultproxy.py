"""
A small fault-injecting HTTP proxy between the gateway and a real S3.

Each request is relayed unchanged (the C{Host} header too, so SigV4
signatures still verify upstream) unless a rule matches it, in which case
the proxy answers with an S3 error itself.  It runs on threads in the test
process; only integration tests use it.
"""

from __future__ import annotations

import http.client
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

#: A rule: (method, path with query) -> (status, S3 error code) or None.
Rule = Callable[[str, str], "tuple[int, str] | None"]

_HOP = {"connection", "keep-alive", "transfer-encoding", "expect", "proxy-connection"}


class FaultProxy:
    """
    Relay HTTP to C{upstreamPort} on loopback, failing what L{rules} say.

    @ivar port: the proxy's own port.
    @ivar rules: consulted in order for every request.
    @ivar faults: C{(method, path, status)} of each request failed.
    """

    def __init__(self, upstreamPort: int) -> None:
        self.rules: list[Rule] = []
        self.faults: list[tuple[str, str, int]] = []
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

            def _relay(self) -> None:
                body = self._body()
                for rule in proxy.rules:
                    fault = rule(self.command, self.path)
                    if fault is not None:
                        status, code = fault
                        proxy.faults.append((self.command, self.path, status))
                        payload = (
                            f"<?xml version='1.0' encoding='UTF-8'?><Error><Code>{code}"
                            f"</Code><Message>injected</Message></Error>"
                        ).encode()
                        self.send_response(status)
                        self.send_header("Content-Type", "application/xml")
                        self.send_header("Content-Length", str(len(payload)))
                        self.end_headers()
                        self.wfile.write(payload)
                        return
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
                    self.send_header("Content-Length", str(len(data)))
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
