//! Criterion benches of the request path's pure pieces: route matching over 100 routes
//! and the header work done on every proxied request.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use pingora_http::RequestHeader;
use portcullis::config::schema::MatchConfig;
use portcullis::proxy::forwarding::{add_forwarded, remove_hop_by_hop};
use portcullis::proxy::trace::{new_request_id, valid_request_id, TraceContext};
use portcullis::router::{Matcher, Router};

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
        b.iter(|| TraceContext::continue_or_start(Some(black_box(incoming))).header())
    });
    group.bench_function("request_id_new", |b| b.iter(new_request_id));
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

criterion_group!(benches, routing, headers);
criterion_main!(benches);
