#!/usr/bin/env python3
"""A Docker registry token server for kiln's end-to-end tests (python3 stdlib only).

Implements the token authentication spec the distribution registry (2.8) speaks:
  GET  /token?service=S&scope=repository:NAME:pull,push&scope=...   optional Basic auth,
       offline_token=true adds a refresh_token
  POST /token  (form) grant_type=password (username, password) or refresh_token (refresh_token),
       service, scope (space separated), client_id; access_type=offline adds a refresh_token
Answers {"token", "access_token", "expires_in", "issued_at"[, "refresh_token"]}; a wrong
password or refresh token is a 401 with a registry-style JSON error.

Tokens are JWTs signed RS256 with `openssl dgst -sha256 -sign KEY`; the header carries the
signing certificate as a one-element x5c chain, which the registry checks against
auth.token.rootcertbundle (the same certificate).

ACL: --user NAME:PASSWORD gets every action on every repository (and registry:catalog:*);
--reader NAME:PASSWORD gets pull on every repository; anonymous gets pull on repositories
under public/ only.

Every request is one line in --log: who, the scopes asked, the scopes granted, the outcome.
On start it binds (port 0 = any free port) and writes its port to --port-file.
The registry accepts a token up to 60 s past its exp claim; --strict-expiry (or
TOKEN_STRICT_EXPIRY=1) puts exp 60 s earlier so that the token stops working at expires_in.
"""
import argparse
import base64
import datetime
import json
import os
import secrets
import ssl
import subprocess
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ANONYMOUS = "-anonymous-"
REGISTRY_LEEWAY_SECONDS = 60   # distribution 2.8's registry/auth/token leeway


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class Config:
    def __init__(self, args):
        self.users = {}   # name -> (password, role)
        for spec, role in ((args.user, "admin"), (args.reader, "reader")):
            if spec:
                name, _, password = spec.partition(":")
                self.users[name] = (password, role)
        self.key = args.key
        self.issuer = args.issuer
        self.expires_in = args.expires_in
        # distribution accepts a token until 60 s after its exp (its clock-skew leeway); strict
        # expiry moves exp back by that much, so the registry refuses it after expires_in.
        self.exp_offset = -REGISTRY_LEEWAY_SECONDS if args.strict_expiry else 0
        with open(args.cert, "rb") as f:
            pem = f.read().decode()
        der = ssl.PEM_cert_to_DER_cert(pem)
        self.x5c = [base64.b64encode(der).decode()]
        self.log_path = args.log
        self.log_lock = threading.Lock()
        self.refresh = {}   # refresh token -> user
        self.refresh_lock = threading.Lock()

    def log(self, line):
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        with self.log_lock, open(self.log_path, "a") as f:
            f.write(f"{stamp} {line}\n")

    def allowed(self, user, rtype, name):
        """Actions `user` may have on resource (rtype, name); None for everything."""
        role = self.users[user][1] if user != ANONYMOUS else "anonymous"
        if role == "admin":
            return None
        if rtype != "repository":
            return set()
        if role == "reader":
            return {"pull"}
        return {"pull"} if name.startswith("public/") else set()

    def grant(self, user, scopes):
        access = []
        for scope in scopes:
            parts = scope.split(":")
            if len(parts) < 3:
                continue   # malformed scopes are ignored, as docker/distribution's auth servers do
            rtype, name, actions = parts[0], ":".join(parts[1:-1]), parts[-1].split(",")
            allowed = self.allowed(user, rtype.split("(")[0], name)
            granted = [a for a in actions if a and (allowed is None or a in allowed)]
            merged = next((e for e in access if e["type"] == rtype and e["name"] == name), None)
            if merged is None:
                access.append({"type": rtype, "name": name, "actions": granted})
            else:
                merged["actions"] += [a for a in granted if a not in merged["actions"]]
        return access

    def sign(self, user, service, access):
        now = int(time.time())
        header = {"typ": "JWT", "alg": "RS256", "x5c": self.x5c}
        claims = {"iss": self.issuer, "sub": "" if user == ANONYMOUS else user, "aud": service,
                  "exp": now + self.expires_in + self.exp_offset, "nbf": now - 10, "iat": now,
                  "jti": secrets.token_hex(16), "access": access}
        signing_input = (b64url(json.dumps(header, separators=(",", ":")).encode()) + "." +
                         b64url(json.dumps(claims, separators=(",", ":")).encode()))
        sig = subprocess.run(["openssl", "dgst", "-sha256", "-sign", self.key],
                             input=signing_input.encode(), capture_output=True, check=True).stdout
        return signing_input + "." + b64url(sig), now


def scopes_text(scopes):
    return " ".join(scopes) if scopes else "-"


def access_text(access):
    return " ".join(f"{e['type']}:{e['name']}:{','.join(e['actions'])}" for e in access) or "-"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "kiln-test-token-server"
    cfg = None   # set before serving

    def log_message(self, fmt, *args):   # the token log is the log; no stderr chatter
        pass

    def reply(self, code, body, extra=None):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def deny(self, who, how, scopes, why):
        self.cfg.log(f"DENY user={who} method={how} asked={scopes_text(scopes)} status=401 reason={why}")
        self.reply(401, {"errors": [{"code": "UNAUTHORIZED", "message": why, "detail": None}],
                         "error": "invalid_grant", "error_description": why},
                   {"WWW-Authenticate": 'Basic realm="kiln-test-token-server"'})

    def answer(self, who, how, service, scopes, offline):
        access = self.cfg.grant(who, scopes)
        token, now = self.cfg.sign(who, service, access)
        body = {"token": token, "access_token": token, "expires_in": self.cfg.expires_in,
                "issued_at": datetime.datetime.fromtimestamp(now, datetime.timezone.utc)
                .strftime("%Y-%m-%dT%H:%M:%SZ")}
        if offline and who != ANONYMOUS:
            refresh = secrets.token_urlsafe(24)
            with self.cfg.refresh_lock:
                self.cfg.refresh[refresh] = who
            body["refresh_token"] = refresh
        self.cfg.log(f"TOKEN user={who} method={how} service={service or '-'} "
                     f"asked={scopes_text(scopes)} granted={access_text(access)} status=200")
        self.reply(200, body)

    def check_password(self, user, password):
        entry = self.cfg.users.get(user)
        return entry is not None and secrets.compare_digest(entry[0], password)

    def do_GET(self):
        url = urllib.parse.urlsplit(self.path)
        if url.path != "/token":
            return self.reply(404, {"errors": [{"code": "NOT_FOUND", "message": "no such endpoint"}]})
        q = urllib.parse.parse_qs(url.query)
        scopes = [s for v in q.get("scope", []) for s in v.split(" ") if s]
        service = q.get("service", [""])[0]
        who = ANONYMOUS
        auth = self.headers.get("Authorization", "")
        if auth[:6].lower() == "basic ":
            try:
                user, _, password = base64.b64decode(auth[6:].strip()).decode().partition(":")
            except ValueError:
                return self.deny("?", "GET", scopes, "malformed basic credentials")
            if not self.check_password(user, password):
                return self.deny(user, "GET", scopes, "wrong user name or password")
            who = user
        self.answer(who, "GET", service, scopes, q.get("offline_token", [""])[0] == "true")

    def do_POST(self):
        url = urllib.parse.urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        form = urllib.parse.parse_qs(self.rfile.read(length).decode()) if length else {}
        if url.path != "/token":
            return self.reply(404, {"errors": [{"code": "NOT_FOUND", "message": "no such endpoint"}]})
        field = lambda k: form.get(k, [""])[0]
        scopes = [s for v in form.get("scope", []) for s in v.split(" ") if s]
        grant = field("grant_type")
        if grant == "password":
            if not self.check_password(field("username"), field("password")):
                return self.deny(field("username") or "?", "POST-password", scopes,
                                 "wrong user name or password")
            who = field("username")
        elif grant == "refresh_token":
            with self.cfg.refresh_lock:
                who = self.cfg.refresh.get(field("refresh_token"))
            if who is None:
                return self.deny("?", "POST-refresh", scopes, "unknown refresh token")
        else:
            self.cfg.log(f"DENY user=? method=POST asked={scopes_text(scopes)} status=400 "
                         f"reason=unsupported grant_type {grant!r}")
            return self.reply(400, {"error": "unsupported_grant_type",
                                    "error_description": f"grant_type {grant!r} is not supported"})
        self.answer(who, "POST-" + grant, field("service"), scopes,
                    grant == "refresh_token" or field("access_type") == "offline")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port-file", required=True)
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--log", required=True)
    p.add_argument("--key", required=True, help="RSA private key (PEM) that signs tokens")
    p.add_argument("--cert", required=True, help="its certificate (the registry's rootcertbundle)")
    p.add_argument("--issuer", default="kiln-test-token-server")
    p.add_argument("--user", help="NAME:PASSWORD with pull+push everywhere")
    p.add_argument("--reader", help="NAME:PASSWORD with pull everywhere")
    p.add_argument("--expires-in", type=int, default=int(os.environ.get("TOKEN_EXPIRES_IN", "300")))
    p.add_argument("--strict-expiry", action="store_true",
                   default=os.environ.get("TOKEN_STRICT_EXPIRY", "") == "1",
                   help="exp claim = iat + expires_in - 60, so the registry's leeway ends at expires_in")
    p.add_argument("--tls-cert", help="serve HTTPS with this certificate chain (PEM)")
    p.add_argument("--tls-key")
    args = p.parse_args()
    Handler.cfg = Config(args)
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    if args.tls_cert:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(args.tls_cert, args.tls_key)
        server.socket = ctx.wrap_socket(server.socket, server_side=True)
    tmp = args.port_file + ".tmp"
    with open(tmp, "w") as f:
        f.write(f"{server.server_address[1]}\n")
    os.rename(tmp, args.port_file)   # whoever waits for the file sees it whole
    Handler.cfg.log(f"START port={server.server_address[1]} expires_in={args.expires_in} "
                    f"strict_expiry={'yes' if args.strict_expiry else 'no'} "
                    f"tls={'yes' if args.tls_cert else 'no'}")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    sys.exit(main())
