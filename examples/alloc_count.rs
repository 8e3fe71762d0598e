//! Heap allocations per request, counted in process: the gateway (or the bare Pingora
//! proxy) runs on threads of this process under a counting wrapper of the gateway's own
//! allocator (`portcullis::runtime::allocator`), while an in-process upstream and a keep-alive
//! client, both left out of the count, send a fixed number of requests through it.
//!
//! ```text
//! cargo build --release --example alloc_count
//! target/release/examples/alloc_count bare
//! target/release/examples/alloc_count loadtest/conf/plain.yaml
//! target/release/examples/alloc_count loadtest/conf/full.yaml --path /api/v1/items/42
//! ```
//!
//! A config is a `loadtest/conf/*.yaml` template: `{dir}` becomes a temporary directory,
//! `{listen}`, `{admin}` and `{upstream…}` free ports (every upstream port is served by the
//! in-process upstream). When the config names `{dir}/NAME-jwks.json`, the JWKS is written
//! there and every request carries a bearer token signed by it (as `examples/auth_fixture`
//! does for `loadtest/compare.sh`). Prints allocations, reallocations, frees and bytes per
//! request over the measured requests (after a warm-up that fills the connection pools).

#[allow(dead_code)]
#[path = "../tests/auth/signing.rs"]
mod signing;

#[path = "common/bare.rs"]
mod bare;

use std::alloc::{GlobalAlloc, Layout};
use std::cell::Cell;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use clap::Parser;

#[global_allocator]
static GLOBAL: Counting = Counting {
    inner: portcullis::runtime::allocator::ALLOCATOR,
};

/// The gateway's allocator, counting what every thread but the uncounted ones asks of it.
struct Counting {
    inner: portcullis::runtime::allocator::Allocator,
}

static ALLOCS: AtomicU64 = AtomicU64::new(0);
static REALLOCS: AtomicU64 = AtomicU64::new(0);
static FREES: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);
/// Live blocks by size class: class `i` holds sizes in `(2^(i-1), 2^i]`.
static LIVE: [AtomicI64; CLASSES] = [const { AtomicI64::new(0) }; CLASSES];
/// Live bytes by size class.
static LIVE_BYTES: [AtomicI64; CLASSES] = [const { AtomicI64::new(0) }; CLASSES];
const CLASSES: usize = 32;

fn class(size: usize) -> usize {
    (usize::BITS - size.saturating_sub(1).leading_zeros()).min(CLASSES as u32 - 1) as usize
}

/// Live bytes in all, and the most there were since the last [`reset_peak`].
static LIVE_TOTAL: AtomicI64 = AtomicI64::new(0);
static PEAK: AtomicI64 = AtomicI64::new(0);

fn live(size: usize, blocks: i64) {
    let delta = blocks * size as i64;
    LIVE[class(size)].fetch_add(blocks, Relaxed);
    LIVE_BYTES[class(size)].fetch_add(delta, Relaxed);
    let total = LIVE_TOTAL.fetch_add(delta, Relaxed) + delta;
    PEAK.fetch_max(total, Relaxed);
}

/// Starts a new peak at the live bytes of now, and returns them.
fn reset_peak() -> i64 {
    let now = LIVE_TOTAL.load(Relaxed);
    PEAK.store(now, Relaxed);
    now
}

thread_local! {
    /// Set on the client and upstream threads: their allocations are not the gateway's.
    static UNCOUNTED: Cell<bool> = const { Cell::new(false) };
}

fn counted() -> bool {
    UNCOUNTED.try_with(|flag| !flag.get()).unwrap_or(false)
}

// SAFETY: every call is forwarded unchanged to the inner allocator; the counters are
// plain atomics and the thread-local flag is const-initialised (no allocation).
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if counted() {
            ALLOCS.fetch_add(1, Relaxed);
            BYTES.fetch_add(layout.size() as u64, Relaxed);
            live(layout.size(), 1);
        }
        self.inner.alloc(layout)
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if counted() {
            ALLOCS.fetch_add(1, Relaxed);
            BYTES.fetch_add(layout.size() as u64, Relaxed);
            live(layout.size(), 1);
        }
        self.inner.alloc_zeroed(layout)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if counted() {
            FREES.fetch_add(1, Relaxed);
            live(layout.size(), -1);
        }
        self.inner.dealloc(ptr, layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if counted() {
            REALLOCS.fetch_add(1, Relaxed);
            BYTES.fetch_add(new_size.saturating_sub(layout.size()) as u64, Relaxed);
            live(layout.size(), -1);
            live(new_size, 1);
        }
        self.inner.realloc(ptr, layout, new_size)
    }
}

#[derive(Clone, Copy)]
struct Counts {
    allocs: u64,
    reallocs: u64,
    frees: u64,
    bytes: u64,
}

impl Counts {
    fn now() -> Self {
        Self {
            allocs: ALLOCS.load(Relaxed),
            reallocs: REALLOCS.load(Relaxed),
            frees: FREES.load(Relaxed),
            bytes: BYTES.load(Relaxed),
        }
    }
}

#[derive(Parser)]
#[command(name = "alloc_count", about = "Heap allocations per proxied request")]
struct Args {
    /// `bare` (Pingora with nothing but upstream_peer) or a loadtest/conf/*.yaml template.
    target: String,
    /// The request path.
    #[arg(long, default_value = "/")]
    path: String,
    /// Measured requests.
    #[arg(long, default_value_t = 20_000)]
    requests: u64,
    /// Warm-up requests (not counted).
    #[arg(long, default_value_t = 2_000)]
    warmup: u64,
    /// Keep-alive client connections; requests go round-robin over them, one at a time.
    #[arg(long, default_value_t = 1)]
    connections: usize,
    /// Instead of counting per request: open this many more connections after the
    /// warm-up, one request on each, and print the heap each idle connection holds.
    #[arg(long, default_value_t = 0)]
    idle: usize,
    /// With --idle: send the requests on all the new connections before reading any
    /// answer, so the upstream pool opens one connection per request.
    #[arg(long)]
    concurrent: bool,
    /// For `bare`: the size of each client connection's L4 read buffer (Pingora's
    /// default, 64 KiB, when not given; 0 for none).
    #[arg(long)]
    l4_read_buffer: Option<usize>,
}

fn main() -> Result<(), String> {
    UNCOUNTED.with(|flag| flag.set(true));
    let args = Args::parse();
    let dir = std::env::temp_dir().join(format!("portcullis-alloc-count-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let result = run(&args, &dir);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn run(args: &Args, dir: &Path) -> Result<(), String> {
    let upstream = start_upstream()?;
    let mut token = None;
    let listen = if args.target == "bare" {
        let listen = format!("127.0.0.1:{}", free_port()?);
        let (listen2, upstream) = (listen.clone(), format!("127.0.0.1:{upstream}"));
        let read_buffer = args.l4_read_buffer;
        std::thread::spawn(move || bare::serve(&listen2, upstream, 1, read_buffer));
        listen
    } else {
        let (conf, listen, jwks) = render(Path::new(&args.target), dir, upstream)?;
        if let Some(jwks) = jwks {
            token = Some(write_jwks(&jwks)?);
        }
        std::thread::spawn(move || {
            let options = portcullis::server::RunOptions::default();
            if let Err(problems) = portcullis::server::run(&conf, options) {
                eprintln!("{problems}");
                std::process::exit(1);
            }
        });
        listen
    };
    let request = request_bytes(&args.path, &listen, token.as_deref());
    let mut client = Client::connect(&listen, args.connections, &request)?;
    client.send(args.warmup)?;
    if args.idle > 0 {
        // Returning from main ends the process, Pingora's server threads with it.
        return idle_connections(args, &listen, &request);
    }
    let before = Counts::now();
    let started = Instant::now();
    client.send(args.requests)?;
    let elapsed = started.elapsed();
    let after = Counts::now();
    report(args, before, after, elapsed);
    Ok(())
}

fn report(args: &Args, before: Counts, after: Counts, elapsed: Duration) {
    let n = args.requests as f64;
    let per = |a: u64, b: u64| (a - b) as f64 / n;
    println!(
        "{} {}: {} requests over {} connection(s) in {:.2?}",
        args.target, args.path, args.requests, args.connections, elapsed
    );
    println!(
        "allocs/req {:.2}  reallocs/req {:.2}  frees/req {:.2}  bytes/req {:.0}  live blocks/req {:+.2}",
        per(after.allocs, before.allocs),
        per(after.reallocs, before.reallocs),
        per(after.frees, before.frees),
        per(after.bytes, before.bytes),
        (after.allocs as f64 - before.allocs as f64 - (after.frees as f64 - before.frees as f64))
            / n,
    );
}

/// Opens `args.idle` connections with one request each, keeps them open, and prints the
/// live heap they added, per connection and by block size.
fn idle_connections(args: &Args, listen: &str, request: &[u8]) -> Result<(), String> {
    let before = live_snapshot();
    let rss_before = rss_kib();
    let mut idle = Client::open(listen, args.idle, request)?;
    let live_before_requests = reset_peak();
    if args.concurrent {
        idle.concurrent_round()?;
    } else {
        idle.send(args.idle as u64)?;
    }
    let peak = PEAK.load(Relaxed) - live_before_requests;
    // Let the gateway settle (pool returns, timers) before looking.
    std::thread::sleep(Duration::from_secs(2));
    let after = live_snapshot();
    let n = args.idle as f64;
    println!(
        "{}: {} idle keep-alive connections after one request each{}",
        args.target,
        args.idle,
        if args.concurrent {
            " (sent concurrently)"
        } else {
            ""
        }
    );
    println!("| block size | live blocks/conn | live bytes/conn |");
    println!("|---|---:|---:|");
    let mut total = 0;
    for (i, ((blocks_b, bytes_b), (blocks_a, bytes_a))) in before.iter().zip(&after).enumerate() {
        let (blocks, bytes) = (blocks_a - blocks_b, bytes_a - bytes_b);
        total += bytes;
        if blocks.abs() as f64 / n >= 0.05 {
            let low = if i == 0 { 0 } else { (1u64 << (i - 1)) + 1 };
            println!(
                "| {low}-{} B | {:.2} | {:.0} |",
                1u64 << i,
                blocks as f64 / n,
                bytes as f64 / n
            );
        }
    }
    println!("| total | | {:.0} |", total as f64 / n);
    println!(
        "peak heap while the requests ran: +{:.0} bytes/conn over the open connections",
        peak as f64 / n
    );
    println!(
        "process RSS +{:.1} KiB/conn (includes this process's client and upstream)",
        (rss_kib() - rss_before) as f64 / n
    );
    drop(idle);
    Ok(())
}

fn live_snapshot() -> Vec<(i64, i64)> {
    LIVE.iter()
        .zip(&LIVE_BYTES)
        .map(|(blocks, bytes)| (blocks.load(Relaxed), bytes.load(Relaxed)))
        .collect()
}

fn rss_kib() -> i64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
            line.split_whitespace().nth(1)?.parse().ok()
        })
        .unwrap_or(0)
}

/// Renders a loadtest config template; returns its path, the listener address and the
/// JWKS path the config names, if any.
fn render(
    template: &Path,
    dir: &Path,
    upstream: u16,
) -> Result<(PathBuf, String, Option<PathBuf>), String> {
    let text =
        std::fs::read_to_string(template).map_err(|e| format!("{}: {e}", template.display()))?;
    if text.contains("{redis}") {
        return Err("configs that need redis are not supported here".into());
    }
    let listen = free_port()?;
    let mut text = text
        .replace("{dir}", &dir.display().to_string())
        .replace("{listen}", &listen.to_string())
        .replace("{admin}", &free_port()?.to_string());
    // {upstream}, {upstream2}, ...: all served by the one in-process upstream.
    while let Some(start) = text.find("{upstream") {
        let end = text[start..]
            .find('}')
            .map(|i| start + i + 1)
            .ok_or("unclosed {upstream placeholder")?;
        text.replace_range(start..end, &upstream.to_string());
    }
    let name = template
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("conf");
    let jwks = dir.join(format!("{name}-jwks.json"));
    let jwks = text.contains(&jwks.display().to_string()).then_some(jwks);
    let conf = dir.join(format!("{name}.yaml"));
    std::fs::write(&conf, text).map_err(|e| format!("{}: {e}", conf.display()))?;
    Ok((conf, format!("127.0.0.1:{listen}"), jwks))
}

/// Writes a JWKS with one RSA key and returns a token it verifies (what
/// `examples/auth_fixture` does for `loadtest/compare.sh`).
fn write_jwks(path: &Path) -> Result<String, String> {
    let key = signing::SigningKey::rsa("bench-1");
    std::fs::write(path, signing::jwks(&[&key])).map_err(|e| format!("{}: {e}", path.display()))?;
    let claims = serde_json::json!({
        "sub": "app-bench", "scope": "items:read", "exp": signing::now() + 86_400
    });
    Ok(key.mint(jsonwebtoken::Algorithm::RS256, &claims))
}

fn free_port() -> Result<u16, String> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    listener
        .local_addr()
        .map(|addr| addr.port())
        .map_err(|e| e.to_string())
}

/// The request wrk sends (`loadtest/compare.sh`): the request line and Host, plus the
/// bearer token of the auth rows.
fn request_bytes(path: &str, host: &str, token: Option<&str>) -> Vec<u8> {
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n{auth}\r\n").into_bytes()
}

/// The upstream: a fixed 64-byte answer to every request, on keep-alive connections, one
/// uncounted thread per connection. Returns its port.
fn start_upstream() -> Result<u16, String> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let port = listener.local_addr().map_err(|e| e.to_string())?.port();
    std::thread::spawn(move || {
        UNCOUNTED.with(|flag| flag.set(true));
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                UNCOUNTED.with(|flag| flag.set(true));
                serve_upstream(stream);
            });
        }
    });
    Ok(port)
}

const UPSTREAM_ANSWER: &[u8] =
    b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 64\r\n\r\n\
0123456789012345678901234567890123456789012345678901234567890123";

fn serve_upstream(mut stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let mut buf = [0u8; 16 * 1024];
    let mut filled = 0;
    loop {
        match stream.read(&mut buf[filled..]) {
            Ok(0) | Err(_) => return,
            Ok(n) => filled += n,
        }
        // GET requests without a body: every header block is one request.
        while let Some(end) = find(&buf[..filled], b"\r\n\r\n") {
            if stream.write_all(UPSTREAM_ANSWER).is_err() {
                return;
            }
            buf.copy_within(end + 4..filled, 0);
            filled -= end + 4;
        }
        if filled == buf.len() {
            return;
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Keep-alive client connections, used round-robin, one request in flight at a time.
struct Client<'a> {
    connections: Vec<TcpStream>,
    request: &'a [u8],
    buf: Vec<u8>,
    next: usize,
}

impl<'a> Client<'a> {
    /// `count` connections to a listener that already serves.
    fn open(addr: &str, count: usize, request: &'a [u8]) -> Result<Self, String> {
        let connections = (0..count)
            .map(|_| {
                let stream = TcpStream::connect(addr).map_err(|e| format!("{addr}: {e}"))?;
                let _ = stream.set_nodelay(true);
                Ok(stream)
            })
            .collect::<Result<_, String>>()?;
        Ok(Self {
            connections,
            request,
            buf: vec![0; 64 * 1024],
            next: 0,
        })
    }

    /// Connects once the listener answers (the server starts on another thread) and
    /// proxies a request.
    fn connect(addr: &str, count: usize, request: &'a [u8]) -> Result<Self, String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while let Err(e) = TcpStream::connect(addr) {
            if Instant::now() > deadline {
                return Err(format!("{addr}: {e}"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let mut client = Self::open(addr, count.max(1), request)?;
        // A config's first requests may find the gateway not yet serving (readiness).
        loop {
            let i = client.next;
            match client.round_trip() {
                Ok(()) => return Ok(client),
                Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(100));
                    client.connections[i] =
                        TcpStream::connect(addr).map_err(|e| format!("{addr}: {e}"))?;
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn send(&mut self, requests: u64) -> Result<(), String> {
        (0..requests).try_for_each(|_| self.round_trip())
    }

    /// One request on every connection, all sent before any answer is read.
    fn concurrent_round(&mut self) -> Result<(), String> {
        for stream in &mut self.connections {
            stream.write_all(self.request).map_err(|e| e.to_string())?;
        }
        (0..self.connections.len()).try_for_each(|i| self.read_answer(i))
    }

    /// One request on the next connection; the answer must be a 200 with its whole body.
    fn round_trip(&mut self) -> Result<(), String> {
        let i = self.next;
        self.next = (self.next + 1) % self.connections.len();
        self.connections[i]
            .write_all(self.request)
            .map_err(|e| e.to_string())?;
        self.read_answer(i)
    }

    fn read_answer(&mut self, i: usize) -> Result<(), String> {
        let stream = &mut self.connections[i];
        let mut filled = 0;
        loop {
            let n = stream
                .read(&mut self.buf[filled..])
                .map_err(|e| e.to_string())?;
            if n == 0 {
                return Err("connection closed".into());
            }
            filled += n;
            let Some(end) = find(&self.buf[..filled], b"\r\n\r\n") else {
                continue;
            };
            let head = &self.buf[..end];
            if !head.starts_with(b"HTTP/1.1 200") {
                return Err(String::from_utf8_lossy(head).into_owned());
            }
            let length = content_length(head).ok_or("answer without content-length")?;
            if filled >= end + 4 + length {
                return Ok(());
            }
        }
    }
}

fn content_length(head: &[u8]) -> Option<usize> {
    head.split(|&b| b == b'\n').find_map(|line| {
        let line = std::str::from_utf8(line).ok()?.trim();
        let (name, value) = line.split_once(':')?;
        name.eq_ignore_ascii_case("content-length")
            .then(|| value.trim().parse().ok())
            .flatten()
    })
}
