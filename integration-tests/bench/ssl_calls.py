#!/usr/bin/env python3
"""Cost of one SSL_write / SSL_read call, without sockets or threads: a TLS
client and server (CPython ssl.SSLObject over memory BIOs, so SSL_write_ex /
SSL_read_ex of the system libssl) in one thread exchange ROUNDS request/response
pairs: 4 SSL calls per round, each carrying a small HTTP/1.1 message the sensor
parses. No scheduler hand-offs, so the per-call difference with the sensor on
is the probes' and the parser's cost.

    ssl_calls.py CERT KEY ROUNDS [opaque] [repeat]

"opaque": the messages are not HTTP (the probes run, the parser stops at the
first byte). Prints the best of `repeat` (default 3) runs: rounds seconds ns_per_call.
"""

import ssl
import sys
import time

REQ = (b"GET /bench HTTP/1.1\r\nHost: bench.example\r\nUser-Agent: gw-bench/1\r\n"
       b"Authorization: Bearer 0123456789abcdef0123456789abcdef\r\nAccept: */*\r\n\r\n")
RESP = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 0\r\n\r\n"


def pump(src: ssl.MemoryBIO, dst: ssl.MemoryBIO):
    data = src.read()
    if data:
        dst.write(data)


def connect(cert, key):
    sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    sctx.load_cert_chain(cert, key)
    cctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    cctx.check_hostname = False
    cctx.verify_mode = ssl.CERT_NONE
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    cli = cctx.wrap_bio(c_in, c_out)
    srv = sctx.wrap_bio(s_in, s_out, server_side=True)
    for _ in range(10):
        done = 0
        for side in (cli, srv):
            try:
                side.do_handshake()
                done += 1
            except ssl.SSLWantReadError:
                pass
        pump(c_out, s_in)
        pump(s_out, c_in)
        if done == 2:
            break
    return cli, srv, c_in, c_out, s_in, s_out


def run(cert, key, rounds, req, resp):
    cli, srv, c_in, c_out, s_in, s_out = connect(cert, key)
    t0 = time.perf_counter()
    for _ in range(rounds):
        cli.write(req)
        s_in.write(c_out.read())
        srv.read(4096)
        srv.write(resp)
        c_in.write(s_out.read())
        cli.read(4096)
    return time.perf_counter() - t0


def main():
    cert, key, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
    opaque = len(sys.argv) > 4 and sys.argv[4] == "opaque"
    repeat = int(sys.argv[5]) if len(sys.argv) > 5 else 3
    req, resp = (b"x" * len(REQ), b"y" * len(RESP)) if opaque else (REQ, RESP)
    best = min(run(cert, key, rounds, req, resp) for _ in range(repeat))
    print(f"{rounds} {best:.4f} {best / (rounds * 4) * 1e9:.0f}")


if __name__ == "__main__":
    main()
