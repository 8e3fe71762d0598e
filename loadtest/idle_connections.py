#!/usr/bin/env python3
"""Memory per idle keep-alive connection of a running proxy.

    idle_connections.py --pid PID --url http://127.0.0.1:PORT/ [--connections 1000]
                        [--concurrent] [--settle 3] [--header 'Name: value']

Reads the proxy's memory (/proc/PID/status and smaps_rollup, summed over PID and its
children), opens CONNECTIONS keep-alive connections and sends one GET on each (one after
the other, or with --concurrent all before reading any answer, so the proxy's upstream pool
opens one upstream connection per request), waits SETTLE seconds with them idle, reads
the memory again, and prints the difference per connection. Used by
loadtest/idle-connections.sh; see docs/performance-attribution.md.
"""

import argparse
import socket
import subprocess
import sys
import time
from urllib.parse import urlsplit

FIELDS_STATUS = ("VmRSS", "RssAnon", "RssFile", "VmData")
FIELDS_SMAPS = ("Rss", "Pss", "Anonymous", "Private_Dirty")


def pids(pid):
    children = subprocess.run(
        ["pgrep", "-P", str(pid)], capture_output=True, text=True, check=False
    ).stdout.split()
    return [pid] + [int(c) for c in children]


def memory_kib(pid):
    total = dict.fromkeys(FIELDS_STATUS + tuple("smaps_" + f for f in FIELDS_SMAPS), 0)
    for p in pids(pid):
        with open(f"/proc/{p}/status") as f:
            for line in f:
                key, _, rest = line.partition(":")
                if key in FIELDS_STATUS:
                    total[key] += int(rest.split()[0])
        with open(f"/proc/{p}/smaps_rollup") as f:
            for line in f:
                key, _, rest = line.partition(":")
                if key in FIELDS_SMAPS:
                    total["smaps_" + key] += int(rest.split()[0])
    return total


def read_answer(sock, buf=bytearray(65536)):
    data = b""
    while True:
        n = sock.recv_into(buf)
        if n == 0:
            raise RuntimeError("connection closed")
        data += bytes(buf[:n])
        end = data.find(b"\r\n\r\n")
        if end < 0:
            continue
        head = data[:end].decode("latin-1")
        if not head.startswith("HTTP/1.1 200"):
            raise RuntimeError(head.splitlines()[0])
        length = next(
            (int(line.split(":", 1)[1]) for line in head.split("\r\n")
             if line.lower().startswith("content-length:")),
            None,
        )
        if length is None:
            raise RuntimeError("answer without content-length")
        if len(data) >= end + 4 + length:
            return


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pid", type=int, required=True)
    ap.add_argument("--url", required=True)
    ap.add_argument("--connections", type=int, default=1000)
    ap.add_argument("--concurrent", action="store_true")
    ap.add_argument("--settle", type=float, default=3.0)
    ap.add_argument("--header", action="append", default=[])
    args = ap.parse_args()
    url = urlsplit(args.url)
    extra = "".join(h + "\r\n" for h in args.header)
    request = f"GET {url.path or '/'} HTTP/1.1\r\nHost: {url.netloc}\r\n{extra}\r\n".encode()

    time.sleep(args.settle)
    before = memory_kib(args.pid)
    socks = []
    for _ in range(args.connections):
        s = socket.create_connection((url.hostname, url.port))
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        socks.append(s)
        if not args.concurrent:
            s.sendall(request)
            read_answer(s)
    if args.concurrent:
        for s in socks:
            s.sendall(request)
        for s in socks:
            read_answer(s)
    time.sleep(args.settle)
    after = memory_kib(args.pid)
    n = args.connections
    mode = "concurrent" if args.concurrent else "sequential"
    print(f"{n} idle connections ({mode}), KiB before -> after, KiB per connection:")
    for key in before:
        delta = after[key] - before[key]
        print(f"  {key:20} {before[key]:>9} -> {after[key]:>9}   {delta / n:8.2f}")
    for s in socks:
        s.close()


if __name__ == "__main__":
    sys.exit(main())
