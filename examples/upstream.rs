//! A small, fast HTTP/1.1 upstream for demos, load tests and benchmarks (`loadtest/`,
//! `scripts/run-example.sh`); the integration tests start their own servers
//! (`tests/common/upstream.rs`).
//!
//! ```text
//! cargo build --release --example upstream
//! target/release/examples/upstream --listen 127.0.0.1:9001 [--listen 127.0.0.1:9002 ...]
//!     [--name NAME] [--latency 0ms] [--error-rate 0.0] [--body-size 64] [--threads 1]
//! ```
//!
//! * `GET /healthz` answers 200 `ok` (never delayed, never fails).
//! * `/echo`, `/echo/...` or any path with an `echo` query parameter answers 200 with a JSON
//!   description of the request as received: upstream name, listen address, method, path,
//!   query, headers (lower-case names, repeated headers joined with ", ") and body size.
//! * `GET /doc.json` answers 200 with a fixed 16 KiB `application/json` document (a
//!   compressible representation, for the compressed-cache rows of `loadtest/compare.sh`).
//! * Every other request waits `--latency`, then fails with 500 with probability
//!   `--error-rate`, else answers 200 with a fixed `text/plain` body of `--body-size` bytes.
//! * The failure switch, for chaos tests: any request to `/_chaos/fail` makes the listener
//!   it arrived on answer every request but `/healthz` with 500 (so active health checks
//!   pass while passive outlier detection sees the failures); `/_chaos/recover` ends it.
//!
//! No configuration file is read. SIGINT exits at once, SIGTERM after draining for up to a second.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use clap::Parser;
use http::header::{HeaderValue, CONTENT_LENGTH, CONTENT_TYPE};
use http::{Response, StatusCode};
use pingora::apps::http_app::{HttpServer, ServeHttp};
use pingora::protocols::http::ServerSession;
use pingora::server::configuration::ServerConf;
use pingora::server::Server;
use pingora::services::listening::Service;
use rand::Rng;
use serde_json::{Map, Value};

#[derive(Parser, Debug)]
#[command(
    name = "upstream",
    about = "Fast HTTP/1.1 test upstream for Portcullis"
)]
struct Args {
    /// Address to listen on; repeat for several ports served by the same process.
    #[arg(long = "listen", required = true)]
    listen: Vec<String>,

    /// Name reported in echo responses (defaults to the first listen address).
    #[arg(long)]
    name: Option<String>,

    /// Delay before answering a non-health, non-echo request (e.g. 0ms, 5ms, 1s).
    #[arg(long, default_value = "0ms", value_parser = humantime::parse_duration)]
    latency: Duration,

    /// Probability (0.0-1.0) that a non-health, non-echo request answers 500.
    #[arg(long, default_value_t = 0.0, value_parser = parse_probability)]
    error_rate: f64,

    /// Size in bytes of the fixed response body.
    #[arg(long, default_value_t = 64)]
    body_size: usize,

    /// Worker threads.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    threads: u16,
}

fn parse_probability(s: &str) -> Result<f64, String> {
    let p: f64 = s.parse().map_err(|e| format!("{e}"))?;
    if (0.0..=1.0).contains(&p) {
        Ok(p)
    } else {
        Err("must be between 0.0 and 1.0".to_string())
    }
}

/// Everything a response needs that does not depend on the request, computed once.
struct Upstream {
    name: String,
    latency: Duration,
    error_rate: f64,
    body: Bytes,
    body_len: HeaderValue,
    /// The 16 KiB JSON document of `/doc.json`.
    document: Bytes,
    document_len: HeaderValue,
    error_body: &'static [u8],
    error_len: HeaderValue,
    /// Listen addresses whose failure switch is on.
    failing: Vec<(String, AtomicBool)>,
}

const TEXT_PLAIN: HeaderValue = HeaderValue::from_static("text/plain");
const APPLICATION_JSON: HeaderValue = HeaderValue::from_static("application/json");

impl Upstream {
    fn new(args: &Args) -> Self {
        // A recognisable, printable filler: "portcullis upstream payload ..." repeated.
        let pattern = b"portcullis-upstream-payload-0123456789abcdefghijklmnopqrstuvwxyz\n";
        let body: Vec<u8> = pattern
            .iter()
            .copied()
            .cycle()
            .take(args.body_size)
            .collect();
        let error_body: &'static [u8] = b"upstream error (injected)\n";
        let document = json_document(16 * 1024);
        Upstream {
            document_len: HeaderValue::from(document.len()),
            document: Bytes::from(document),
            name: args.name.clone().unwrap_or_else(|| args.listen[0].clone()),
            latency: args.latency,
            error_rate: args.error_rate,
            body_len: HeaderValue::from(body.len()),
            body: Bytes::from(body),
            error_body,
            error_len: HeaderValue::from(error_body.len()),
            failing: args
                .listen
                .iter()
                .map(|addr| (addr.clone(), AtomicBool::new(false)))
                .collect(),
        }
    }

    fn fixed(
        status: StatusCode,
        content_type: HeaderValue,
        len: &HeaderValue,
        body: Vec<u8>,
    ) -> Response<Vec<u8>> {
        let mut resp = Response::new(body);
        *resp.status_mut() = status;
        let headers = resp.headers_mut();
        headers.insert(CONTENT_TYPE, content_type);
        headers.insert(CONTENT_LENGTH, len.clone());
        resp
    }

    /// The failure switch of the listener `session` arrived on.
    fn switch(&self, session: &ServerSession) -> Option<&AtomicBool> {
        let local = session.server_addr()?.to_string();
        self.failing
            .iter()
            .find(|(addr, _)| *addr == local)
            .map(|(_, failing)| failing)
    }

    async fn echo(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let mut body_bytes = 0usize;
        while let Ok(Some(chunk)) = session.read_request_body().await {
            body_bytes += chunk.len();
        }
        let listen = session
            .server_addr()
            .map(|a| a.to_string())
            .unwrap_or_else(|| self.name.clone());
        let client = session.client_addr().map(|a| a.to_string());
        let req = session.req_header();
        let mut headers = Map::new();
        for (name, value) in req.headers.iter() {
            let value = String::from_utf8_lossy(value.as_bytes());
            match headers.get_mut(name.as_str()) {
                Some(Value::String(prev)) => {
                    prev.push_str(", ");
                    prev.push_str(&value);
                }
                _ => {
                    headers.insert(name.as_str().to_owned(), Value::from(value.into_owned()));
                }
            }
        }
        let doc = serde_json::json!({
            "upstream": self.name,
            "listen": listen,
            "client": client,
            "method": req.method.as_str(),
            "path": req.uri.path(),
            "query": req.uri.query(),
            "headers": headers,
            "body_bytes": body_bytes,
        });
        let mut body = serde_json::to_vec(&doc).unwrap_or_default();
        body.push(b'\n');
        let len = HeaderValue::from(body.len());
        Self::fixed(StatusCode::OK, APPLICATION_JSON, &len, body)
    }
}

/// A JSON document of exactly `size` bytes: a list of small records, as an API returns.
fn json_document(size: usize) -> Vec<u8> {
    let mut doc = String::from("{\"items\":[");
    let mut i = 0;
    loop {
        let item = format!(
            "{}{{\"id\":{i},\"name\":\"item {i}\",\"price\":{}.{:02},\"tags\":[\"edge\",\"cache\"]}}",
            if i == 0 { "" } else { "," },
            i * 7 % 100,
            i * 13 % 100
        );
        if doc.len() + item.len() + 2 > size {
            break;
        }
        doc += &item;
        i += 1;
    }
    doc += "]}";
    // Pad inside the document (whitespace before the closing brace) to the exact size.
    let pad = size.saturating_sub(doc.len());
    doc.insert_str(doc.len() - 1, &" ".repeat(pad));
    doc.into_bytes()
}

fn wants_echo(path: &str, query: Option<&str>) -> bool {
    let echo_path = path == "/echo" || path.starts_with("/echo/");
    let echo_query = query.is_some_and(|q| {
        q.split('&')
            .any(|kv| kv == "echo" || kv.starts_with("echo="))
    });
    echo_path || echo_query
}

#[async_trait]
impl ServeHttp for Upstream {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let uri = &session.req_header().uri;
        let path = uri.path();
        if path == "/healthz" {
            return Self::fixed(
                StatusCode::OK,
                TEXT_PLAIN,
                &HeaderValue::from_static("2"),
                b"ok".to_vec(),
            );
        }
        if let Some(on) = match path {
            "/_chaos/fail" => Some(true),
            "/_chaos/recover" => Some(false),
            _ => None,
        } {
            if let Some(switch) = self.switch(session) {
                switch.store(on, Ordering::Relaxed);
            }
            let state: &[u8] = if on { b"failing\n" } else { b"serving\n" };
            let len = HeaderValue::from(state.len());
            return Self::fixed(StatusCode::OK, TEXT_PLAIN, &len, state.to_vec());
        }
        if self
            .switch(session)
            .is_some_and(|failing| failing.load(Ordering::Relaxed))
        {
            return Self::fixed(
                StatusCode::INTERNAL_SERVER_ERROR,
                TEXT_PLAIN,
                &self.error_len,
                self.error_body.to_vec(),
            );
        }
        if path == "/doc.json" {
            return Self::fixed(
                StatusCode::OK,
                APPLICATION_JSON,
                &self.document_len,
                self.document.to_vec(),
            );
        }
        if wants_echo(path, uri.query()) {
            return self.echo(session).await;
        }
        if !self.latency.is_zero() {
            tokio::time::sleep(self.latency).await;
        }
        if self.error_rate > 0.0 && rand::thread_rng().gen_bool(self.error_rate) {
            return Self::fixed(
                StatusCode::INTERNAL_SERVER_ERROR,
                TEXT_PLAIN,
                &self.error_len,
                self.error_body.to_vec(),
            );
        }
        // ServeHttp wants an owned Vec: one small copy of the precomputed body.
        Self::fixed(
            StatusCode::OK,
            TEXT_PLAIN,
            &self.body_len,
            self.body.to_vec(),
        )
    }
}

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let args = Args::parse();
    let app = Upstream::new(&args);

    // Unique per process so that several upstreams (and gateways) can run side by side.
    let pid = std::process::id();
    let conf = ServerConf {
        threads: args.threads as usize,
        pid_file: format!("/tmp/portcullis-upstream-{pid}.pid"),
        upgrade_sock: format!("/tmp/portcullis-upstream-{pid}.sock"),
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(1),
        ..Default::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();

    let mut service = Service::new(format!("upstream {}", app.name), HttpServer::new_app(app));
    for addr in &args.listen {
        service.add_tcp(addr);
    }
    server.add_service(service);
    eprintln!(
        "upstream {} listening on {} (threads {}, latency {:?}, error rate {}, body {} B)",
        args.name.as_deref().unwrap_or(&args.listen[0]),
        args.listen.join(", "),
        args.threads,
        args.latency,
        args.error_rate,
        args.body_size
    );
    server.run_forever();
}

#[cfg(test)]
mod tests {
    use super::wants_echo;

    #[test]
    fn echo_selection() {
        assert!(wants_echo("/echo", None));
        assert!(wants_echo("/echo/a/b", None));
        assert!(wants_echo("/x", Some("a=1&echo")));
        assert!(wants_echo("/x", Some("echo=1")));
        assert!(!wants_echo("/echoes", None));
        assert!(!wants_echo("/x", Some("noecho=1")));
    }
}
