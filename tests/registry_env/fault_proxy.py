#!/usr/bin/env python3
"""An HTTP/1.1 proxy that injects faults, for kiln's registry end-to-end tests (python3 stdlib).

It listens on 127.0.0.1 and forwards every request to one plain-HTTP upstream (a registry),
unchanged: the request head as received, bodies framed by Content-Length or chunked in both
directions, 1xx interim responses (Expect: 100-continue), keep-alive with the client. Each
request gets a fresh upstream connection, so a fault never poisons the next request.

Faults are armed at run time through the control endpoint (another 127.0.0.1 port):
  POST /arm    body = SPEC   -> 200 "armed ..." once the fault is in force; 400 on a bad SPEC
  POST /reset                -> clears every fault
  GET  /faults               -> the armed faults as JSON
SPEC (fields split on ':'; write a ':' inside the regex as '\\:'):
  cut:REGEX:BYTES[:COUNT]            response headers + the first BYTES body bytes, then close
  cut-request:REGEX:BYTES[:COUNT]    BYTES of the request body to upstream, then close both sides
  status:REGEX:CODE[:COUNT[:RETRY_AFTER]]   answer CODE with a registry-style JSON error, no upstream
  stall:REGEX:BYTES:SECONDS[:COUNT]  BYTES of the response body, then nothing for SECONDS, then the rest
  drop:REGEX[:COUNT]                 close the connection without an answer
  redirect:REGEX[:COUNT]             answer 307 to the blob store (below) instead of forwarding
  reset                              clear every fault
REGEX is searched (re.search) in "METHOD TARGET", e.g. "GET /v2/a/blobs/sha256:ab..?x=1", so
"/blobs/" matches any blob request and "^PATCH " any PATCH. COUNT (default 1) is how many
matching requests the fault applies to; 0 means every one until reset. Faults are tried in the
order they were armed; the first match applies. BYTES count body payload (not chunk framing).

The blob store imitates the object storage (S3, GCS) registries redirect blob requests to: a
second listener on 127.0.0.2 serving /storage/TOKEN, a pre-signed URL that stands for the
redirected request and the credentials it carried. Like S3, it refuses a request that also sends
an Authorization header (400, "Only one auth mechanism allowed"): a client must not forward the
registry's credentials to another host. Otherwise it forwards the original request upstream with
the granted credentials. Its requests are logged with a STORAGE prefix and matched against the
faults as "STORAGE METHOD TARGET" (TARGET the original one), so "^STORAGE GET" cuts there.

Every request is logged to --log as one line when it arrives (method, target, Range,
Content-Range, Content-Length, Transfer-Encoding, the fault applied) and one line when it ends.
On start it writes "PORT CONTROL_PORT" to --ready-file.
"""
import argparse
import datetime
import itertools
import json
import os
import re
import secrets
import socket
import socketserver
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MAX_LINE = 65536
MAX_HEADERS = 200
CLIENT_IDLE_SECONDS = 120
UPSTREAM_TIMEOUT_SECONDS = 120
REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
           408: "Request Timeout", 429: "Too Many Requests", 500: "Internal Server Error",
           502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout"}
ERROR_CODES = {401: "UNAUTHORIZED", 403: "DENIED", 404: "NAME_UNKNOWN", 429: "TOOMANYREQUESTS",
               503: "UNAVAILABLE"}


class Cut(Exception):
    """The fault cut the connection on purpose."""


class PeerGone(Exception):
    """A peer closed its side (or timed out) before a message was whole."""


# ---- faults -----------------------------------------------------------------------------------

# kind -> (names of the numeric fields, how many are required)
KINDS = {"cut": (("bytes", "count"), 1),
         "cut-request": (("bytes", "count"), 1),
         "status": (("code", "count", "retry_after"), 1),
         "stall": (("bytes", "seconds", "count"), 2),
         "drop": (("count",), 0),
         "redirect": (("count",), 0)}
NUMBER = re.compile(r"^\d+(\.\d+)?$")


class Fault:
    def __init__(self, spec):
        self.spec = spec
        fields = re.split(r"(?<!\\):", spec)
        self.kind, rest = fields[0], fields[1:]
        if self.kind not in KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r} (cut, cut-request, status, stall, drop, redirect, reset)")
        names, required = KINDS[self.kind]
        if not rest:
            raise ValueError(f"{self.kind}: missing REGEX")
        k = 0   # numeric fields are taken from the right; the regex keeps at least one field
        while k < len(names) and len(rest) - k > 1 and NUMBER.match(rest[-1 - k]):
            k += 1
        if k < required:
            raise ValueError(f"{self.kind}: needs {':'.join(n.upper() for n in names[:required])} after REGEX")
        self.pattern = ":".join(rest[:len(rest) - k])
        try:
            self.regex = re.compile(self.pattern)
        except re.error as e:
            raise ValueError(f"bad regex {self.pattern!r}: {e}") from None
        values = dict(zip(names, rest[len(rest) - k:]))
        self.bytes = int(values.get("bytes", 0))
        self.seconds = float(values.get("seconds", 0))
        self.code = int(values.get("code", 0))
        self.count = int(values.get("count", 1))   # 0: unlimited
        self.retry_after = values.get("retry_after")
        if self.kind == "status" and not 100 <= self.code <= 599:
            raise ValueError(f"status: bad CODE {self.code}")
        self.applied = 0

    def describe(self):
        return {"spec": self.spec, "kind": self.kind, "regex": self.pattern, "count": self.count,
                "applied": self.applied}


class Faults:
    def __init__(self):
        self.lock = threading.Lock()
        self.armed = []

    def arm(self, spec):
        spec = spec.strip()
        with self.lock:
            if spec == "reset":
                self.armed.clear()
                return None
            fault = Fault(spec)
            self.armed.append(fault)
            return fault

    def take(self, line):
        """The fault that applies to this request (consuming one of its COUNT), or None."""
        with self.lock:
            for fault in self.armed:
                if fault.regex.search(line):
                    fault.applied += 1
                    if fault.count and fault.applied >= fault.count:
                        self.armed.remove(fault)
                    return fault
        return None

    def list(self):
        with self.lock:
            return [f.describe() for f in self.armed]


# ---- HTTP/1.1 framing ---------------------------------------------------------------------------

class Message:
    def __init__(self, raw, first, headers):
        self.raw, self.first, self.headers = raw, first, headers

    def get(self, name, default=None):
        name = name.lower()
        for k, v in self.headers:
            if k.lower() == name:
                return v
        return default

    def has_token(self, name, token):
        return any(t.strip().lower() == token for t in (self.get(name) or "").split(","))


def read_head(rd, allow_eof):
    """Reads a request or response head; None on a clean EOF before its first byte."""
    raw, lines = b"", []
    while True:
        line = rd.readline(MAX_LINE + 1)
        if not line:
            if not raw and allow_eof:
                return None
            raise PeerGone("connection closed inside a message head")
        if len(line) > MAX_LINE or len(lines) > MAX_HEADERS:
            raise PeerGone("message head too large")
        if not raw and line in (b"\r\n", b"\n"):
            continue   # stray empty lines before a request line are allowed (RFC 9112 2.2)
        raw += line
        if line in (b"\r\n", b"\n"):
            break
        lines.append(line.rstrip(b"\r\n").decode("latin-1"))
    headers = []
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers.append((name.strip(), value.strip()))
    return Message(raw, lines[0], headers)


def body_framing(msg, has_body=True):
    """('none'|'chunked'|'length'|'close', length)."""
    if not has_body:
        return "none", 0
    if "chunked" in (msg.get("Transfer-Encoding") or "").lower():
        return "chunked", 0
    length = msg.get("Content-Length")
    if length is not None:
        return ("length", int(length)) if int(length) > 0 else ("none", 0)
    return "close", 0


class Sink:
    """Writes a body to a socket; may cut it or stall it after `limit` payload bytes."""

    def __init__(self, sock, limit=None, action=None, seconds=0.0, on_event=None):
        self.sock, self.limit, self.action, self.seconds = sock, limit, action, seconds
        self.sent, self.on_event = 0, on_event

    def framing(self, data):
        if self.sock is not None:
            self.sock.sendall(data)

    def payload(self, data):
        while data:
            if self.limit is not None and self.sent + len(data) > self.limit:
                room = self.limit - self.sent
                if room > 0:
                    self.framing(data[:room])
                    self.sent += room
                    data = data[room:]
                if self.action == "cut":
                    raise Cut(f"cut after {self.sent} body bytes")
                self.on_event(f"stall {self.seconds:g}s after {self.sent} body bytes")
                time.sleep(self.seconds)
                self.limit = None
                continue
            self.framing(data)
            self.sent += len(data)
            data = b""


def copy_exact(rd, n, sink):
    while n > 0:
        data = rd.read1(min(n, 65536))
        if not data:
            raise PeerGone(f"connection closed with {n} body bytes still to come")
        sink.payload(data)
        n -= len(data)


def copy_body(rd, framing, length, sink):
    """Copies one body from rd to sink as it is framed."""
    if framing == "length":
        copy_exact(rd, length, sink)
    elif framing == "chunked":
        while True:
            line = rd.readline(MAX_LINE + 1)
            if not line.endswith(b"\n"):
                raise PeerGone("connection closed inside a chunk header")
            sink.framing(line)
            size = int(line.split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while True:   # trailers, then the empty line
                    line = rd.readline(MAX_LINE + 1)
                    if not line.endswith(b"\n"):
                        raise PeerGone("connection closed inside chunked trailers")
                    sink.framing(line)
                    if line in (b"\r\n", b"\n"):
                        return
            copy_exact(rd, size, sink)
            crlf = rd.readline(MAX_LINE + 1)
            if not crlf.endswith(b"\n"):
                raise PeerGone("connection closed after a chunk")
            sink.framing(crlf)
    elif framing == "close":
        while True:
            data = rd.read1(65536)
            if not data:
                return
            sink.payload(data)


# ---- the proxy ----------------------------------------------------------------------------------

class Proxy:
    def __init__(self, upstream, log_path):
        host, _, port = upstream.rpartition(":")
        self.upstream = (host or "127.0.0.1", int(port))
        self.faults = Faults()
        self.log_path = log_path
        self.log_lock = threading.Lock()
        self.ids = itertools.count(1)
        self.conns = itertools.count(1)
        self.storage_base = None   # "http://127.0.0.2:PORT", once the blob store listens
        self.grants = {}           # token -> (original target, Authorization value or None)
        self.grants_lock = threading.Lock()

    def grant(self, target, authorization):
        token = secrets.token_hex(16)
        with self.grants_lock:
            self.grants[token] = (target, authorization)
        return f"{self.storage_base}/storage/{token}?X-Amz-Signature={secrets.token_hex(8)}"

    def granted(self, storage_target):
        token = storage_target.split("?")[0].rpartition("/")[2]
        with self.grants_lock:
            return self.grants.get(token)

    def log(self, line):
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        with self.log_lock, open(self.log_path, "a") as f:
            f.write(f"{stamp} {line}\n")


def status_response(code, retry_after, why, method, target, keep_alive):
    """A registry-style error answer (JSON body, Docker-Distribution-Api-Version)."""
    body = b"" if method == "HEAD" else json.dumps({"errors": [{
        "code": ERROR_CODES.get(code, "UNKNOWN"),
        "message": f"fault_proxy: {why}", "detail": {"target": target}}]}).encode()
    head = [f"HTTP/1.1 {code} {REASONS.get(code, 'Injected')}",
            "Content-Type: application/json; charset=utf-8",
            "Docker-Distribution-Api-Version: registry/2.0",
            f"Content-Length: {len(body)}",
            "Connection: " + ("keep-alive" if keep_alive else "close")]
    if retry_after is not None:
        head.append(f"Retry-After: {retry_after}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def plain_response(code, reason, headers, body, keep_alive):
    head = [f"HTTP/1.1 {code} {reason}"] + headers + [
        f"Content-Length: {len(body)}", "Connection: " + ("keep-alive" if keep_alive else "close")]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def with_target(req, method, target, version, authorization):
    """The request head with another target and Authorization (None: without one)."""
    headers = [(k, v) for k, v in req.headers if k.lower() != "authorization"]
    if authorization is not None:
        headers.append(("Authorization", authorization))
    lines = [f"{method} {target} {version}"] + [f"{k}: {v}" for k, v in headers]
    raw = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return Message(raw, lines[0], headers)


class ClientHandler(socketserver.BaseRequestHandler):
    proxy = None     # set before serving
    storage = False  # True on the blob store's listener

    def handle(self):
        client = self.request
        client.settimeout(CLIENT_IDLE_SECONDS)
        rd = client.makefile("rb")
        conn = next(self.proxy.conns)
        try:
            try:
                first = rd.peek(1)[:1]
            except OSError:
                return
            if first == b"\x16":
                # A TLS ClientHello: clients that try HTTPS before HTTP (skopeo with
                # tls-verify=false) wait for an answer; Go's HTTP server gives this one.
                self.proxy.log(f"conn={conn} TLS handshake on the plain-HTTP port: answered 400")
                client.sendall(b"HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n")
                return
            while True:
                try:
                    req = read_head(rd, allow_eof=True)
                except (PeerGone, OSError, ValueError):
                    return
                if req is None:
                    return
                if not self.exchange(conn, client, rd, req):
                    return
        finally:
            try:
                client.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass   # the client may be gone already

    def exchange(self, conn, client, rd, req):
        """Serves one request; True when the connection may carry another."""
        proxy = self.proxy
        n = next(proxy.ids)
        parts = req.first.split(" ")
        if len(parts) != 3:
            proxy.log(f"#{n} conn={conn} malformed request line {req.first!r}")
            return False
        method, target, version = parts
        auth = (req.get("Authorization") or "-").split(" ")[0].lower()
        where = ""
        if self.storage:
            grant = proxy.granted(target)
            where = "STORAGE "
            if grant is None or req.get("Authorization") is not None:
                why = ("no such grant" if grant is None else
                       "Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter, "
                       "Signature query string parameter or the Authorization header should be specified")
                code = 404 if grant is None else 400
                proxy.log(f"#{n} conn={conn} STORAGE {method} {target} auth={auth} -> {code} {why}")
                body = b"" if method == "HEAD" else f"<Error><Message>{why}</Message></Error>".encode()
                client.sendall(plain_response(code, REASONS[code], ["Content-Type: application/xml"], body, False))
                return False
            target = grant[0]
            req = with_target(req, method, target, version, grant[1])
        fault = proxy.faults.take(f"{where}{method} {target}")
        proxy.log(f"#{n} conn={conn} {where}{method} {target} range={req.get('Range', '-')} "
                  f"content-range={req.get('Content-Range', '-')} content-length={req.get('Content-Length', '-')} "
                  f"transfer-encoding={req.get('Transfer-Encoding', '-')} expect={req.get('Expect', '-')} "
                  f"connection={req.get('Connection', '-')} "
                  f"auth={auth} fault={fault.spec if fault else '-'}")
        client_keep = (not req.has_token("Connection", "close") and
                       (version == "HTTP/1.1" or req.has_token("Connection", "keep-alive")))
        req_framing, req_length = body_framing(req)
        if req_framing == "close":
            req_framing = "none"   # a request without length has no body (RFC 9112 6.3)

        if fault and fault.kind == "drop":
            proxy.log(f"#{n} -> dropped (closed without an answer)")
            return False
        if fault and fault.kind == "redirect":
            if req_framing != "none":
                try:
                    copy_body(rd, req_framing, req_length, Sink(None))
                except (PeerGone, OSError, ValueError):
                    return False
            location = proxy.grant(target, req.get("Authorization"))
            client.sendall(plain_response(307, "Temporary Redirect", [f"Location: {location}"], b"", client_keep))
            proxy.log(f"#{n} -> 307 to {location}")
            return client_keep
        if fault and fault.kind == "status":
            expect = req.has_token("Expect", "100-continue")
            if not expect and req_framing != "none":
                try:   # drain the body so the connection stays usable
                    copy_body(rd, req_framing, req_length, Sink(None))
                except (PeerGone, OSError, ValueError):
                    return False
            keep = client_keep and not expect
            client.sendall(status_response(fault.code, fault.retry_after, f"injected {fault.code} ({fault.spec})",
                                           method, target, keep))
            proxy.log(f"#{n} -> {fault.code} injected" +
                      (f" Retry-After={fault.retry_after}" if fault.retry_after is not None else "") +
                      ("" if keep else " (connection closed)"))
            return keep

        try:
            up = socket.create_connection(proxy.upstream, timeout=UPSTREAM_TIMEOUT_SECONDS)
        except OSError as e:
            proxy.log(f"#{n} -> 502 upstream {proxy.upstream[0]}:{proxy.upstream[1]} unreachable: {e}")
            client.sendall(status_response(502, None, f"upstream unreachable: {e}", method, target, False))
            return False
        try:
            return self.forward(n, client, rd, up, req, method, target, fault, client_keep,
                                req_framing, req_length)
        finally:
            up.close()

    def forward(self, n, client, rd, up, req, method, target, fault, client_keep, req_framing, req_length):
        proxy = self.proxy
        up.sendall(req.raw)
        pump = {"done": req_framing == "none", "cut": False, "error": None}

        def pump_body():
            limit = fault.bytes if fault and fault.kind == "cut-request" else None
            try:
                copy_body(rd, req_framing, req_length, Sink(up, limit, "cut"))
                pump["done"] = True
            except Cut as e:
                pump["cut"] = True
                proxy.log(f"#{n} request body {e}; closing both sides")
                for s in (up, client):
                    try:
                        s.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass   # already closed by its peer
            except (PeerGone, OSError, ValueError) as e:
                pump["error"] = str(e)

        thread = None
        if req_framing != "none":
            thread = threading.Thread(target=pump_body, daemon=True)
            thread.start()

        upr = up.makefile("rb")
        try:
            return self.relay_response(n, client, upr, pump, thread, method, fault, client_keep)
        finally:
            upr.close()   # the socket's descriptor closes only when its file object does too

    def relay_response(self, n, client, upr, pump, thread, method, fault, client_keep):
        proxy = self.proxy
        sink = None
        try:
            while True:
                resp = read_head(upr, allow_eof=False)
                code = int(resp.first.split(" ")[1])
                if 100 <= code < 200 and code != 101:
                    client.sendall(resp.raw)   # 100 Continue and friends
                    continue
                break
            no_body = method == "HEAD" or code in (204, 304)
            resp_framing, resp_length = body_framing(resp, not no_body)
            client.sendall(resp.raw)
            if fault and fault.kind in ("cut", "stall"):
                sink = Sink(client, fault.bytes, fault.kind, fault.seconds,
                            on_event=lambda what: proxy.log(f"#{n} response body {what}"))
            else:
                sink = Sink(client)
            copy_body(upr, resp_framing, resp_length, sink)
        except Cut as e:
            proxy.log(f"#{n} -> {code} response body {e}; connection closed")
            return False
        except (PeerGone, OSError, ValueError, IndexError) as e:
            if pump["cut"]:
                proxy.log(f"#{n} -> no answer forwarded (request body cut)")
            else:
                proxy.log(f"#{n} -> broken exchange: {e}; connection closed")
            return False
        if thread is not None:
            thread.join(timeout=5 if pump["done"] else 0.5)
        keep = (client_keep and pump["done"] and resp_framing != "close" and
                not resp.has_token("Connection", "close"))
        proxy.log(f"#{n} -> {code} body={sink.sent}" +
                  (f" Content-Range={resp.get('Content-Range')}" if resp.get("Content-Range") else "") +
                  ("" if keep else " (connection closed)"))
        return keep


class ProxyServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


class ControlHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    proxy = None

    def log_message(self, fmt, *args):
        pass

    def reply(self, code, text):
        data = text.encode()
        self.send_response(code)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path == "/faults":
            return self.reply(200, json.dumps(self.proxy.faults.list()) + "\n")
        if self.path == "/ping":
            return self.reply(200, "pong\n")
        self.reply(404, "GET /faults, GET /ping, POST /arm, POST /reset\n")

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode() if length else ""
        if self.path == "/reset":
            body = "reset"
        elif self.path != "/arm":
            return self.reply(404, "GET /faults, GET /ping, POST /arm, POST /reset\n")
        try:
            fault = self.proxy.faults.arm(body)
        except ValueError as e:
            self.proxy.log(f"CONTROL rejected {body!r}: {e}")
            return self.reply(400, f"fault_proxy: {e}\n")
        self.proxy.log(f"CONTROL {'reset' if fault is None else 'armed ' + fault.spec}")
        self.reply(200, ("reset" if fault is None else f"armed {fault.spec}") + "\n")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--upstream", required=True, help="HOST:PORT of the plain-HTTP upstream")
    p.add_argument("--log", required=True)
    p.add_argument("--ready-file", required=True)
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--control-port", type=int, default=0)
    args = p.parse_args()
    proxy = Proxy(args.upstream, args.log)
    ClientHandler.proxy = ControlHandler.proxy = proxy
    server = ProxyServer(("127.0.0.1", args.port), ClientHandler)
    storage = ProxyServer(("127.0.0.2", 0), type("StorageHandler", (ClientHandler,), {"storage": True}))
    proxy.storage_base = f"http://127.0.0.2:{storage.server_address[1]}"
    threading.Thread(target=storage.serve_forever, daemon=True).start()
    control = ThreadingHTTPServer(("127.0.0.1", args.control_port), ControlHandler)
    control.daemon_threads = True
    threading.Thread(target=control.serve_forever, daemon=True).start()
    port, control_port = server.server_address[1], control.server_address[1]
    proxy.log(f"START port={port} control={control_port} storage={proxy.storage_base} upstream={args.upstream}")
    tmp = args.ready_file + ".tmp"
    with open(tmp, "w") as f:
        f.write(f"{port} {control_port}\n")
    os.rename(tmp, args.ready_file)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    sys.exit(main())
