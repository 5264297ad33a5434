"""A real HTTP server on 127.0.0.1 that can misbehave on purpose.

The fetcher's tests and its benchmark need a server that serves byte ranges
and, on demand, drops the connection mid-file, answers 503, serves the wrong
bytes, stalls or trickles. Faults are queued per path and used up one per
request, so "503 then 200" is `faults=["503"]`. Every request is logged.
Given a certificate and its key, it speaks HTTPS instead.
"""

import gzip
import ssl
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

# Faults: "503" (or any 4xx/5xx code), "drop:N" (send N bytes of the body, then
# close), "wrong" (same length, other bytes), "stall:SECONDS" (wait before the
# body), "slow:BYTES_PER_SECOND", "norange" (ignore a Range header), "206"
# (answer 206 Partial Content from byte 0, asked or not), "gzip" (compress the
# body on the fly when the client accepts gzip, as some servers do), "endless" (a body
# with no length that never ends, until the client hangs up), "redirect:URL" (302 to URL).


@dataclass
class Route:
    body: bytes | Path
    faults: list[str] = field(default_factory=list)
    ranges: bool = True

    def size(self) -> int:
        return self.body.stat().st_size if isinstance(self.body, Path) else len(self.body)

    def read(self, start: int, end: int) -> bytes:
        if isinstance(self.body, Path):
            with open(self.body, "rb") as f:
                f.seek(start)
                return f.read(end - start)
        return self.body[start:end]


@dataclass
class Request:
    path: str
    range: str | None
    status: int
    fault: str = ""
    accept_encoding: str | None = None


class LocalServer:
    """`with LocalServer() as s: s.add("/a.img", data); s.url("/a.img")`."""

    def __init__(self, tls: tuple[Path, Path] | None = None) -> None:
        self.routes: dict[str, Route] = {}
        self.log: list[Request] = []
        self.lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.httpd.daemon_threads = True
        self.scheme = "https" if tls else "http"
        if tls:  # (certificate, key), PEM
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*map(str, tls))
            self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,),
                                       daemon=True)

    def __enter__(self) -> "LocalServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def add(self, path: str, body: bytes | Path, faults: list[str] | None = None,
            ranges: bool = True) -> str:
        self.routes[path] = Route(body, list(faults or []), ranges)
        return self.url(path)

    def url(self, path: str) -> str:
        return f"{self.scheme}://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def requests_for(self, path: str) -> list[Request]:
        with self.lock:
            return [r for r in self.log if r.path == path]

    def next_fault(self, route: Route) -> str:
        with self.lock:
            return route.faults.pop(0) if route.faults else ""


def _handler(server: LocalServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:  # the test output stays readable
            pass

        def do_GET(self) -> None:
            route = server.routes.get(self.path)
            if route is None:
                return self._status(404, "")
            fault = server.next_fault(route)
            if fault[:1] in "45" and fault.isdigit():
                return self._status(int(fault), fault)
            if fault == "gzip" and "gzip" in self.headers.get("Accept-Encoding", ""):
                return self._gzip(route)
            if fault.startswith("redirect:"):
                return self._redirect(fault.removeprefix("redirect:"), fault)
            if fault == "endless":
                return self._endless()
            self._serve(route, fault)

        def _gzip(self, route: Route) -> None:
            body = gzip.compress(route.read(0, route.size()))
            self._log(200, "gzip")
            self.send_response(200)
            self.send_header("Content-Encoding", "gzip")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _redirect(self, to: str, fault: str) -> None:
            self._log(302, fault)
            self.send_response(302)
            self.send_header("Location", to)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def _endless(self) -> None:
            """200 with no Content-Length (HTTP/1.0: the body ends when the connection
            does), then zeros until the client goes away."""
            self._log(200, "endless")
            self.send_response(200)
            self.end_headers()
            chunk = bytes(1024 * 1024)
            try:
                while True:
                    self.wfile.write(chunk)
            except (BrokenPipeError, ConnectionResetError, OSError):
                self.close_connection = True

        def _status(self, code: int, fault: str) -> None:
            self._log(code, fault)
            self.send_response(code)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def _serve(self, route: Route, fault: str) -> None:
            size = route.size()
            start, header = 0, self.headers.get("Range")
            if header and route.ranges and fault != "norange":
                start = int(header.removeprefix("bytes=").split("-", 1)[0])
                if start >= size:
                    return self._status(416, fault)
            code = 206 if start or fault == "206" else 200
            self._log(code, fault)
            self.send_response(code)
            self.send_header("Content-Length", str(size - start))
            self.send_header("Accept-Ranges", "bytes" if route.ranges else "none")
            if code == 206:
                self.send_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
            self.end_headers()
            self._body(route, start, size, fault)

        def _body(self, route: Route, start: int, size: int, fault: str) -> None:
            kind, _, arg = fault.partition(":")
            if kind == "stall":
                time.sleep(float(arg))
            end = start + int(arg) if kind == "drop" else size
            if not kind and isinstance(route.body, Path):
                return self._sendfile(route.body, start, end)
            rate = float(arg) if kind == "slow" else 0.0
            step = max(1, int(rate / 20)) if rate else 1024 * 1024
            try:
                for pos in range(start, end, step):
                    chunk = route.read(pos, min(pos + step, end))
                    if kind == "wrong":
                        chunk = bytes(b ^ 0xFF for b in chunk)
                    self.wfile.write(chunk)
                    if rate:
                        time.sleep(len(chunk) / rate)
            except (BrokenPipeError, ConnectionResetError):
                return
            if kind == "drop":
                self.close_connection = True

        def _sendfile(self, path: Path, start: int, end: int) -> None:
            """A file body straight from the page cache to the socket: the server's CPU
            is not the client's, and a bench shares two cores with it."""
            with open(path, "rb") as f:
                try:
                    self.connection.sendfile(f, start, end - start)
                except (BrokenPipeError, ConnectionResetError):
                    return

        def _log(self, code: int, fault: str) -> None:
            with server.lock:
                server.log.append(Request(self.path, self.headers.get("Range"), code, fault,
                                          self.headers.get("Accept-Encoding")))

    return Handler
