"""Sends COUNT HTTP/1.1 requests at a steady RATE per second on one
keep-alive connection, each with `X-Request-Id: <n>`, pipelined: a reader
thread takes the responses, so the pace never waits on a round trip (or on
Nagle plus delayed ACK, 40 ms each). Prints `sent N answered M`. Runs inside
the client namespace.

    python3 load_http.py HOST PORT COUNT RATE
"""

import socket
import sys
import threading
import time


def main():
    host, port, count, rate = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
    sock = socket.create_connection((host, port), timeout=30)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    answered = [0]

    def reader():
        tail = b""
        while answered[0] < count:
            try:
                data = sock.recv(65536)
            except OSError:
                return
            if not data:
                return
            tail += data
            answered[0] += tail.count(b"HTTP/1.1 ")
            tail = tail[tail.rfind(b"HTTP/1.1 ") + 9:] if b"HTTP/1.1 " in tail else tail[-8:]

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    start = time.monotonic()
    sent = 0
    for n in range(count):
        delay = start + n / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        sock.sendall(f"GET /kafka/{n} HTTP/1.1\r\nHost: {host}\r\n"
                     f"X-Request-Id: {n}\r\n\r\n".encode())
        sent += 1
    t.join(30)
    sock.close()
    print(f"sent {sent} answered {answered[0]}", flush=True)


if __name__ == "__main__":
    main()
