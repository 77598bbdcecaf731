#!/usr/bin/env python3
"""A tiny HTTP/1.1 echo backend for the demo and the end-to-end tests (stdlib only).

    python tests/backend.py --port 8081 --name a [--host 127.0.0.1]

Every path answers 200 with a JSON body
    {"server": NAME, "port": PORT, "method": ..., "path": ..., "headers": {lower-cased: value}}
and an `x-backend: NAME` header. `/healthz` answers 200 "ok" (Envoy's active health check).
A query parameter `set_cookie=NAME=VALUE` (repeatable, URL-encoded) adds that `Set-Cookie`
header verbatim, so tests can check that the backend's own cookies reach the client.
`/login` is an application issuing its own session cookie: it adds
    Set-Cookie: JSESSIONID=<NAME>.<16 random hex>; Path=/; HttpOnly
(cookie name from the query parameter `cookie`, default JSESSIONID), the session value
also in the body as "session" (app_cookie persistence learns it from the response).
Repeated request headers are joined with ", " except `cookie`, joined with "; ".
"""

import argparse
import json
import secrets
import signal
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "persist-backend/1"
    # Keep-alive connections from Envoy must not pin a thread forever.
    timeout = 60
    # Headers and body are written separately: without TCP_NODELAY, Nagle's algorithm
    # holds the body back for a delayed ACK (~40 ms per request on a reused connection).
    disable_nagle_algorithm = True

    def _headers_dict(self):
        out = {}
        for name, value in self.headers.items():
            key = name.lower()
            if key in out:
                sep = "; " if key == "cookie" else ", "
                out[key] = out[key] + sep + value
            else:
                out[key] = value
        return out

    def _answer(self):
        name = self.server.backend_name
        length = int(self.headers.get("content-length") or 0)
        if length > 0:
            self.rfile.read(min(length, 1 << 20))
        url = urlsplit(self.path)
        if url.path == "/healthz":
            body = b"ok\n"
            ctype = "text/plain"
            cookies = []
        else:
            query = parse_qs(url.query, keep_blank_values=True)
            cookies = query.get("set_cookie", [])
            doc = {
                "server": name,
                "port": self.server.server_address[1],
                "method": self.command,
                "path": self.path,
                "headers": self._headers_dict(),
            }
            if url.path == "/login":
                doc["session"] = f"{name}.{secrets.token_hex(8)}"
                cookie_name = query.get("cookie", ["JSESSIONID"])[0]
                cookies = cookies + [f"{cookie_name}={doc['session']}; Path=/; HttpOnly"]
            body = json.dumps(doc, sort_keys=True).encode() + b"\n"
            ctype = "application/json"
        self.send_response(200)
        self.send_header("content-type", ctype)
        self.send_header("content-length", str(len(body)))
        self.send_header("x-backend", name)
        for c in cookies:
            self.send_header("set-cookie", c)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = _answer
    do_POST = _answer
    do_PUT = _answer
    do_DELETE = _answer
    do_HEAD = _answer

    def log_message(self, fmt, *args):  # quiet: tests and the demo read Envoy's output
        pass


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--name", required=True)
    p.add_argument("--host", default="127.0.0.1")
    args = p.parse_args(argv)
    srv = Server((args.host, args.port), Handler)
    srv.backend_name = args.name
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"backend {args.name} listening on {args.host}:{args.port}", flush=True)
    try:
        srv.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        srv.server_close()


if __name__ == "__main__":
    main()
