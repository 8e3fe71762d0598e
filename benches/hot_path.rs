//! Criterion benches of the request path's pure pieces: route matching over 100 routes,
//! the header work done on every proxied request, target selection (with and without
//! outlier detection, for each balancer), the canary choice and path canonicalisation.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use pingora_http::RequestHeader;
use portcullis::config::MatchConfig;
use portcullis::model::router::{Matcher, Router};
use portcullis::proxy::forwarding::{add_forwarded, remove_hop_by_hop};
use portcullis::proxy::trace::{new_request_id_value, valid_request_id, TraceContext};

/// 100 routes of the mixes a real edge config has: exact paths, prefixes, regexes, hosts,
/// method and header conditions.
fn hundred_routes() -> Router<usize> {
    let routes = (0..100)
        .map(|i| {
            let yaml = match i % 5 {
                0 => format!("{{path: /svc{i}/health}}"),
                1 => format!("{{path_prefix: /svc{i}/api, methods: [GET, POST]}}"),
                2 => format!("{{path_regex: '/svc{i}/items/[0-9]+'}}"),
                3 => format!("{{hosts: ['svc{i}.example.com'], path_prefix: /}}"),
                _ => format!("{{path_prefix: /svc{i}, headers: {{X-Api-Version: '2'}}}}"),
            };
            let config: MatchConfig = serde_yaml::from_str(&yaml).expect("valid match");
            (Matcher::compile(&config, "bench").expect("compiles"), i)
        })
        .collect();
    Router::new(routes)
}

fn request(path: &str, host: &str) -> RequestHeader {
    let mut req = RequestHeader::build("GET", path.as_bytes(), None).expect("request");
    req.insert_header("Host", host).expect("host");
    req.insert_header("User-Agent", "bench").expect("header");
    req
}

fn routing(c: &mut Criterion) {
    let router = hundred_routes();
    let first = request("/svc0/health", "api.example.com");
    let last = request("/svc96/api/orders", "api.example.com");
    let miss = request("/nothing/here", "api.example.com");
    let mut group = c.benchmark_group("router_100_routes");
    group.bench_function("exact_hit", |b| {
        b.iter(|| router.find(black_box(&first)).map(|r| *r.1))
    });
    group.bench_function("prefix_hit_late", |b| {
        b.iter(|| router.find(black_box(&last)).map(|r| *r.1))
    });
    group.bench_function("miss", |b| {
        b.iter(|| router.find(black_box(&miss)).map(|r| *r.1))
    });
    group.finish();
}

fn headers(c: &mut Criterion) {
    let mut group = c.benchmark_group("headers");
    let incoming = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    group.bench_function("traceparent_continue", |b| {
        b.iter(|| TraceContext::continue_or_start(Some(black_box(incoming)), None).header())
    });
    group.bench_function("request_id_new", |b| b.iter(new_request_id_value));
    group.bench_function("request_id_validate", |b| {
        b.iter(|| valid_request_id(black_box(b"7f3a2b1c-9d8e-4f00-a1b2-c3d4e5f60718")))
    });
    let template = {
        let mut req = request("/api/orders", "api.example.com");
        req.insert_header("Connection", "keep-alive")
            .expect("header");
        req.insert_header("X-Forwarded-For", "203.0.113.7")
            .expect("header");
        req
    };
    let client = Some("127.0.0.1".parse().expect("ip"));
    group.bench_function("upstream_request_rewrite", |b| {
        b.iter_batched(
            || template.clone(),
            |mut req| {
                remove_hop_by_hop(&mut req);
                add_forwarded(&mut req, client, "http");
                req
            },
            criterion::BatchSize::SmallInput,
        )
    });
    group.finish();
}

/// A pool of three targets with `load_balancing: algorithm` and `extra` YAML fields.
fn pool(algorithm: &str, extra: &str) -> std::sync::Arc<portcullis::model::upstream::Upstream> {
    let yaml = format!(
        "targets: [{{address: '127.0.0.1:9001'}}, {{address: '127.0.0.1:9002'}}, \
         {{address: '127.0.0.1:9003'}}]\nload_balancing: {algorithm}\n{extra}"
    );
    let config: portcullis::config::UpstreamConfig =
        serde_yaml::from_str(&yaml).expect("valid pool");
    let metrics = portcullis::telemetry::metrics::Metrics::new();
    let retained = portcullis_plugins::Retained::fresh();
    let upstream = portcullis::model::upstream::compile_upstream(
        "bench", &config, "bench", &metrics, &retained,
    )
    .unwrap_or_else(|problems| panic!("{problems:?}"));
    std::sync::Arc::new(upstream)
}

fn target_selection(c: &mut Criterion) {
    let mut group = c.benchmark_group("target_select");
    let outlier = "outlier_detection: { consecutive_5xx: 5 }";
    for (name, algorithm, extra) in [
        ("round_robin", "round_robin", ""),
        ("round_robin_outlier", "round_robin", outlier),
        ("least_request_outlier", "least_request", outlier),
        ("peak_ewma_outlier", "peak_ewma", outlier),
    ] {
        let upstream = pool(algorithm, extra);
        group.bench_function(name, |b| {
            b.iter(|| {
                upstream
                    .select(black_box(b""), 0)
                    .map(|slot| slot.tried_bit())
            })
        });
    }
    group.finish();
}

fn canary_choice(c: &mut Criterion) {
    use portcullis::config::CanaryConfig;
    use portcullis::model::canary::Canary;
    let config: CanaryConfig = serde_yaml::from_str(
        "{upstream: canary, weight: 10, sticky_on: 'header:X-User', force_header: X-Canary}",
    )
    .expect("valid canary");
    let canary =
        Canary::compile(&config, Some(pool("round_robin", "")), "bench").expect("canary compiles");
    let mut req = request("/api/orders", "api.example.com");
    req.insert_header("X-User", "user-4711").expect("header");
    let ctx = portcullis_plugins::PluginCtx::default();
    let mut key = Vec::new();
    c.bench_function("canary_choose_sticky_header", |b| {
        b.iter(|| canary.choose(black_box(&req), &ctx, &mut key))
    });
}

/// Path canonicalisation runs on every request: the common, already canonical path must
/// cost a scan and no allocation; a path with dot segments and escapes is rebuilt.
fn path_canonicalisation(c: &mut Criterion) {
    use portcullis::model::path::canonicalize;
    let mut group = c.benchmark_group("path_canonicalize");
    for (name, path) in [
        ("canonical", "/api/v1/orders/4711/items"),
        ("canonical_escaped", "/files/annual%20report%3A2026.pdf"),
        ("dot_segments", "/api/v1/../v2/./orders//4711/%2e%2e/4712"),
    ] {
        group.bench_function(name, |b| b.iter(|| canonicalize(black_box(path), true)));
    }
    group.finish();
}

criterion_group!(
    benches,
    routing,
    headers,
    target_selection,
    canary_choice,
    path_canonicalisation
);
criterion_main!(benches);
