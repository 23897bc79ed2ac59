"""The HTTP side: Apache's behaviour (keep-alive, headers), the fault switches, /__sim/ control endpoints.

``SimServer`` ties a site (changes.Moodle), the REST logic (webservice.py),
the fault switches and the statistics to a threading HTTP server.
"""

from __future__ import annotations

import email.utils
import json
import socket
import ssl
import struct
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

from .accounts import LOGIN_PATH, SYNC_SERVICE, login, login_headers
from .changes import Moodle
from .config import ADMIN_ID, SERVICE_FUNCTIONS, WS_PATH
from .faults import Faults
from .seed import BOX, SERVER
from .stats import Stats
from .webservice import WebService

CONTROL_PREFIX = "/__sim/"

CAPTIVE_PORTAL_HTML = b"""<!DOCTYPE html>
<html><head><title>Welcome to the school network</title>
<meta http-equiv="refresh" content="0; url=http://portal.example.invalid/login"></head>
<body><h1>Sign in to the school Wi-Fi</h1>
<p>Please accept the terms of use to access the Internet.</p>
<form method="post" action="http://portal.example.invalid/login"><button>Accept</button></form>
</body></html>
"""

STATUS_TEXT = {429: "Too Many Requests", 500: "Internal Server Error", 502: "Bad Gateway",
               503: "Service Unavailable", 504: "Gateway Timeout", 404: "Not Found"}


def _status_page(code):
    text = STATUS_TEXT.get(code, "Error")
    return (f'<!DOCTYPE HTML PUBLIC "-//IETF//DTD HTML 2.0//EN">\n<html><head>\n<title>{code} {text}</title>\n'
            f"</head><body>\n<h1>{text}</h1>\n<p>The server is temporarily unable to service your request.</p>\n"
            "</body></html>\n").encode()


class _Counting:
    """A file wrapper that adds the bytes read or written to a counter."""

    def __init__(self, raw, wire: dict, key: str):
        self._raw, self._wire, self._key = raw, wire, key

    def read(self, *args):
        data = self._raw.read(*args)
        self._wire[self._key] += len(data)
        return data

    def readline(self, *args):
        data = self._raw.readline(*args)
        self._wire[self._key] += len(data)
        return data

    def write(self, data):
        self._wire[self._key] += len(data)
        return self._raw.write(data)

    def __getattr__(self, name):
        return getattr(self._raw, name)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "Apache"
    sys_version = ""
    timeout = 120
    wbufsize = 256 * 1024     # headers and body leave in one write (no Nagle/delayed-ACK stall)

    def setup(self):
        sock = self.request
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        if isinstance(sock, ssl.SSLSocket):
            sock.settimeout(30)
            try:
                sock.do_handshake()
            except (ssl.SSLError, OSError):
                self.server.sim.stats.add(connections=1)
                raise
        super().setup()
        self.connection.settimeout(self.server.sim.keepalive_timeout)   # KeepAliveTimeout
        self._wire = {"in": 0, "out": 0, "count": False}
        self.rfile = _Counting(self.rfile, self._wire, "in")
        self.wfile = _Counting(self.wfile, self._wire, "out")
        self.server.sim.stats.add(connections=1)
        self.server.sim._track(self.connection, True)
        self._clock_offset = 0

    def finish(self):
        try:
            super().finish()
        finally:
            self.server.sim._track(self.connection, False)

    def log_message(self, fmt, *args):
        if self.server.sim.verbose:
            sys.stderr.write("moodle-simulator: %s - %s\n" % (self.address_string(), fmt % args))

    def version_string(self):
        return self.server_version

    def date_time_string(self, timestamp=None):
        if timestamp is None:
            timestamp = time.time()
        return email.utils.formatdate(timestamp + getattr(self, "_clock_offset", 0), usegmt=True)

    def handle_one_request(self):
        # Bytes are counted at the socket, request line and headers included,
        # so the agent's own count of bytes on the wire can be checked.
        self._wire.update({"in": 0, "out": 0, "count": False})
        try:
            super().handle_one_request()
        except (ConnectionError, ssl.SSLError, socket.timeout, TimeoutError):
            self.close_connection = True
        finally:
            if self._wire["count"]:
                self.server.sim.stats.add(bytes_in=self._wire["in"], bytes_out=self._wire["out"])

    def do_GET(self):
        self._dispatch("GET")

    def do_POST(self):
        self._dispatch("POST")

    def do_HEAD(self):
        self._dispatch("HEAD")

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                line = self.rfile.readline(65537)
                size = int(line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline(65537)
            return b"".join(chunks)
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n > 0 else b""

    def _send(self, status, ctype, body: bytes, extra=(), partial=None, chunked=False):
        self.send_response(status)
        self._served = getattr(self, "_served", 0) + 1
        limit = self.server.sim.max_keepalive_requests
        if limit and self._served >= limit and not self.close_connection:
            self.send_header("Connection", "close")      # MaxKeepAliveRequests reached
            self.close_connection = True
        for k, v in extra:
            self.send_header(k, v)
        if ctype:
            self.send_header("Content-Type", ctype)
        if chunked:     # as Apache sends a PHP answer larger than its buffer: no Content-Length
            self.send_header("Transfer-Encoding", "chunked")
            body = b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + 8192]), body[i:i + 8192])
                            for i in range(0, len(body), 8192)) + b"0\r\n\r\n"
        else:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        out = body if partial is None else body[:partial]
        if self.command != "HEAD":
            self.wfile.write(out)
        self.wfile.flush()

    def _send_status_fault(self, f):
        self.server.sim.stats.count("faults_fired", f"status_{f['status']}")
        extra = [("Retry-After", str(int(f["retry_after"])))] if f["retry_after"] is not None else []
        self._send(f["status"], "text/html; charset=iso-8859-1", _status_page(f["status"]), extra)

    def _reset_connection(self):
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        self.close_connection = True

    def _dispatch(self, method):
        sim = self.server.sim
        self._clock_offset = 0
        url = urlsplit(self.path)
        body = self._read_body()
        if url.path.startswith(CONTROL_PREFIX):
            sim.stats.add(control_requests=1)
            return self._control(method, url.path, body, url.query)
        stats = sim.stats
        self._wire["count"] = True
        stats.add(requests=1)
        f = sim.faults.take()
        self._clock_offset = f["clock_offset_s"]
        if f["latency_ms"]:
            time.sleep(f["latency_ms"] / 1000.0)
        if f["reset"] and not f["reset_after_processing"]:
            stats.count("faults_fired", "reset_after_requests")
            return self._reset_connection()
        if f["captive_portal"] and not f["reset"]:
            stats.count("faults_fired", "captive_portal")
            return self._send(200, "text/html; charset=utf-8", CAPTIVE_PORTAL_HTML,
                              [("Cache-Control", "no-cache")])
        if f["redirect"] and not f["reset"]:
            stats.count("faults_fired", "redirect")
            target = f["redirect"] if isinstance(f["redirect"], str) else "http://portal.example.invalid/login"
            return self._send(302, "text/html; charset=utf-8",
                              b"<html><body>Redirecting to the login portal</body></html>\n",
                              [("Location", target), ("Cache-Control", "no-cache")])
        if f["status"] and not f["status_after_processing"]:
            return self._send_status_fault(f)
        if url.path == LOGIN_PATH:
            payload = login(sim.state, url.query, body, self.headers.get("Content-Type", ""), sim.scheme == "https")
            stats.count("calls", "login/token.php")
            return self._send(200, "application/json; charset=utf-8", payload, login_headers(sim.state.now()))
        if url.path != WS_PATH:
            return self._send(404, "text/html; charset=iso-8859-1", _status_page(404))
        ctype, payload, calls = sim.ws.handle(method if method != "HEAD" else "GET", url.query, body,
                                              self.headers.get("Content-Type", ""))
        costs = sim.faults.request_costs(calls)
        for name, ms in costs.items():
            stats.count("cost_ms", name, ms)
        if costs:
            time.sleep(sum(costs.values()) / 1000.0)
        if f["reset"]:
            stats.count("faults_fired", "reset_after_requests")
            return self._reset_connection()
        if f["status"]:            # status_after_processing: e.g. a proxy timed out, the write went through
            return self._send_status_fault(f)
        headers = [("Cache-Control", "private, must-revalidate, pre-check=0, post-check=0, max-age=0"),
                   ("Expires", "Thu, 01 Jan 1970 00:00:00 GMT"), ("Pragma", "no-cache"),
                   ("Accept-Ranges", "none"), ("Access-Control-Allow-Origin", "*")]
        if ctype.startswith("application/xml"):
            headers.insert(0, ("Content-Disposition", 'inline; filename="response.xml"'))
        chunked = f["chunked_over"] is not None and len(payload) > f["chunked_over"]
        if f["mid_response"]:
            stats.count("faults_fired", "reset_mid_response")
            self._send(200, ctype, payload, headers, partial=len(payload) // 2, chunked=chunked)
            return self._reset_connection()
        if f["truncated"]:
            stats.count("faults_fired", "truncated_json")
            payload = payload[:max(1, len(payload) // 2)]
        self._send(200, ctype, payload, headers, chunked=chunked)

    # -- /__sim/ control endpoints --------------------------------------------------------
    def _control(self, method, path, body, url_query=""):
        sim = self.server.sim
        name = path[len(CONTROL_PREFIX):].strip("/")
        try:
            data = json.loads(body.decode("utf-8")) if body.strip() else {}
            if not isinstance(data, dict):
                raise ValueError("the JSON body must be an object")
            if method in ("GET", "HEAD") and name == "state":
                q = dict(parse_qsl(url_query))
                result = sim.state.dump(only=q["only"].split(",") if q.get("only") else None,
                                        userid=int(q["userid"]) if q.get("userid") else None,
                                        courseid=int(q["courseid"]) if q.get("courseid") else None)
            elif method in ("GET", "HEAD") and name == "stats":
                result = sim.stats.snapshot()
            elif method in ("GET", "HEAD") and name == "faults":
                result = sim.faults.snapshot()
            elif method == "POST" and name == "faults":
                if data.pop("clear", False):
                    sim.faults.clear()
                result = sim.faults.set(**data)
            elif method == "POST" and name == "reset":
                sim.reset(seed=data.get("seed", True))
                result = {"ok": True}
            elif method == "POST" and name == "stats/reset":
                sim.stats.reset()
                result = {"ok": True}
            elif method == "POST" and name == "edit":
                result = sim.state.apply_edit(data)
            elif method == "POST" and name == "tokens":
                result = {"token": sim.token_for(data.get("username"))}
            elif method == "POST" and name == "access":
                result = sim.state.touch(**data)
            elif method == "POST" and name == "forget":
                result = sim.state.forget(**data)
            elif method == "POST" and name == "clock":
                sim.state.set_clock(data.get("now"))
                result = {"now": sim.state.now(), "frozen": data.get("now") is not None}
            else:
                return self._send(404, "application/json", b'{"error":"unknown control endpoint"}')
        except (ValueError, TypeError, KeyError) as e:
            msg = json.dumps({"error": f"{type(e).__name__}: {e}"}).encode()
            return self._send(400, "application/json", msg)
        self._send(200, "application/json", json.dumps(result).encode())


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def handle_error(self, request, client_address):
        if self.sim.verbose:
            super().handle_error(request, client_address)


class SimServer:
    """A running simulator: ``url``, ``state``, ``faults``, ``stats``, ``token_for()``, ``stop()``.

    ``box=True``: the classroom box's own Moodle (seed.BOX: the same content, other ids)."""

    def __init__(self, host="127.0.0.1", port=0, token="TOKEN", *, request_cost_ms=0, call_cost_ms=0,
                 calibrated_costs=False, seed=True, participants=None, without_functions=(), wwwroot=None,
                 tls_cert=None, tls_key=None, debug=False, max_input_vars=5000, post_max_size=8 * 1024 * 1024,
                 keepalive_timeout=5.0, max_keepalive_requests=100, verbose=False, box=False,
                 sync_account=False, sync_without=(), mobile_services=None):
        if not token:
            raise ValueError("a token is required")
        self.verbose = verbose
        self.token = token
        self.keepalive_timeout = keepalive_timeout
        self.max_keepalive_requests = max_keepalive_requests
        self._conns = set()
        self._conns_lock = threading.Lock()
        service = [(n, v) for n, v in SERVICE_FUNCTIONS if n not in set(without_functions)]
        self._seed = seed
        self.httpd = _HTTPServer((host, port), _Handler, bind_and_activate=True)
        self.httpd.sim = self
        self.scheme = "http"
        if tls_cert:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(tls_cert, tls_key)
            self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True,
                                                do_handshake_on_connect=False)
            self.scheme = "https"
        self.host, self.port = self.httpd.server_address[:2]
        shown = "127.0.0.1" if self.host in ("0.0.0.0", "") else ("[::1]" if self.host == "::" else self.host)
        self.url = f"{self.scheme}://{shown}:{self.port}"
        self.wwwroot = (wwwroot or self.url).rstrip("/")
        try:
            self.state = Moodle(seed=seed, wwwroot=self.wwwroot, service_functions=service,
                                participants=participants, layout=BOX if box else SERVER,
                                sync_account=sync_account, sync_without=tuple(sync_without),
                                mobile_services=mobile_services)
        except ValueError:
            self.httpd.server_close()
            raise
        self.state.admin_token = token
        self.state.tokens[token] = (ADMIN_ID, SYNC_SERVICE)
        self.faults = Faults(request_cost_ms=request_cost_ms, call_cost_ms=call_cost_ms,
                             calibrated_costs=calibrated_costs, debug=debug)
        self.state.clock_offset = lambda: self.faults.clock_offset_s   # a skewed server stamps its own time
        self.stats = Stats()
        self.ws = WebService(self.state, token, self.faults, self.stats, max_input_vars, post_max_size)
        self._thread = None

    def token_for(self, username: str) -> str:
        """A token of that user (the admin's: the token given at start); every function acts as its user."""
        return self.ws.token_for(username)

    def _track(self, conn, add):
        with self._conns_lock:
            (self._conns.add if add else self._conns.discard)(conn)

    def reset(self, seed=None):
        """Back to the seed data, default fault switches and zeroed statistics."""
        self.state.reset(seed=self._seed if seed is None else seed)
        self.state.set_clock(None)
        self.faults.clear()
        self.stats.reset()

    def start(self):
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="moodle-simulator", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self):
        self.httpd.serve_forever(poll_interval=0.2)

    def stop(self):
        try:
            self.httpd.shutdown() if self._thread else None
        finally:
            with self._conns_lock:
                conns = list(self._conns)
            for c in conns:
                try:
                    c.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            self.httpd.server_close()
            if self._thread:
                self._thread.join(timeout=5)
                self._thread = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def start_simulator(host="127.0.0.1", port=0, token="TOKEN", **options) -> SimServer:
    """Start a simulator in a background thread (port 0 picks a free port)."""
    return SimServer(host, port, token, **options).start()
