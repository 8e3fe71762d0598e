#!/usr/bin/env python3
"""Groups a callgrind profile of the gateway by component, per request.

    callgrind_groups.py CALLGRIND_OUT... --requests N [--idle IDLE_OUT...] [--top 25]

Reads callgrind's own output format (every file given is added up, e.g. one dump per
thread). Prints, per request:
  - instructions by component: each instruction is charged to the source file it came
    from (inlined code to the file it was inlined from, `fi=`), and the file to a
    component (crate, or a part of Pingora / Portcullis by path);
  - inclusive instructions of the phase entry points (Portcullis's ProxyHttp methods,
    Pingora's session steps);
  - heap allocations (calls into the allocator) by the component of the first caller that
    is not generic allocation plumbing (needs callgrind's
    --separate-callers<N>=<allocator function> to see past the direct caller), and the
    top allocation sites.
Used by loadtest/attribution.sh; see docs/performance-attribution.md.
"""

import argparse
import collections
import re
import sys

# (component, regex on the source file path); first match wins.
FILE_RULES = [
    ("alloc: mimalloc", r"mimalloc"),
    ("http1 parse: httparse", r"/httparse-"),
    ("pingora: h1 server session", r"pingora-core-[^/]+/src/protocols/http/v1/server\.rs"),
    ("pingora: h1 client session", r"pingora-core-[^/]+/src/protocols/http/v1/client\.rs"),
    ("pingora: h1 common/body", r"pingora-core-[^/]+/src/protocols/http/v1/"),
    ("pingora: http session glue", r"pingora-core-[^/]+/src/protocols/http/"),
    ("pingora: l4 stream + digest", r"pingora-core-[^/]+/src/protocols/(l4|digest|mod)"),
    ("pingora: connectors + pool", r"(pingora-core-[^/]+/src/connectors/|pingora-pool-)"),
    ("pingora: HttpPeer", r"pingora-core-[^/]+/src/upstreams/"),
    ("pingora: listeners/apps/services", r"pingora-core-[^/]+/src/(listeners|apps|services|server)/"),
    ("pingora: core other", r"pingora-core-"),
    ("pingora: proxy phases", r"pingora-proxy-"),
    ("pingora: cache", r"pingora-cache-"),
    ("pingora: header maps (pingora-http)", r"pingora-http-"),
    ("header maps: http", r"/http-[0-9]"),
    ("timers: pingora-timeout", r"pingora-timeout-"),
    ("timers: tokio time", r"tokio-[^/]+/src/(runtime/time|time)/"),
    ("tokio: I/O driver + mio", r"(tokio-[^/]+/src/(runtime/io|io|net)/|/mio-)"),
    ("tokio: scheduler/tasks", r"tokio-"),
    ("futures/async-trait glue", r"(futures-|async-trait-|pin-project)"),
    ("bytes", r"/bytes-"),
    ("hashing (ahash/hashbrown/siphash)", r"(ahash-|hashbrown-|/core/src/hash/)"),
    ("portcullis: access log", r"/src/(telemetry/)?access_log\.rs"),
    ("portcullis: metrics", r"/src/(telemetry/)?metrics\.rs"),
    ("portcullis: router", r"/src/(model/)?router\.rs"),
    ("portcullis: request id/trace", r"/src/proxy/trace\.rs"),
    ("portcullis: forwarding headers", r"/src/proxy/(forwarding|hygiene|client)\.rs"),
    ("portcullis: upstream selection", r"/src/((model/)?upstream/|proxy/choice\.rs|(model/)?canary\.rs)"),
    ("portcullis: compression/cache", r"/src/((model/|proxy/)?compression\.rs|(model/)?cache/)"),
    ("portcullis: proxy phases", r"/src/proxy/"),
    ("plugins: auth (key_auth, jwt, consumers)", r"/plugins/src/(auth|jwt|key_auth|consumers)"),
    ("plugins: rate_limit", r"/plugins/src/(rate_limit|request_key)"),
    ("plugins: chain + other", r"/plugins/src/"),
    ("portcullis: other", r"/src/[a-z_/]+\.rs$"),  # only our own files reach this rule
    ("metrics: prometheus", r"prometheus-"),
    ("log: serde_json/chrono/itoa/ryu", r"(serde_json-|chrono-|/itoa-|/ryu-|/serde-)"),
    ("rand", r"(rand-|rand_core-|rand_chacha-|ppv-lite|getrandom-)"),
    ("jwt/crypto", r"(jsonwebtoken|ring-|openssl|sha2-|base64-|subtle-)"),
    ("arc-swap", r"arc-swap-"),
    ("regex", r"regex"),
    ("log crate", r"/log-0"),
    ("std: fmt", r"/library/core/src/fmt/"),
    ("std: strings/slices/other", r"/library/"),
    ("libc: memcpy/memset/str*", r"(mem(cpy|move|set|cmp)|str(len|chr|cmp))"),
]

# Function names charged whatever their file says (libc has no line info).
FN_RULES = [
    ("alloc: mimalloc", r"^_?mi_|^mi_"),
    ("alloc: glibc malloc", r"^(malloc|free|realloc|calloc|_int_(malloc|free|realloc)|malloc_consolidate|tcache|__libc_(malloc|free|calloc|realloc)|cfree)"),
    ("libc: memcpy/memset/str*", r"^__(mem|str|wmem)\w*"),
    ("libc: syscall wrappers", r"^(__)?(libc_)?(epoll|read|write|recv|send|writev|readv|sendmsg|recvmsg|clock_gettime|syscall|futex|close|accept|connect|getsockopt|setsockopt|ioctl|sched_yield|nanosleep|pthread|__lll|__GI_|__futex|__vdso|_dl_)"),
]

# The coarse groups of the summary table, by prefix of the components above.
SUMMARY = [
    ("HTTP/1 parse + serialise (httparse, pingora h1)", ("http1 parse", "pingora: h1", "pingora: http session")),
    ("header maps (http, pingora-http)", ("header maps", "pingora: header maps")),
    ("allocator", ("alloc:",)),
    ("memcpy/memset", ("libc: memcpy",)),
    ("tokio scheduler, I/O driver, futures", ("tokio", "timers: tokio", "futures")),
    ("pingora-proxy phase machinery", ("pingora: proxy phases",)),
    ("connection pool, HttpPeer, hashing", ("pingora: connectors", "pingora: HttpPeer", "hashing")),
    ("pingora streams, services, other", ("pingora:",)),
    ("timeouts (pingora-timeout)", ("timers: pingora-timeout",)),
    ("bytes", ("bytes",)),
    ("formatting (core::fmt)", ("std: fmt",)),
    ("std other (Vec, drop, slices)", ("std:",)),
    ("Portcullis code (own instructions)", ("portcullis",)),
    ("plugins code (own instructions)", ("plugins",)),
    ("log/metrics/trace libraries", ("log", "metrics", "rand", "arc-swap", "regex", "jwt")),
    ("libc wrappers, other", ("",)),
]

PHASES = [
    ("pingora: read request header (downstream)", r"v1::server::HttpSession::read_request::\{\{closure\}\}$"),
    ("pingora: write response header (downstream)", r"v1::server::HttpSession::write_response_header"),
    ("pingora: upstream connection from the pool", r"http::Connector<C>::get_http_session::\{\{closure\}\}$"),
    ("pingora: upstream connection back to the pool", r"http::Connector<C>::release_http_session::\{\{closure\}\}$"),
    ("pingora: read response header (upstream)", r"v1::client::HttpSession::read_response::\{\{closure\}\}$"),
    ("pingora: write request header (upstream)", r"v1::client::HttpSession::write_request_header::\{\{closure\}\}$"),
    ("portcullis: request_filter", r"Proxy as pingora_proxy::proxy_trait::ProxyHttp>::request_filter"),
    ("portcullis: early_request_filter", r"Proxy as pingora_proxy::proxy_trait::ProxyHttp>::early_request_filter"),
    ("portcullis: proxy_upstream_filter", r"Proxy as pingora_proxy::proxy_trait::ProxyHttp>::proxy_upstream_filter"),
    ("portcullis: upstream_peer", r"Proxy as pingora_proxy::proxy_trait::ProxyHttp>::upstream_peer"),
    ("portcullis: upstream_request_filter", r"Proxy as pingora_proxy::proxy_trait::ProxyHttp>::upstream_request_filter"),
    ("portcullis: upstream_response_filter", r"Proxy as pingora_proxy::proxy_trait::ProxyHttp>::upstream_response_filter"),
    ("portcullis: response_filter", r"Proxy as pingora_proxy::proxy_trait::ProxyHttp>::response_filter"),
    ("portcullis: logging", r"Proxy as pingora_proxy::proxy_trait::ProxyHttp>::logging"),
    ("portcullis: new_ctx", r"Proxy as pingora_proxy::proxy_trait::ProxyHttp>::new_ctx"),
    ("portcullis: RequestCtx drop", r"drop_in_place<portcullis::proxy::context::RequestCtx>"),
    ("plugins: chain request", r"PluginChain::request::\{\{closure\}\}$"),
    ("access log write", r"AccessLog::write$"),
    ("access log writer thread", r"access_log::drain"),
    ("bare: upstream_peer", r"Bare as pingora_proxy::proxy_trait::ProxyHttp>::upstream_peer"),
]

# Allocation entry points (the first name of a --separate-callers context).
ALLOC_FNS = re.compile(
    r"^(mi_malloc_aligned|mi_zalloc_aligned|mi_realloc_aligned|malloc|calloc|realloc)(?:'|$)"
)
# Frames skipped when looking for who asked for an allocation.
GENERIC = re.compile(
    r"^(alloc::|<alloc::|core::|<core::|std::|<std::|__rust|__rdl|__rg|bytes::|<bytes::"
    r"|hashbrown::|<hashbrown::|<T as |<\[|<&|<str|<\(|mimalloc|<mimalloc|_?mi_|malloc|realloc"
    r"|calloc|smallvec::|<smallvec::|http::header::map::|<http::header::map::"
    r"|RawVec|__libc|<Box|<alloc)"
)

# Functions of Portcullis and its plugins (and of the bare example), except the wrappers
# that hold a whole connection (runtime::connections: every allocation has them on its stack).
OURS = re.compile(r"^(?!.*ServerApp>::process_new).*(portcullis|bare_proxy::)")

NAME = re.compile(r"^\((\d+)\)(?: (.*))?$")


class Profile:
    def __init__(self):
        self.total = 0
        self.by_file = collections.Counter()  # file -> self Ir
        self.by_fn_self = collections.Counter()  # (fn, file) -> self Ir
        self.fn_file = {}
        self.calls = collections.Counter()  # (caller, callee) -> count
        self.call_ir = collections.Counter()  # (caller, callee) -> inclusive Ir


def parse(path, profile, sign=1):
    names = {"fl": {}, "fn": {}, "ob": {}}

    def name(kind, value):
        m = NAME.match(value)
        if not m:
            return value
        ident, text = m.group(1), m.group(2)
        table = names["fl" if kind in ("fl", "fi", "fe", "cfl", "cfi") else kind.lstrip("c")]
        if text is not None:
            table[ident] = text
            return text
        return table.get(ident, "?")

    fn = file = cur_file = "?"
    pending_call = None
    with open(path, errors="replace") as f:
        for line in f:
            line = line.rstrip("\n")
            if not line:
                continue
            c = line[0]
            if c.isdigit() or c in "+-*":
                parts = line.split()
                ir = sign * (int(parts[1]) if len(parts) > 1 else 0)
                if pending_call is not None:
                    callee, count = pending_call
                    profile.calls[(fn, callee)] += sign * count
                    profile.call_ir[(fn, callee)] += ir
                    pending_call = None
                else:
                    profile.by_file[(cur_file, fn)] += ir
                    profile.by_fn_self[fn] += ir
                    profile.total += ir
                continue
            key, _, value = line.partition("=")
            if key == "fl":
                file = cur_file = name("fl", value)
            elif key in ("fi", "fe"):
                cur_file = name("fl", value)
            elif key == "fn":
                fn = name("fn", value)
                cur_file = file
                profile.fn_file.setdefault(fn, file)
            elif key in ("cfl", "cfi", "cob"):
                name(key, value)
            elif key == "ob":
                name("ob", value)
            elif key == "cfn":
                callee = name("fn", value)
                pending_call = (callee, 0)
            elif key == "calls":
                count = int(value.split()[0])
                pending_call = (pending_call[0] if pending_call else "?", count)


def component_of(file, fn):
    for comp, rule in FN_RULES:
        if re.search(rule, fn):
            return comp
    dependency = re.search(r"/\.cargo/|/rustc/|/library/|^/usr/|/build/", file) is not None
    for comp, rule in FILE_RULES:
        if dependency and comp.startswith(("portcullis", "plugins")):
            continue
        if re.search(rule, file):
            return comp
    if file in ("???", "?"):
        return "libc/ld.so/other (no line info)"
    return "other: " + file.rsplit("/", 1)[-1]


def allocations(profile):
    """(callers, innermost first; count) of every call into the allocator from outside it."""
    for (caller, callee), count in profile.calls.items():
        if ALLOC_FNS.match(callee) and not ALLOC_FNS.match(caller):
            yield callee.split("'")[1:] or [caller], count


def origin(profile, file, fn):
    """The file an instruction is charged to: where its code came from, except that the
    standard library's small helpers (Option, slices, atomics, ptr) inlined into a function
    count as that function's own code."""
    if "/library/" in file:
        own = profile.fn_file.get(fn, file)
        if "/library/" not in own and own not in ("???", "?"):
            return own
    return file


def base(fn):
    return fn.split("'", 1)[0]


def table(title, columns, rows):
    """Prints a markdown table: the first column left-aligned, the others right-aligned."""
    print(f"\n{title}")
    print("| " + " | ".join(columns) + " |")
    print("|---|" + "---:|" * (len(columns) - 1))
    for row in rows:
        print("| " + " | ".join(str(cell) for cell in row) + " |")


def inclusive_costs(profile):
    """Inclusive cost of each function: its own instructions and every call it makes (the
    --separate-callers contexts of one function added up; recursion counted once)."""
    inclusive = collections.Counter()
    for fn, ir in profile.by_fn_self.items():
        inclusive[base(fn)] += ir
    for (caller, callee), ir in profile.call_ir.items():
        if base(caller) != base(callee):
            inclusive[base(caller)] += ir
    return inclusive


def neighbours(profile, rule, callers):
    """Inclusive cost and call count of the callers (or callees) of functions matching rule."""
    cost, calls = collections.Counter(), collections.Counter()
    for (caller, callee), ir in profile.call_ir.items():
        inner, outer = (callee, caller) if callers else (caller, callee)
        if re.search(rule, base(inner)) and not re.search(rule, base(outer)):
            cost[base(outer)] += ir
            calls[base(outer)] += profile.calls[(caller, callee)]
    return cost, calls


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("files", nargs="+")
    ap.add_argument("--requests", type=float, required=True)
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument(
        "--callers",
        action="append",
        default=[],
        help="also list the callers of functions matching this regex, by inclusive cost",
    )
    ap.add_argument(
        "--callees",
        action="append",
        default=[],
        help="also list what functions matching this regex call, by inclusive cost",
    )
    ap.add_argument(
        "--idle",
        action="append",
        default=[],
        help="a dump of the same process idle for as long: subtracted (background threads, timers)",
    )
    args = ap.parse_args()
    profile = Profile()
    for path in args.files:
        parse(path, profile)
    n = args.requests
    print(f"total instructions: {profile.total:,} = {profile.total / n:,.0f} per request")
    if args.idle:
        busy = profile.total
        for path in args.idle:
            parse(path, profile, sign=-1)
        idle = busy - profile.total
        print(f"idle for as long: {idle:,} ({idle / n:,.0f} per request), subtracted below")

    def per(x):
        return f"{x / n:,.0f}"

    def rate(x):
        return f"{x / n:.2f}"

    comps = collections.Counter()
    for (file, fn), ir in profile.by_file.items():
        comps[component_of(origin(profile, file, fn), base(fn))] += ir
    table(
        "## instructions per request by component (self cost, inlined code by origin)",
        ["component", "Ir/req", "share"],
        [(c, per(ir), f"{100 * ir / profile.total:.1f}%") for c, ir in comps.most_common() if ir >= n],
    )

    summary = collections.Counter()
    for comp, ir in comps.items():
        summary[next(g for g, prefixes in SUMMARY if comp.startswith(prefixes))] += ir
    table(
        "## summary: instructions per request by group",
        ["group", "Ir/req"],
        [(group, per(summary[group])) for group, _ in SUMMARY],
    )

    inclusive = inclusive_costs(profile)
    calls_into = collections.Counter()
    for (caller, callee), count in profile.calls.items():
        if base(caller) != base(callee):
            calls_into[base(callee)] += count
    rows = []
    for label, rule in PHASES:
        fns = [f for f in inclusive if re.search(rule, f)]
        if fns:
            ir = sum(inclusive[f] for f in fns)
            rows.append((label, per(ir), rate(sum(calls_into[f] for f in fns)), len(fns)))
    table(
        "## inclusive instructions per request of the phase entry points",
        ["phase", "Ir/req", "calls/req", "functions"],
        rows,
    )

    # Allocations: charged to the first caller that is not allocation plumbing, and to the
    # innermost Portcullis/plugin function on the stack.
    sites, alloc_comps, ours = collections.Counter(), collections.Counter(), collections.Counter()
    for chain, count in allocations(profile):
        site = next((f for f in chain if not GENERIC.match(f)), chain[-1])
        sites[site] += count
        alloc_comps[component_of(profile.fn_file.get(site, "?"), site)] += count
        mine = next((f for f in chain if OURS.search(f)), None)
        if mine is not None:
            ours[mine] += count
    shown = n / 100
    table(
        f"## heap allocations (allocator calls incl. realloc): {rate(sum(sites.values()))} per request",
        ["component of the asking function", "allocs/req"],
        [(c, rate(k)) for c, k in alloc_comps.most_common() if k >= shown],
    )
    table(
        f"### allocations made inside Portcullis/plugin code: {rate(sum(ours.values()))} per request",
        ["innermost Portcullis/plugin function on the stack", "allocs/req"],
        [(f"`{f[:150]}`", rate(k)) for f, k in ours.most_common(args.top) if k >= shown],
    )
    table(
        f"### top {args.top} allocation sites",
        ["function", "allocs/req"],
        [(f"`{f[:150]}`", rate(k)) for f, k in sites.most_common(args.top) if k >= shown],
    )

    own = collections.Counter()
    for (file, fn), ir in profile.by_file.items():
        own[(component_of(origin(profile, file, fn), base(fn)), base(fn))] += ir
    table(
        f"## top {args.top * 2} functions by own instructions (inlined code included)",
        ["component", "function", "Ir/req"],
        [(c, f"`{f[:120]}`", per(ir)) for (c, f), ir in own.most_common(args.top * 2)],
    )
    for rule in args.callers:
        cost, _ = neighbours(profile, rule, callers=True)
        table(
            f"## callers of /{rule}/ by inclusive instructions per request",
            ["caller", "Ir/req"],
            [(f"`{f[:150]}`", per(ir)) for f, ir in cost.most_common(args.top)],
        )
    for rule in args.callees:
        cost, calls = neighbours(profile, rule, callers=False)
        table(
            f"## callees of /{rule}/ by inclusive instructions per request",
            ["callee", "Ir/req", "calls/req"],
            [(f"`{f[:150]}`", per(ir), rate(calls[f])) for f, ir in cost.most_common(args.top)],
        )
    table(
        f"## top {args.top} functions by inclusive instructions per request",
        ["function", "Ir/req"],
        [(f"`{f[:150]}`", per(ir)) for f, ir in inclusive.most_common(args.top)],
    )


if __name__ == "__main__":
    sys.exit(main())
