#!/usr/bin/env python3
"""A TLS server and client with CPython's ssl module (which calls OpenSSL's
SSL_read_ex / SSL_write_ex in the system libssl), for the TLS capture tests.

    tls_pair.py pair   --cert C --key K [request options]   server thread + client, one process
    tls_pair.py server --cert C --key K --listen HOST:PORT   answers until killed; prints "ready PORT"
    tls_pair.py client --connect HOST:PORT [request options]

Request options: --path P, --token T (sent as "Authorization: Bearer T"),
--header "Name: value" (repeatable), --split N (the header block is written in
SSL_write calls of at most N bytes), --count N (requests on one connection, paths P/0, P/1, ...),
--body B (a POST with Content-Type application/json whose body B goes out in
its own SSL_write after the header block).
The server answers each request with 200, a JSON body and Content-Length.
Prints one line "ok" when every response came back.
"""

from __future__ import annotations

import argparse
import socket
import ssl
import sys
import threading

BODY = b'{"ok":true}'


def read_head(conn) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return data
        data += chunk
    return data


def serve_conn(conn):
    try:
        while True:
            head = read_head(conn)
            if not head:
                return
            # drain a Content-Length body so the next request starts clean
            hdrs, _, body = head.partition(b"\r\n\r\n")
            for line in hdrs.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    want = int(line.split(b":", 1)[1])
                    while len(body) < want:
                        more = conn.recv(65536)
                        if not more:
                            return
                        body += more
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                         b"Content-Length: %d\r\nX-Request-Id: srv\r\n\r\n%s" % (len(BODY), BODY))
    except (OSError, ssl.SSLError):
        pass
    finally:
        conn.close()


def server_loop(ctx, lsock):
    while True:
        try:
            raw, _ = lsock.accept()
        except OSError:
            return
        try:
            conn = ctx.wrap_socket(raw, server_side=True)
        except (OSError, ssl.SSLError):
            raw.close()
            continue
        threading.Thread(target=serve_conn, args=(conn,), daemon=True).start()


def server_ctx(cert, key):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    return ctx


def request_bytes(args, i) -> bytes:
    method = "POST" if args.body else "GET"
    # Requests on one connection differ by a path segment, not a query value
    # (query values leave the kernel masked).
    lines = [f"{method} {args.path}{'' if args.count == 1 else f'/{i}'} HTTP/1.1",
             "Host: tls.example", "User-Agent: gwt-pyssl/1"]
    if args.body:
        lines += ["Content-Type: application/json", f"Content-Length: {len(args.body.encode())}"]
    if args.token:
        lines.append(f"Authorization: Bearer {args.token}")
    lines += args.header
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def client(host, port, args):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection((host, port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname="tls.example") as s:
            for i in range(args.count):
                req = request_bytes(args, i)
                step = args.split or len(req)
                for off in range(0, len(req), step):
                    s.sendall(req[off:off + step])
                if args.body:
                    s.sendall(args.body.encode())  # its own SSL_write
                head = read_head(s)
                if not head.startswith(b"HTTP/1.1 200"):
                    raise SystemExit(f"bad response: {head[:80]!r}")
                # body: Content-Length bytes (may have arrived with the head)
                body = head.split(b"\r\n\r\n", 1)[1]
                while len(body) < len(BODY):
                    body += s.recv(65536)
    print("ok", flush=True)


def hostport(s):
    host, _, port = s.rpartition(":")
    return host.strip("[]"), int(port)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["pair", "server", "client"])
    ap.add_argument("--cert")
    ap.add_argument("--key")
    ap.add_argument("--listen", default="127.0.0.1:0")
    ap.add_argument("--connect")
    ap.add_argument("--path", default="/")
    ap.add_argument("--token")
    ap.add_argument("--header", action="append", default=[])
    ap.add_argument("--split", type=int, default=0)
    ap.add_argument("--count", type=int, default=1)
    ap.add_argument("--body")
    args = ap.parse_args()

    if args.mode == "client":
        host, port = hostport(args.connect)
        client(host, port, args)
        return
    host, port = hostport(args.listen)
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    lsock = socket.socket(fam, socket.SOCK_STREAM)
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsock.bind((host, port))
    lsock.listen(64)
    ctx = server_ctx(args.cert, args.key)
    if args.mode == "server":
        print(f"ready {lsock.getsockname()[1]}", flush=True)
        server_loop(ctx, lsock)
        return
    threading.Thread(target=server_loop, args=(ctx, lsock), daemon=True).start()
    client(host, lsock.getsockname()[1], args)


if __name__ == "__main__":
    sys.exit(main())
