"""Tiny threaded HTTP server for the integration tests.

Runs inside the server network namespace (started with `ip netns exec`).
Answers every method with 200 and a small JSON body, on every ADDR:PORT given,
IPv4 and IPv6. Prints "ready" on stdout once every socket is bound.

    python3 httpd.py 10.231.0.2:8080 [fd00:231::2]:8080 ...
"""

import json
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "gwt-httpd/1.0"
    # A client that stalls never ties a thread up for long.
    timeout = 5

    def _any(self):
        length = self.headers.get("Content-Length")
        if length is not None:
            try:
                n = min(int(length), 1 << 20)
            except ValueError:
                n = 0
            if n > 0:
                self.rfile.read(n)
        body = json.dumps({"ok": True, "method": self.command}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        # Lets a test make the response carry a Set-Cookie of its choosing.
        set_cookie = self.headers.get("X-Gwt-Set-Cookie")
        if set_cookie:
            self.send_header("Set-Cookie", set_cookie)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def __getattr__(self, name):
        # do_GET, do_POST, do_PUT, do_DELETE, do_PATCH, do_OPTIONS, do_FOO, ...
        if name.startswith("do_"):
            return self._any
        raise AttributeError(name)

    def log_message(self, fmt, *args):
        pass


class Server4(ThreadingHTTPServer):
    address_family = socket.AF_INET
    daemon_threads = True
    allow_reuse_address = True


class Server6(ThreadingHTTPServer):
    address_family = socket.AF_INET6
    daemon_threads = True
    allow_reuse_address = True


def parse(spec):
    host, _, port = spec.rpartition(":")
    if host.startswith("["):
        return Server6, host[1:-1], int(port)
    return Server4, host, int(port)


def main():
    servers = []
    for spec in sys.argv[1:]:
        cls, host, port = parse(spec)
        servers.append(cls((host, port), Handler))
    for srv in servers:
        threading.Thread(target=srv.serve_forever, daemon=True).start()
    print("ready", flush=True)
    # Until the test session closes our stdin (or kills us).
    sys.stdin.read()


if __name__ == "__main__":
    main()
