//! OpenTelemetry traces over OTLP (issue #17, part 1): a real collector in the test (OTLP
//! over HTTP with `tiny_http`, OTLP over gRPC with `tonic`, the messages decoded with
//! `opentelemetry-proto`) receives the spans of requests through a real gateway.

mod common;

use std::collections::HashMap;
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use prost::Message;

use common::{free_port, render_config, run_portcullis, Gateway, OneRoute, RedisServer, TestDir};
use common::{Upstream, BASE_CONFIG};

/// `sha256("s3cret")`: the API key of consumer `acme`.
const KEY_DIGEST: &str = "1ec1c26b50d5d3c58d9583181af8076655fe00756bf7285940ba3670f99fcba0";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";

/// A span as the collector received it, with its resource's `service.name`.
#[derive(Debug, Clone)]
struct Received {
    service: String,
    trace_id: String,
    id: String,
    parent: String,
    name: String,
    kind: i32,
    start: u64,
    end: u64,
    attributes: HashMap<String, String>,
    error: bool,
}

impl Received {
    fn attribute(&self, key: &str) -> &str {
        self.attributes
            .get(key)
            .map_or_else(|| panic!("no {key} on {self:#?}"), String::as_str)
    }
}

/// The spans a collector received, shared with its server thread.
#[derive(Clone, Default)]
struct Spans(Arc<Mutex<Vec<Received>>>);

impl Spans {
    fn add(&self, request: ExportTraceServiceRequest) {
        let mut spans = self.0.lock().unwrap();
        for resource in request.resource_spans {
            let service = resource
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|kv| kv.key == "service.name")
                .map(|kv| text(kv.value.as_ref().and_then(|v| v.value.as_ref())))
                .unwrap_or_default();
            for span in resource.scope_spans.into_iter().flat_map(|s| s.spans) {
                spans.push(Received {
                    service: service.clone(),
                    trace_id: hex(&span.trace_id),
                    id: hex(&span.span_id),
                    parent: hex(&span.parent_span_id),
                    name: span.name,
                    kind: span.kind,
                    start: span.start_time_unix_nano,
                    end: span.end_time_unix_nano,
                    attributes: span
                        .attributes
                        .iter()
                        .map(|kv| {
                            let value = kv.value.as_ref().and_then(|v| v.value.as_ref());
                            (kv.key.clone(), text(value))
                        })
                        .collect(),
                    error: span
                        .status
                        .is_some_and(|s| s.code == StatusCode::Error as i32),
                });
            }
        }
    }

    fn all(&self) -> Vec<Received> {
        self.0.lock().unwrap().clone()
    }

    /// The spans of `trace_id` once at least `count` arrived (or after 10 s).
    fn of_trace(&self, trace_id: &str, count: usize) -> Vec<Received> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let spans: Vec<Received> = self
                .all()
                .into_iter()
                .filter(|span| span.trace_id == trace_id)
                .collect();
            if spans.len() >= count || Instant::now() > deadline {
                return spans;
            }
            thread::sleep(Duration::from_millis(50));
        }
    }
}

fn text(value: Option<&Value>) -> String {
    match value {
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::BoolValue(b)) => b.to_string(),
        Some(Value::DoubleValue(d)) => d.to_string(),
        other => format!("{other:?}"),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// An OTLP/HTTP collector: `POST /v1/traces` with a protobuf body.
struct HttpCollector {
    port: u16,
    spans: Spans,
    headers: Arc<Mutex<Vec<(String, String)>>>,
}

impl HttpCollector {
    fn start() -> HttpCollector {
        let port = free_port();
        let server = tiny_http::Server::http(("127.0.0.1", port)).expect("collector listens");
        let spans = Spans::default();
        let headers = Arc::new(Mutex::new(Vec::new()));
        let (into, seen) = (spans.clone(), Arc::clone(&headers));
        thread::spawn(move || {
            for mut request in server.incoming_requests() {
                let mut body = Vec::new();
                let _ = request.as_reader().read_to_end(&mut body);
                let ok =
                    request.url() == "/v1/traces" && request.method() == &tiny_http::Method::Post;
                for header in request.headers() {
                    seen.lock().unwrap().push((
                        header.field.as_str().as_str().to_ascii_lowercase(),
                        header.value.as_str().to_string(),
                    ));
                }
                match ExportTraceServiceRequest::decode(body.as_slice()) {
                    Ok(decoded) if ok => {
                        into.add(decoded);
                        let answer = ExportTraceServiceResponse::default().encode_to_vec();
                        let _ = request.respond(tiny_http::Response::from_data(answer));
                    }
                    _ => {
                        let _ = request.respond(tiny_http::Response::empty(400));
                    }
                }
            }
        });
        HttpCollector {
            port,
            spans,
            headers,
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

/// An OTLP/gRPC collector (the `TraceService` of the protocol, served by tonic).
struct GrpcCollector {
    port: u16,
    spans: Spans,
}

#[derive(Clone)]
struct Service(Spans);

#[tonic::async_trait]
impl TraceService for Service {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.0.add(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

impl GrpcCollector {
    fn start() -> GrpcCollector {
        let port = free_port();
        let spans = Spans::default();
        let service = Service(spans.clone());
        thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                tonic::transport::Server::builder()
                    .add_service(TraceServiceServer::new(service))
                    .serve(([127, 0, 0, 1], port).into())
                    .await
                    .expect("gRPC collector serves");
            });
        });
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "the gRPC collector did not start"
            );
            thread::sleep(Duration::from_millis(20));
        }
        GrpcCollector { port, spans }
    }
}

/// Route `api` to `app` behind key_auth and a Redis-backed rate limit, exporting to
/// `otlp` (the fields of `tracing.otlp`, as a flow mapping's inside).
fn traced_gateway(app: &Upstream, redis: &RedisServer, otlp: &str) -> Gateway {
    Gateway::start(
        &OneRoute::to(&[app])
            .named("api")
            .section(&format!(
                "consumers:\n  - {{ id: acme, api_keys: [\"sha256:{KEY_DIGEST}\"] }}"
            ))
            .section(&format!(
                "redis:\n  url: {}\n  timeout: 500ms\n  on_error: deny",
                redis.url()
            ))
            .section(&format!("tracing:\n  otlp: {{ {otlp} }}"))
            .route(
                "plugins:\n  key_auth: { header: X-Api-Key }\n  rate_limit:\n    - { name: per-consumer, key: consumer, algorithm: token_bucket, rate: 100, backend: redis }",
            )
            .yaml(),
    )
}

/// The upstream's `traceparent` split into (trace id, parent id, flags).
fn traceparent(app: &Upstream) -> (String, String, String) {
    let request = app.last_request();
    let value = request.header("traceparent").expect("traceparent upstream");
    let parts: Vec<&str> = value.split('-').collect();
    assert_eq!(parts.len(), 4, "{value}");
    (parts[1].into(), parts[2].into(), parts[3].into())
}

fn named<'a>(spans: &'a [Received], name: &str) -> &'a Received {
    spans
        .iter()
        .find(|span| span.name == name)
        .unwrap_or_else(|| panic!("no span {name:?} in {spans:#?}"))
}

#[test]
fn a_request_through_auth_rate_limit_and_upstream_is_one_span_tree() {
    let collector = HttpCollector::start();
    let redis = RedisServer::start();
    let app = Upstream::start("app");
    let gateway = traced_gateway(
        &app,
        &redis,
        &format!(
            "endpoint: \"{}\", service_name: edge-test, headers: {{ x-collector-key: k1 }}",
            collector.url()
        ),
    );

    let response = gateway.request("GET", "/items", &[("X-Api-Key", "s3cret")]);

    assert_eq!(response.status, 200);
    let (trace_id, upstream_parent, flags) = traceparent(&app);
    assert_eq!(flags, "01");
    let spans = collector.spans.of_trace(&trace_id, 6);
    let names: Vec<&str> = spans.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(spans.len(), 6, "{names:?}");

    let server = named(&spans, "GET api");
    assert_eq!(server.kind, SpanKind::Server as i32);
    assert_eq!(
        server.parent, "",
        "a new trace: the server span is the root"
    );
    assert_eq!(server.service, "edge-test");
    assert_eq!(server.attribute("http.request.method"), "GET");
    assert_eq!(server.attribute("url.path"), "/items");
    assert_eq!(server.attribute("http.route"), "api");
    assert_eq!(server.attribute("http.response.status_code"), "200");
    assert_eq!(server.attribute("server.address"), "127.0.0.1");
    assert_eq!(server.attribute("client.address"), "127.0.0.1");
    assert_eq!(
        server.attribute("portcullis.request_id"),
        response.request_id()
    );
    assert!(!server.error);

    let auth = named(&spans, "auth");
    assert_eq!(auth.parent, server.id);
    assert_eq!(auth.attribute("portcullis.auth.plugin"), "key_auth");
    assert_eq!(auth.attribute("portcullis.auth.outcome"), "accepted");
    let rate_limit = named(&spans, "rate_limit");
    assert_eq!(rate_limit.parent, server.id);
    assert_eq!(
        rate_limit.attribute("portcullis.rate_limit.outcome"),
        "allowed"
    );
    let redis_call = named(&spans, "rate_limit redis");
    assert_eq!(
        redis_call.parent, rate_limit.id,
        "the Redis round trip is under the rate limit"
    );
    assert_eq!(redis_call.kind, SpanKind::Client as i32);
    assert_eq!(redis_call.attribute("db.system.name"), "redis");
    let connect = named(&spans, "upstream connect");
    assert_eq!(connect.parent, server.id);
    assert_eq!(connect.attribute("server.port"), app.port().to_string());
    let upstream = named(&spans, "upstream response");
    assert_eq!(upstream.parent, server.id);
    assert_eq!(upstream.kind, SpanKind::Client as i32);
    assert_eq!(upstream.attribute("http.response.status_code"), "200");
    assert_eq!(upstream.attribute("portcullis.upstream"), "app");
    assert_eq!(
        upstream_parent, upstream.id,
        "the upstream's traceparent names the upstream response span as its parent"
    );

    for child in spans.iter().filter(|s| s.id != server.id) {
        assert!(
            server.start <= child.start && child.start <= child.end && child.end <= server.end,
            "{} lies within the server span: {spans:#?}",
            child.name
        );
    }
    assert!(
        auth.end <= rate_limit.start,
        "auth runs before the rate limit"
    );
    assert!(
        rate_limit.end <= upstream.start,
        "the rate limit runs before the upstream"
    );
    assert!(
        collector
            .headers
            .lock()
            .unwrap()
            .contains(&("x-collector-key".into(), "k1".into())),
        "the configured headers go with every export"
    );
}

#[test]
fn refusals_and_upstream_errors_are_marked() {
    let collector = HttpCollector::start();
    let redis = RedisServer::start();
    let app = Upstream::start("app");
    let gateway = traced_gateway(&app, &redis, &format!("endpoint: \"{}\"", collector.url()));

    let traced = |headers: &[(&str, &str)], trace: &str| {
        let parent = format!("00-{trace}-{CLIENT_SPAN}-01");
        let mut all = headers.to_vec();
        all.push(("traceparent", &parent));
        gateway.request("GET", "/items", &all).status
    };
    let refused_trace = "11111111111111111111111111111111";
    assert_eq!(traced(&[("X-Api-Key", "wrong")], refused_trace), 401);
    app.set_status(503);
    let failed_trace = "22222222222222222222222222222222";
    assert_eq!(traced(&[("X-Api-Key", "s3cret")], failed_trace), 503);

    let refused = collector.spans.of_trace(refused_trace, 2);
    let server = named(&refused, "GET api");
    assert_eq!(
        server.parent, CLIENT_SPAN,
        "the client's span is the server span's parent"
    );
    assert_eq!(server.attribute("http.response.status_code"), "401");
    assert!(!server.error, "a 4xx is not a server error");
    assert_eq!(
        named(&refused, "auth").attribute("portcullis.auth.outcome"),
        "unknown_key"
    );
    assert_eq!(refused.len(), 2, "nothing after the refusal: {refused:#?}");

    let failed = collector.spans.of_trace(failed_trace, 6);
    assert!(named(&failed, "GET api").error, "a 5xx answer is an error");
    assert!(named(&failed, "upstream response").error);
}

#[test]
fn an_incoming_sampled_flag_decides_over_the_ratio() {
    let collector = HttpCollector::start();
    let redis = RedisServer::start();
    let app = Upstream::start("app");
    let all = traced_gateway(
        &app,
        &redis,
        &format!("endpoint: \"{}\", sample_ratio: 1", collector.url()),
    );
    let none = traced_gateway(
        &app,
        &redis,
        &format!("endpoint: \"{}\", sample_ratio: 0", collector.url()),
    );
    let send = |gateway: &Gateway, trace: &str, flags: &str| {
        let parent = format!("00-{trace}-{CLIENT_SPAN}-{flags}");
        let headers = [("X-Api-Key", "s3cret"), ("traceparent", parent.as_str())];
        assert_eq!(gateway.request("GET", "/items", &headers).status, 200);
        traceparent(&app)
    };

    let unsampled = "33333333333333333333333333333333";
    let (_, parent, flags) = send(&all, unsampled, "00");
    assert_eq!(flags, "00", "the client's decision goes on upstream");
    assert_ne!(parent, CLIENT_SPAN);
    let sampled = "44444444444444444444444444444444";
    let (_, _, flags) = send(&none, sampled, "01");
    assert_eq!(flags, "01");
    assert_eq!(
        none.get("/items").status,
        401,
        "(unauthenticated, unsampled)"
    );
    let (new_trace, _, new_flags) = {
        assert_eq!(
            none.request("GET", "/items", &[("X-Api-Key", "s3cret")])
                .status,
            200
        );
        traceparent(&app)
    };
    assert_eq!(new_flags, "00", "ratio 0 samples no new trace");

    let exported = collector.spans.of_trace(sampled, 6);
    assert_eq!(exported.len(), 6, "sampled=1 is exported at ratio 0");
    assert_eq!(named(&exported, "GET api").parent, CLIENT_SPAN);
    // The export runs every half second: after the sampled trace arrived, anything of
    // the others would have too.
    thread::sleep(Duration::from_secs(1));
    let traces: Vec<String> = collector
        .spans
        .all()
        .into_iter()
        .map(|s| s.trace_id)
        .collect();
    assert!(
        !traces.contains(&unsampled.to_string()),
        "sampled=0 is not exported at ratio 1"
    );
    assert!(!traces.contains(&new_trace), "ratio 0 exports no new trace");
}

#[test]
fn spans_go_over_grpc_too() {
    let collector = GrpcCollector::start();
    let redis = RedisServer::start();
    let app = Upstream::start("app");
    let gateway = traced_gateway(
        &app,
        &redis,
        &format!(
            "endpoint: \"http://127.0.0.1:{}\", protocol: grpc, service_name: edge-grpc",
            collector.port
        ),
    );

    assert_eq!(
        gateway
            .request("GET", "/items", &[("X-Api-Key", "s3cret")])
            .status,
        200
    );

    let (trace_id, upstream_parent, _) = traceparent(&app);
    let spans = collector.spans.of_trace(&trace_id, 6);
    assert_eq!(spans.len(), 6, "{spans:#?}");
    assert_eq!(named(&spans, "GET api").service, "edge-grpc");
    assert_eq!(named(&spans, "upstream response").id, upstream_parent);
}

/// A collector that accepts connections and never answers.
fn hanging_collector() -> (TcpListener, String) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    (listener, url)
}

#[test]
fn a_dead_or_hanging_collector_drops_spans_counted_and_requests_go_on() {
    let app = Upstream::start("app");
    let (_hanging, hanging_url) = hanging_collector();
    let refused_url = format!("http://127.0.0.1:{}", free_port());
    for url in [hanging_url, refused_url] {
        let gateway = Gateway::start(
            &OneRoute::to(&[&app])
                .section(&format!(
                    "tracing:\n  otlp: {{ endpoint: \"{url}\", timeout: 3s, max_queue: 4 }}"
                ))
                .yaml(),
        );
        let started = Instant::now();
        for _ in 0..40 {
            assert_eq!(gateway.get("/items").status, 200);
        }
        let elapsed = started.elapsed();
        assert!(
            elapsed < Duration::from_secs(3),
            "40 requests took {elapsed:?} with the collector at {url} down"
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        let dropped = loop {
            let dropped = gateway
                .metric("portcullis_trace_spans_dropped_total", &[])
                .unwrap_or(0.0);
            if dropped >= 40.0 || Instant::now() > deadline {
                break dropped;
            }
            thread::sleep(Duration::from_millis(100));
        };
        // Each request makes three spans (server, connect, upstream response): 120, of
        // which at most the queue's 4 and one batch in flight may still be waiting.
        assert!(dropped >= 40.0, "{url}: {dropped} spans counted as dropped");
    }
}

#[test]
fn check_reports_bad_otlp_fields_at_their_paths() {
    let dir = TestDir::new();
    let sections = r#"
tracing:
  otlp:
    endpoint: "collector:4318 not a url"
    sample_ratio: 2
    headers: { "bad header": x }
    max_queue: 0
routes:
  - name: ping
    match: { path: /ping }
    respond: { status: 200, body: pong }
"#;
    let config = render_config(
        &format!("{BASE_CONFIG}{sections}"),
        dir.path(),
        free_port(),
        free_port(),
    );
    let file = dir.write("portcullis.yaml", &config).display().to_string();
    let output = run_portcullis(&["check", "-c", &file]);
    let text = String::from_utf8_lossy(&output.stderr).to_string()
        + &String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{text}");
    for path in [
        "tracing.otlp.endpoint",
        "tracing.otlp.sample_ratio",
        "tracing.otlp.headers.bad header",
        "tracing.otlp.max_queue",
    ] {
        assert!(
            text.contains(&format!("{file}: {path}: ")),
            "{path} in:\n{text}"
        );
    }
}

/// `headers` plus a sampled `traceparent` of `trace`.
fn sampled<'a>(trace: &'a str, parent: &'a mut String) -> [(&'a str, &'a str); 1] {
    *parent = format!("00-{trace}-{CLIENT_SPAN}-01");
    [("traceparent", parent.as_str())]
}

#[test]
fn a_cache_hit_has_a_lookup_span_and_no_upstream_spans() {
    let collector = HttpCollector::start();
    let app = Upstream::start("app");
    let gateway = Gateway::start(
        &OneRoute::to(&[&app])
            .named("cached")
            .route("cache: { enabled: true, default_ttl: 60s }")
            .section(&format!(
                "tracing:\n  otlp: {{ endpoint: \"{}\" }}",
                collector.url()
            ))
            .yaml(),
    );
    let (miss, hit) = (
        "55555555555555555555555555555555",
        "66666666666666666666666666666666",
    );
    let mut parent = String::new();
    assert_eq!(
        gateway
            .request("GET", "/page", &sampled(miss, &mut parent))
            .status,
        200
    );
    let hit_response = gateway.request("GET", "/page", &sampled(hit, &mut parent));
    assert_eq!(hit_response.status, 200);
    assert_eq!(app.requests(), 1, "the second request is a hit");

    let missed = collector.spans.of_trace(miss, 4);
    assert_eq!(
        named(&missed, "cache lookup").attribute("portcullis.cache.result"),
        "miss"
    );
    named(&missed, "upstream response");
    let hits = collector.spans.of_trace(hit, 2);
    let names: Vec<&str> = hits.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names.len(), 2, "{names:?}");
    let lookup = named(&hits, "cache lookup");
    assert_eq!(lookup.attribute("portcullis.cache.result"), "hit");
    assert_eq!(lookup.parent, named(&hits, "GET cached").id);
}

#[test]
fn a_reload_that_changes_tracing_takes_effect_and_shutdown_flushes() {
    let collector = HttpCollector::start();
    let app = Upstream::start("app");
    let config = |service: &str| {
        OneRoute::to(&[&app])
            .section(&format!(
                "tracing:\n  otlp: {{ endpoint: \"{}\", service_name: {service} }}",
                collector.url()
            ))
            .yaml()
    };
    let mut gateway = Gateway::start(&config("before"));
    let mut parent = String::new();
    let first = "77777777777777777777777777777777";
    assert_eq!(
        gateway
            .request("GET", "/", &sampled(first, &mut parent))
            .status,
        200
    );

    gateway.rewrite_config(&config("after"));
    gateway.reload();
    let second = "88888888888888888888888888888888";
    assert_eq!(
        gateway
            .request("GET", "/", &sampled(second, &mut parent))
            .status,
        200
    );
    let last = "99999999999999999999999999999999";
    assert_eq!(
        gateway
            .request("GET", "/", &sampled(last, &mut parent))
            .status,
        200
    );
    gateway.signal("TERM");
    assert!(
        gateway.wait_for_exit(Duration::from_secs(20)).is_some(),
        "exits"
    );

    assert_eq!(collector.spans.of_trace(first, 3)[0].service, "before");
    assert_eq!(collector.spans.of_trace(second, 3)[0].service, "after");
    let flushed = collector.spans.of_trace(last, 3);
    assert_eq!(
        flushed.len(),
        3,
        "the last request's spans go out at shutdown"
    );
}
