"""Sends COUNT HTTP/1.1 requests at a steady RATE per second over one
keep-alive connection, each with `X-Request-Id: <n>`, and prints
`sent N` at the end. Runs inside the client namespace.

    python3 load_http.py HOST PORT COUNT RATE
"""

import http.client
import sys
import time


def main():
    host, port, count, rate = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
    conn = http.client.HTTPConnection(host, port, timeout=10)
    start = time.monotonic()
    sent = 0
    for n in range(count):
        # Steady pace: request n leaves at start + n/rate, never in a burst.
        delay = start + n / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        try:
            conn.request("GET", f"/kafka/{n}", headers={"X-Request-Id": str(n)})
            conn.getresponse().read()
        except (OSError, http.client.HTTPException):
            conn.close()
            conn = http.client.HTTPConnection(host, port, timeout=10)
            continue
        sent += 1
    conn.close()
    print(f"sent {sent}", flush=True)


if __name__ == "__main__":
    main()
