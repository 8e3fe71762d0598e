"""Lints HTTP/1.1 responses with httplint (REDbot's linter), each in the context of its
request. Reads a JSON list on stdin, one object per exchange: {"method", "target",
"fields": ["Name: value", ...] (the request's), "response": base64 of the raw response,
"time": when the response arrived, in Unix seconds (optional; now when absent)}.

Prints the notes of every response that has a BAD one, and exits 1 then. Used by
tests/http_semantics.rs.
"""

import base64
import json
import sys
import time

from httplint import HttpRequestLinter, HttpResponseLinter


def main() -> int:
    failed = False
    for exchange in json.load(sys.stdin):
        raw = base64.b64decode(exchange["response"])
        received = exchange.get("time", time.time())
        notes = lint(exchange["method"], exchange["target"], exchange["fields"], raw, received)
        if any(level == "BAD" for level, _ in notes):
            failed = True
            print(f"--- {exchange['method']} {exchange['target']} {exchange['fields']}")
            print(raw.decode("latin-1"))
            for level, summary in notes:
                print(f"[{level}] {summary}")
    return 1 if failed else 0


def lint(method: str, target: str, request_fields: list, raw: bytes, received: float) -> list:
    # The time the answer arrived, not the time of linting: the Date check (clock skew)
    # must not depend on how long the test ran before linting its answers.
    request = HttpRequestLinter(start_time=received)
    request.process_request_topline(method.encode(), target.encode(), b"HTTP/1.1")
    request.process_headers(
        [tuple(part.strip().encode() for part in field.split(":", 1)) for field in request_fields]
    )
    request.finish_content(True)

    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *lines = head.split(b"\r\n")
    version, status, phrase = (status_line.split(b" ", 2) + [b""])[:3]
    fields = [tuple(part.strip() for part in line.split(b":", 1)) for line in lines if line]
    response = HttpResponseLinter(start_time=received)
    response.request = request
    response.is_head_response = method == "HEAD"
    response.process_response_topline(version, status, phrase)
    response.process_headers(fields)
    if any(name.lower() == b"transfer-encoding" for name, _ in fields):
        body = dechunk(body)
    if response.can_have_content():
        response.feed_content(body)
    response.finish_content(True)

    return [(note.level.name, note.summary) for note in response.notes]


def dechunk(data: bytes) -> bytes:
    out = b""
    while data:
        size_line, _, rest = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out += rest[:size]
        data = rest[size + 2 :]
    return out


if __name__ == "__main__":
    sys.exit(main())
