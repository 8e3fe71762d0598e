//! Criterion benches of authentication: JWT verification per algorithm family (RS256,
//! ES256, HS256), the `jwt` plugin on a repeated token (verified-token cache), and API
//! key lookup among 10,000 consumers.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use jsonwebtoken::Algorithm;
use pingora_http::RequestHeader;
use portcullis_plugins::consumers::{hash_api_key, ConsumerConfig, Consumers};
use portcullis_plugins::jwt::{ClaimRules, Jwt, JwtConfig, KeySet, Verifier};
use portcullis_plugins::{Entry, Level, Plugin, PluginCtx, PluginEnv};

#[allow(dead_code)]
#[path = "../tests/auth/signing.rs"]
mod signing;

use signing::{claims, jwks, mint_hmac, SigningKey};

const SECRET: &[u8] = b"a-bench-secret-of-at-least-32-bytes!";

fn verifier(alg: Algorithm) -> Verifier {
    Verifier::new(
        &[alg],
        &ClaimRules {
            issuer: None,
            audience: &[],
            leeway: 0,
        },
    )
}

fn jwt_verification(c: &mut Criterion) {
    let rsa = SigningKey::rsa("rsa");
    let ec = SigningKey::ec("ec", Algorithm::ES256);
    let (published, _) = KeySet::from_jwks(jwks(&[&rsa, &ec]).as_bytes()).expect("jwks");
    let secret = KeySet::secret(SECRET);
    let cases = [
        (
            "RS256",
            rsa.mint(Algorithm::RS256, &claims("u1")),
            &published,
        ),
        (
            "ES256",
            ec.mint(Algorithm::ES256, &claims("u1")),
            &published,
        ),
        (
            "HS256",
            mint_hmac(SECRET, Algorithm::HS256, &claims("u1")),
            &secret,
        ),
    ];
    for (name, token, keys) in cases {
        let alg: Algorithm = name.parse().expect("algorithm");
        let verifier = verifier(alg);
        assert!(verifier.verify(&token, keys).is_ok());
        c.bench_function(&format!("jwt verify {name}"), |b| {
            b.iter(|| verifier.verify(black_box(&token), keys))
        });
    }
}

/// Runs a future that never waits (the plugin hooks do not).
fn ready<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("the hook waited"),
    }
}

fn jwt_plugin_repeated_token(c: &mut Criterion) {
    let rsa = SigningKey::rsa("rsa");
    let file =
        std::env::temp_dir().join(format!("portcullis-bench-jwks-{}.json", std::process::id()));
    std::fs::write(&file, jwks(&[&rsa])).expect("write the JWKS");
    let config = JwtConfig {
        jwks_file: Some(file.display().to_string()),
        algorithms: vec!["RS256".into()],
        ..JwtConfig::default()
    };
    let plugin = Jwt::compile(&config, Level::Route, &PluginEnv::check()).expect("plugin");
    let _ = std::fs::remove_file(&file);
    let mut req = RequestHeader::build("GET", b"/orders", None).expect("request");
    let token = rsa.mint(Algorithm::RS256, &claims("u1"));
    req.insert_header("Authorization", format!("Bearer {token}"))
        .expect("header");
    c.bench_function("jwt plugin RS256 repeated token (cache hit)", |b| {
        b.iter(|| {
            let mut ctx = PluginCtx::default();
            ready(plugin.request(&mut req, &mut ctx)).expect("accepted");
            ctx
        })
    });
}

fn key_lookup(c: &mut Criterion) {
    let configs: Vec<ConsumerConfig> = (0..10_000)
        .map(|i| ConsumerConfig {
            id: format!("consumer-{i}"),
            api_keys: vec![hash_api_key(&format!("key-{i}"))],
            scopes: Vec::new(),
            tier: None,
            jwt_subjects: Vec::new(),
            client_certs: Vec::new(),
        })
        .collect();
    let consumers = Arc::new(Consumers::compile(&configs).expect("consumers"));
    c.bench_function("api key lookup hit (10k consumers)", |b| {
        b.iter(|| consumers.by_api_key(black_box(b"key-4242")).is_some())
    });
    c.bench_function("api key lookup miss (10k consumers)", |b| {
        b.iter(|| consumers.by_api_key(black_box(b"not-a-key")).is_some())
    });
}

criterion_group!(
    benches,
    jwt_verification,
    jwt_plugin_repeated_token,
    key_lookup
);
criterion_main!(benches);
