//! Criterion benches of the edge cache's per-request work: the cache key, the request
//! bypass check, the response cacheability decision and the variant hash.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use pingora::cache::RespCacheable;
use pingora_http::{RequestHeader, ResponseHeader};
use portcullis::config::CacheConfig;
use portcullis::model::cache::{cache_key, policy, RouteCache};
use portcullis::telemetry::metrics::Metrics;

fn route_cache() -> RouteCache {
    let config: CacheConfig = serde_yaml::from_str(
        "{ default_ttl: 60s, stale_while_revalidate: 30s, vary: [Accept-Encoding] }",
    )
    .expect("valid cache config");
    RouteCache::compile("bench", &config, "bench", &Metrics::new())
        .expect("compiles")
        .expect("enabled")
}

fn request() -> RequestHeader {
    let mut req = RequestHeader::build("GET", b"/api/v1/items/42?lang=en", None).expect("request");
    req.insert_header("Host", "api.example.com:8080")
        .expect("host");
    req.insert_header("Accept-Encoding", "gzip, br")
        .expect("header");
    req.insert_header("User-Agent", "bench").expect("header");
    req
}

fn response() -> ResponseHeader {
    let mut resp = ResponseHeader::build(200, None).expect("response");
    resp.insert_header("Cache-Control", "public, max-age=300, stale-if-error=60")
        .expect("header");
    resp.insert_header("Content-Type", "application/json")
        .expect("header");
    resp.insert_header("ETag", "\"abc\"").expect("header");
    resp.insert_header("Vary", "Accept-Language")
        .expect("header");
    resp
}

fn cache(c: &mut Criterion) {
    let route = route_cache();
    let req = request();
    let resp = response();
    let meta = match policy::response_cacheable(&route, &resp) {
        RespCacheable::Cacheable(meta) => meta,
        RespCacheable::Uncacheable(_) => panic!("the bench response is cacheable"),
    };
    let mut group = c.benchmark_group("cache");
    group.bench_function("key", |b| {
        b.iter(|| cache_key("bench", None, black_box(&req), "https"))
    });
    group.bench_function("request_bypass", |b| {
        b.iter(|| policy::request_bypass(&route, black_box(&req), false))
    });
    group.bench_function("response_cacheable", |b| {
        b.iter(|| policy::response_cacheable(&route, black_box(&resp)))
    });
    group.bench_function("variance", |b| {
        b.iter(|| policy::variance(&route, &meta, black_box(&req), None))
    });
    // A route with cache and compression: the negotiated coding stands for Accept-Encoding.
    group.bench_function("variance_negotiated", |b| {
        b.iter(|| policy::variance(&route, &meta, black_box(&req), Some("gzip")))
    });
    group.finish();
}

criterion_group!(benches, cache);
criterion_main!(benches);
