#!/usr/bin/env python3
"""Hostile clients for loadtest/slowloris.sh: hold CONNECTIONS connections to one listener,
split evenly between three kinds, and open a new one whenever the gateway closes one:

  silent     connects and sends nothing
  slowloris  starts a request head and sends one more byte every --trickle seconds
  idle       sends one whole keep-alive request, reads the answer, then stays idle

Sources rotate over 127.0.0.2.. so per-address caps see several clients. Runs for
--duration seconds (loopback only), then prints a JSON summary: per kind, how many
connections were opened, how many the gateway closed, and the median and maximum time a
connection stayed open before the gateway closed it.
"""

import argparse
import asyncio
import json
import statistics
import time

KINDS = ("silent", "slowloris", "idle")


class Tally:
    def __init__(self):
        self.opened = 0
        self.failed = 0
        self.closed = []  # seconds each connection lived before the gateway closed it

    def summary(self):
        closed = sorted(self.closed)
        return {
            "opened": self.opened,
            "connect_failed": self.failed,
            "closed_by_gateway": len(closed),
            "median_life_s": round(statistics.median(closed), 2) if closed else None,
            "max_life_s": round(closed[-1], 2) if closed else None,
        }


async def until_closed(reader):
    """Reads and drops what the gateway sends until it closes the connection."""
    while await reader.read(4096):
        pass


async def one(kind, host, port, source, trickle, tally, stop_at):
    try:
        reader, writer = await asyncio.open_connection(host, port, local_addr=(source, 0))
    except OSError:
        tally.failed += 1
        await asyncio.sleep(0.5)
        return
    tally.opened += 1
    opened = time.monotonic()
    closed = asyncio.ensure_future(until_closed(reader))
    try:
        if kind == "idle":
            writer.write(b"GET / HTTP/1.1\r\nHost: loadtest\r\n\r\n")
        elif kind == "slowloris":
            writer.write(b"GET / HTTP/1.1\r\nHost: loadtest\r\n")
        padding = b"X-Padding: " + b"a" * 4096
        sent = 0
        while not closed.done() and time.monotonic() < stop_at:
            if kind == "slowloris":
                writer.write(padding[sent % len(padding):][:1])
                sent += 1
            await asyncio.wait([closed], timeout=trickle)
        if closed.done():
            tally.closed.append(time.monotonic() - opened)
    except (ConnectionError, OSError):
        tally.closed.append(time.monotonic() - opened)
    finally:
        closed.cancel()
        writer.close()


async def keep_open(kind, index, args, tally, stop_at):
    source = "127.0.0.%d" % (2 + index % args.sources)
    while time.monotonic() < stop_at:
        await one(kind, args.host, args.port, source, args.trickle, tally, stop_at)


async def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--connections", type=int, default=2000)
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--trickle", type=float, default=5.0)
    parser.add_argument("--sources", type=int, default=4)
    args = parser.parse_args()
    if args.host not in ("127.0.0.1", "localhost"):
        parser.error("loopback only")

    stop_at = time.monotonic() + args.duration
    tallies = {kind: Tally() for kind in KINDS}
    tasks = []
    for index in range(args.connections):
        kind = KINDS[index % len(KINDS)]
        tasks.append(asyncio.ensure_future(keep_open(kind, index, args, tallies[kind], stop_at)))
        if index % 100 == 99:
            await asyncio.sleep(0.05)  # ramp up instead of one SYN burst
    await asyncio.gather(*tasks)
    print(json.dumps({kind: tally.summary() for kind, tally in tallies.items()}))


if __name__ == "__main__":
    asyncio.run(main())
