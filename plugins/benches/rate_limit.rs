//! Criterion benches of a rate-limit check: the local store (token bucket, sliding window,
//! through the whole plugin hook: key building, store, verdict) and the Redis round trip,
//! one at a time and 64 concurrent checks pipelined on the shared connection.
//!
//! The Redis group starts its own `redis-server` on port 28380 (without persistence) and is
//! skipped, with a message, when `redis-server` is not installed.
//!
//!     cargo bench -p portcullis-plugins --bench rate_limit

use std::future::Future;
use std::pin::pin;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use pingora_http::RequestHeader;
use portcullis_plugins::rate_limit::{RateLimit, RateLimitRuleConfig, RedisBackend, RedisConfig};
use portcullis_plugins::{Entry, Level, Plugin, PluginCtx, PluginEnv, Retained};

const REDIS_PORT: u16 = 28380;

fn plugin(rule: &str, env: &PluginEnv) -> RateLimit {
    let rules: Vec<RateLimitRuleConfig> = serde_yaml::from_str(&format!("[{rule}]")).expect("yaml");
    RateLimit::compile(&rules, Level::Route, env).expect("valid rule")
}

/// A request from one of 1,024 client addresses.
fn ctx(i: u32) -> PluginCtx {
    PluginCtx {
        route: "bench".into(),
        client_ip: Some(std::net::Ipv4Addr::from(0x0a00_0000 | (i % 1024)).into()),
        ..PluginCtx::default()
    }
}

/// Polls a future that completes without waiting (the local store never waits).
fn ready<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("the local check waited"),
    }
}

fn local(c: &mut Criterion) {
    let env = PluginEnv::check();
    let mut group = c.benchmark_group("rate_limit_local");
    for (name, rule) in [
        (
            "token_bucket",
            "{name: b, key: client_ip, algorithm: token_bucket, rate: 1000000000, per: 1s}",
        ),
        (
            "sliding_window",
            "{name: w, key: client_ip, algorithm: sliding_window, limit: 1000000000, window: 1m}",
        ),
    ] {
        let plugin = plugin(rule, &env);
        let mut req = RequestHeader::build("GET", b"/", None).expect("request");
        let mut i = 0u32;
        group.bench_function(name, |b| {
            b.iter(|| {
                i = i.wrapping_add(1);
                let mut ctx = ctx(i);
                ready(plugin.request(&mut req, &mut ctx)).expect("allowed")
            })
        });
    }
    group.finish();
}

struct RedisProcess(Child);

impl Drop for RedisProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_redis() -> Option<RedisProcess> {
    let child = Command::new("redis-server")
        .args(["--port", &REDIS_PORT.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let process = RedisProcess(child);
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::net::TcpStream::connect(("127.0.0.1", REDIS_PORT)).is_err() {
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Some(process)
}

fn redis(c: &mut Criterion) {
    let Some(_server) = start_redis() else {
        eprintln!("rate_limit_redis skipped: redis-server is not installed or did not start");
        return;
    };
    let config: RedisConfig = serde_yaml::from_str(&format!(
        "{{url: 'redis://127.0.0.1:{REDIS_PORT}', timeout: 1s}}"
    ))
    .expect("yaml");
    let retained = Retained::fresh();
    let backend = RedisBackend::new(&config, &retained, true).expect("valid redis section");
    let env = PluginEnv {
        redis: Some(Arc::new(backend)),
        ..PluginEnv::check()
    };
    let plugin = Arc::new(plugin(
        "{name: r, key: client_ip, algorithm: token_bucket, rate: 1000000000, per: 1s, backend: redis}",
        &env,
    ));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    // Wait for the background connection.
    let connected = runtime.block_on(async {
        for _ in 0..100 {
            let mut req = RequestHeader::build("GET", b"/", None).expect("request");
            plugin
                .request(&mut req, &mut ctx(0))
                .await
                .expect("fail open at worst");
            if ctx_has_headers(&plugin).await {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    });
    assert!(
        connected,
        "no answer from redis-server on port {REDIS_PORT}"
    );

    let mut group = c.benchmark_group("rate_limit_redis");
    group.bench_function("one_at_a_time", |b| {
        let mut i = 0u32;
        b.iter(|| {
            i = i.wrapping_add(1);
            runtime.block_on(async {
                let mut req = RequestHeader::build("GET", b"/", None).expect("request");
                plugin
                    .request(&mut req, &mut ctx(i))
                    .await
                    .expect("allowed");
            })
        })
    });
    group.bench_function("64_concurrent_per_check", |b| {
        b.iter_custom(|iters| {
            let per_task = iters.div_ceil(64);
            let started = Instant::now();
            runtime.block_on(async {
                let tasks: Vec<_> = (0..64u32)
                    .map(|t| {
                        let plugin = Arc::clone(&plugin);
                        tokio::spawn(async move {
                            let mut req = RequestHeader::build("GET", b"/", None).expect("request");
                            for i in 0..per_task {
                                let mut ctx = ctx(t * 10_000 + i as u32);
                                plugin.request(&mut req, &mut ctx).await.expect("allowed");
                            }
                        })
                    })
                    .collect();
                for task in tasks {
                    task.await.expect("task");
                }
            });
            started
                .elapsed()
                .mul_f64(iters as f64 / (per_task * 64) as f64)
        })
    });
    group.finish();
}

/// Whether a check got an answer from Redis (it sets the rate-limit headers; a fail-open
/// pass does not).
async fn ctx_has_headers(plugin: &RateLimit) -> bool {
    let mut req = RequestHeader::build("GET", b"/", None).expect("request");
    let mut ctx = ctx(1);
    plugin.request(&mut req, &mut ctx).await.is_ok()
        && ctx
            .extensions
            .get::<portcullis_plugins::rate_limit::RateLimitHeaders>()
            .is_some()
}

criterion_group!(benches, local, redis);
criterion_main!(benches);
