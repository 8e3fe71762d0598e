//! Authentication at the edge, end to end: `jwt` (secret, JWKS file, JWKS URL with key
//! rotation), `key_auth`, consumers, scopes, the auth failure limit and the metric
//! reasons. Tokens are minted in the test with keys made at test time.

#[path = "../common/mod.rs"]
mod common;
mod jwks_server;
mod signing;

use common::{
    assert_gateway_error, bind_test_port, eventually, free_port, run_portcullis, Gateway,
    HttpResponse, OneRoute, TestDir, Upstream, PING_ROUTE,
};
use std::thread;
use std::time::{Duration, Instant};

use jsonwebtoken::Algorithm;
use jwks_server::JwksServer;
use serde_json::json;
use signing::{claims, jwks, mint_hmac, now, unsigned, SigningKey};

const SECRET: &str = "a-test-secret-of-at-least-32-bytes!!";

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

fn get(gateway: &Gateway, path: &str, headers: &[(&str, &str)]) -> HttpResponse {
    gateway.request("GET", path, headers)
}

fn with_token(gateway: &Gateway, path: &str, token: &str) -> HttpResponse {
    get(gateway, path, &[("Authorization", &bearer(token))])
}

fn failures(gateway: &Gateway, route: &str, plugin: &str, reason: &str) -> f64 {
    gateway
        .metric(
            "portcullis_auth_failures_total",
            &[("route", route), ("plugin", plugin), ("reason", reason)],
        )
        .unwrap_or(0.0)
}

/// One route `api` on `/` to `app`, with `plugins` (YAML flow mapping).
fn api_route(app: &Upstream, plugins: &str) -> OneRoute {
    OneRoute::to(&[app])
        .named("api")
        .route(&format!("plugins: {plugins}"))
}

/// [`api_route`] with `extra` top-level sections (consumers, auth_failure_limit).
fn gateway_with(app: &Upstream, plugins: &str, extra: &str) -> Gateway {
    Gateway::start(&api_route(app, plugins).section(extra).yaml())
}

#[test]
fn hmac_tokens_pass_and_claims_replace_spoofed_headers() {
    let app = Upstream::start("app");
    let gateway = gateway_with(
        &app,
        &format!(
            "{{ jwt: {{ secret: \"{SECRET}\", algorithms: [HS256, HS384, HS512], \
             claims_to_headers: {{ sub: X-User-Id, tenant: X-Tenant-Id }} }} }}"
        ),
        "consumers:\n  - { id: mobile-app, tier: gold, jwt_subjects: [\"app-*\"] }\n",
    );

    for alg in [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512] {
        let token = mint_hmac(
            SECRET.as_bytes(),
            alg,
            &json!({"sub": "app-7", "tenant": "t-1", "exp": now() + 60}),
        );
        let response = get(
            &gateway,
            "/orders",
            &[
                ("Authorization", &bearer(&token)),
                ("X-User-Id", "admin"),
                ("X-Consumer-Id", "root"),
            ],
        );
        assert_eq!(response.status, 200, "{alg:?}: {response:?}");
        let seen = app.last_request();
        assert_eq!(seen.header_values("X-User-Id"), ["app-7"], "{alg:?}");
        assert_eq!(seen.header("X-Tenant-Id"), Some("t-1"));
        assert_eq!(seen.header_values("X-Consumer-Id"), ["mobile-app"]);
    }

    // A token without the claim: the client's copy is still removed.
    let token = mint_hmac(
        SECRET.as_bytes(),
        Algorithm::HS256,
        &json!({"sub": "web-1", "exp": now() + 60}),
    );
    let response = get(
        &gateway,
        "/orders",
        &[
            ("Authorization", &bearer(&token)),
            ("X-Tenant-Id", "spoofed"),
            ("X-Consumer-Id", "root"),
        ],
    );
    assert_eq!(response.status, 200);
    let seen = app.last_request();
    assert_eq!(seen.header("X-Tenant-Id"), None);
    assert_eq!(
        seen.header("X-Consumer-Id"),
        None,
        "web-1 maps to no consumer"
    );

    let log = gateway.wait_for_access_log(4);
    assert_eq!(log[0]["consumer"], "mobile-app");
}

#[test]
fn every_asymmetric_family_verifies_against_a_jwks_file() {
    let rsa = SigningKey::rsa("rsa-1");
    let p256 = SigningKey::ec("p256-1", Algorithm::ES256);
    let p384 = SigningKey::ec("p384-1", Algorithm::ES384);
    let ed = SigningKey::ed25519("ed-1");
    let dir = TestDir::new();
    let file = dir.write("jwks.json", &jwks(&[&rsa, &p256, &p384, &ed]));
    let app = Upstream::start("app");
    let gateway = gateway_with(
        &app,
        &format!("{{ jwt: {{ jwks_file: \"{}\" }} }}", file.display()),
        "",
    );

    let cases = [
        (&rsa, Algorithm::RS256),
        (&rsa, Algorithm::RS384),
        (&rsa, Algorithm::RS512),
        (&rsa, Algorithm::PS256),
        (&p256, Algorithm::ES256),
        (&p384, Algorithm::ES384),
        (&ed, Algorithm::EdDSA),
    ];
    for (key, alg) in cases {
        let response = with_token(&gateway, "/", &key.mint(alg, &claims("u1")));
        assert_eq!(response.status, 200, "{alg:?}: {response:?}");
    }
    // The P-256 key cannot vouch for an ES384 token, whatever the signature.
    let response = with_token(
        &gateway,
        "/",
        &p384.mint_as("p256-1", Algorithm::ES384, &claims("u1")),
    );
    assert_eq!(response.status, 401);
    assert_eq!(failures(&gateway, "api", "jwt", "bad_signature"), 1.0);
}

#[test]
fn alg_none_and_hmac_with_the_public_key_are_refused() {
    let rsa = SigningKey::rsa("rsa-1");
    let dir = TestDir::new();
    let file = dir.write("jwks.json", &jwks(&[&rsa]));
    let app = Upstream::start("app");
    let gateway = gateway_with(
        &app,
        &format!("{{ jwt: {{ jwks_file: \"{}\" }} }}", file.display()),
        "",
    );

    let none = with_token(&gateway, "/", &unsigned(&claims("u1")));
    assert_gateway_error(&none, 401, "UNAUTHORIZED");

    // The classic confusion: HS256 "signed" with the RSA public key as the secret.
    let mut header = jsonwebtoken::Header::new(Algorithm::HS256);
    header.kid = Some("rsa-1".into());
    let confused = jsonwebtoken::encode(
        &header,
        &claims("u1"),
        &jsonwebtoken::EncodingKey::from_secret(&rsa.public_pem),
    )
    .expect("token");
    let response = with_token(&gateway, "/", &confused);
    assert_gateway_error(&response, 401, "UNAUTHORIZED");
    assert_eq!(
        response.header("WWW-Authenticate"),
        Some("Bearer realm=\"portcullis\", error=\"invalid_token\"")
    );
    assert_eq!(app.requests(), 0);
    assert_eq!(failures(&gateway, "api", "jwt", "malformed"), 1.0);
    assert_eq!(failures(&gateway, "api", "jwt", "bad_signature"), 1.0);
}

#[test]
fn expiry_not_before_leeway_issuer_and_audience() {
    let app = Upstream::start("app");
    let gateway = gateway_with(
        &app,
        &format!("{{ jwt: {{ secret: \"{SECRET}\", leeway: 30s, issuer: https://id.example.com, audience: orders }} }}"),
        "",
    );
    let token = |patch: serde_json::Value| {
        let mut claims = json!({"sub": "u1", "iss": "https://id.example.com", "aud": "orders", "exp": now() + 60});
        for (k, v) in patch.as_object().expect("object") {
            claims[k] = v.clone();
        }
        mint_hmac(SECRET.as_bytes(), Algorithm::HS256, &claims)
    };
    let status = |patch| with_token(&gateway, "/", &token(patch)).status;

    assert_eq!(status(json!({})), 200);
    assert_eq!(
        status(json!({"exp": now() - 10})),
        200,
        "expired within the leeway"
    );
    assert_eq!(status(json!({"exp": now() - 90})), 401);
    assert_eq!(
        status(json!({"nbf": now() + 10})),
        200,
        "not before, within the leeway"
    );
    assert_eq!(status(json!({"nbf": now() + 90})), 401);
    assert_eq!(status(json!({"iss": "https://evil.example.com"})), 401);
    assert_eq!(status(json!({"aud": ["billing", "orders"]})), 200);
    assert_eq!(status(json!({"aud": "billing"})), 401);

    for reason in ["expired", "not_yet_valid", "wrong_issuer", "wrong_audience"] {
        assert_eq!(failures(&gateway, "api", "jwt", reason), 1.0, "{reason}");
    }
}

#[test]
fn missing_tokens_get_a_bare_challenge_and_scopes_are_enforced() {
    let app = Upstream::start("app");
    let gateway = gateway_with(
        &app,
        &format!("{{ jwt: {{ secret: \"{SECRET}\", required_scopes: [orders:read], cookie: session, query: access_token }} }}"),
        "",
    );
    let missing = get(&gateway, "/", &[]);
    assert_gateway_error(&missing, 401, "UNAUTHORIZED");
    assert_eq!(
        missing.header("WWW-Authenticate"),
        Some("Bearer realm=\"portcullis\"")
    );

    let scoped = |scopes: serde_json::Value| {
        let mut claims = claims("u1");
        claims
            .as_object_mut()
            .expect("object")
            .extend(scopes.as_object().expect("object").clone());
        mint_hmac(SECRET.as_bytes(), Algorithm::HS256, &claims)
    };
    assert_eq!(
        with_token(
            &gateway,
            "/",
            &scoped(json!({"scope": "profile orders:read"}))
        )
        .status,
        200
    );
    assert_eq!(
        with_token(&gateway, "/", &scoped(json!({"scp": ["orders:read"]}))).status,
        200
    );
    let lacking = with_token(&gateway, "/", &scoped(json!({"scope": "profile"})));
    assert_gateway_error(&lacking, 403, "FORBIDDEN");
    assert!(lacking
        .header("WWW-Authenticate")
        .is_some_and(|c| c.contains("error=\"insufficient_scope\"")));

    let token = scoped(json!({"scope": "orders:read"}));
    let cookie = format!("theme=dark; session={token}");
    assert_eq!(
        get(&gateway, "/", &[("Cookie", &cookie)]).status,
        200,
        "token from the cookie"
    );
    assert_eq!(
        get(&gateway, &format!("/?access_token={token}"), &[]).status,
        200,
        "token from the query"
    );

    assert_eq!(failures(&gateway, "api", "jwt", "missing"), 1.0);
    assert_eq!(failures(&gateway, "api", "jwt", "insufficient_scope"), 1.0);
}

#[test]
fn a_rotated_jwks_is_picked_up_without_restart_and_old_keys_work_during_the_overlap() {
    let (old, new) = (
        SigningKey::rsa("2026-old"),
        SigningKey::ec("2026-new", Algorithm::ES256),
    );
    let server = JwksServer::start(bind_test_port(), &jwks(&[&old]));
    let app = Upstream::start("app");
    let gateway = gateway_with(
        &app,
        &format!(
            "{{ jwt: {{ jwks_url: \"{}\", jwks_refresh: 1h }} }}",
            server.url()
        ),
        "",
    );
    let old_token = old.mint(Algorithm::RS256, &claims("u1"));
    eventually!(
        with_token(&gateway, "/", &old_token).status == 200,
        "the first JWKS never loaded"
    );

    // Rotation: the new key is published beside the old one. The first token naming the
    // new kid makes the gateway refetch at once, waits for that fetch and passes.
    server.publish(&jwks(&[&old, &new]));
    let new_token = new.mint(Algorithm::ES256, &claims("u2"));
    let first = with_token(&gateway, "/", &new_token);
    assert_eq!(
        first.status, 200,
        "the first token with the new kid: {first:?}"
    );
    assert_eq!(
        with_token(&gateway, "/", &old_token).status,
        200,
        "old key during the overlap"
    );
    assert_eq!(
        server.fetches(),
        2,
        "one start-up fetch and one refetch for the new kid"
    );

    // Another unknown kid within 10 s is refused at once, without a third fetch.
    let stranger = SigningKey::ed25519("unknown").mint(Algorithm::EdDSA, &claims("u3"));
    let started = Instant::now();
    assert_eq!(with_token(&gateway, "/", &stranger).status, 401);
    assert_eq!(with_token(&gateway, "/", &stranger).status, 401);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "a rate-limited refetch is not waited for: {:?}",
        started.elapsed()
    );
    assert_eq!(server.fetches(), 2);
    assert_eq!(failures(&gateway, "api", "jwt", "unknown_kid"), 2.0);
}

/// A gateway whose route `api` answers `ok` itself (no upstream: the test is about the
/// gateway's wait, not about many connections to an upstream at once) to tokens verified
/// against `server`'s JWKS, refreshed hourly; returned once its first fetch loaded `key`.
fn jwks_url_gateway(server: &JwksServer, key: &SigningKey) -> Gateway {
    let gateway = Gateway::start(&format!(
        r#"
routes:
  - name: api
    match: {{ path_prefix: / }}
    respond: {{ status: 200, body: ok }}
    plugins: {{ jwt: {{ jwks_url: "{}", jwks_refresh: 1h }} }}
"#,
        server.url()
    ));
    let token = key.mint(Algorithm::RS256, &claims("u1"));
    eventually!(
        with_token(&gateway, "/", &token).status == 200,
        "the first JWKS never loaded"
    );
    gateway
}

#[test]
fn concurrent_tokens_with_a_new_kid_share_one_refetch_and_all_pass() {
    let (old, new) = (SigningKey::rsa("old"), SigningKey::rsa("new"));
    let server = JwksServer::start(bind_test_port(), &jwks(&[&old]));
    let gateway = jwks_url_gateway(&server, &old);

    server.publish(&jwks(&[&old, &new]));
    // Slow enough that every request arrives while the one refetch is under way.
    server.set_delay(Duration::from_millis(500));
    let token = new.mint(Algorithm::RS256, &claims("u2"));
    let statuses: Vec<u16> = thread::scope(|scope| {
        let requests: Vec<_> = (0..16)
            .map(|_| scope.spawn(|| with_token_on_new_connection(&gateway, &token)))
            .collect();
        requests
            .into_iter()
            .map(|request| request.join().expect("client thread"))
            .collect()
    });

    assert_eq!(statuses, [200; 16]);
    assert_eq!(server.fetches(), 2, "one start-up fetch and one refetch");
    assert_eq!(failures(&gateway, "api", "jwt", "unknown_kid"), 0.0);
}

#[test]
fn the_wait_for_a_refetch_is_bounded() {
    let (old, new) = (SigningKey::rsa("old"), SigningKey::rsa("new"));
    let server = JwksServer::start(bind_test_port(), &jwks(&[&old]));
    let gateway = jwks_url_gateway(&server, &old);

    server.publish(&jwks(&[&old, &new]));
    server.set_delay(Duration::from_secs(4));
    let token = new.mint(Algorithm::RS256, &claims("u2"));
    let started = Instant::now();
    let response = with_token(&gateway, "/", &token);
    let waited = started.elapsed();

    assert_gateway_error(&response, 401, "UNAUTHORIZED");
    assert!(
        (Duration::from_millis(1500)..Duration::from_millis(3500)).contains(&waited),
        "refused after the 2 s wait, not before and not after the slow fetch: {waited:?}"
    );
    // The refetch went on and its keys serve the next request.
    eventually!(
        within(Duration::from_secs(10)),
        with_token(&gateway, "/", &token).status == 200,
        "the slow refetch's keys never served"
    );
    assert_eq!(server.fetches(), 2);
}

/// [`with_token`] from a client of its own (a connection of its own).
fn with_token_on_new_connection(gateway: &Gateway, token: &str) -> u16 {
    common::send(
        &common::http_agent(),
        "GET",
        &gateway.url("/"),
        &[("Authorization", &bearer(token))],
    )
    .status
}

#[test]
fn a_jwks_url_down_at_start_answers_503_until_the_keys_load() {
    let key = SigningKey::rsa("k1");
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}/jwks.json");
    let app = Upstream::start("app");
    let gateway = gateway_with(&app, &format!("{{ jwt: {{ jwks_url: \"{url}\" }} }}"), "");
    let token = key.mint(Algorithm::RS256, &claims("u1"));

    let early = with_token(&gateway, "/", &token);
    assert_gateway_error(&early, 503, "AUTH_KEYS_UNAVAILABLE");
    assert_eq!(failures(&gateway, "api", "jwt", "keys_unavailable"), 1.0);
    eventually!(
        gateway.stderr().contains("fetching"),
        "the failed fetch was not logged"
    );

    let listener = std::net::TcpListener::bind(("127.0.0.1", port)).expect("bind the JWKS port");
    let _server = JwksServer::start(listener, &jwks(&[&key]));
    eventually!(
        within(std::time::Duration::from_secs(15)),
        with_token(&gateway, "/", &token).status == 200,
        "the keys never loaded once the JWKS server came up"
    );
}

const CONSUMERS: &str = r#"consumers:
  - id: acme
    api_keys: ["sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"]
    scopes: [orders:read]
    tier: gold
"#;

#[test]
fn api_keys_from_a_header_are_hashed_checked_and_hidden() {
    let app = Upstream::start("app");
    let gateway = gateway_with(&app, "{ key_auth: { header: X-Api-Key, hide_credentials: true, required_scopes: [orders:read] } }", CONSUMERS);

    let response = get(
        &gateway,
        "/orders",
        &[("X-Api-Key", "test"), ("X-Consumer-Id", "root")],
    );
    assert_eq!(response.status, 200, "{response:?}");
    let seen = app.last_request();
    assert_eq!(seen.header("X-Api-Key"), None, "hide_credentials");
    assert_eq!(seen.header_values("X-Consumer-Id"), ["acme"]);

    let unknown = get(&gateway, "/orders", &[("X-Api-Key", "tesT")]);
    assert_gateway_error(&unknown, 401, "UNAUTHORIZED");
    assert_gateway_error(&get(&gateway, "/orders", &[]), 401, "UNAUTHORIZED");
    assert_eq!(failures(&gateway, "api", "key_auth", "unknown_key"), 1.0);
    assert_eq!(failures(&gateway, "api", "key_auth", "missing"), 1.0);
}

#[test]
fn api_keys_from_the_query_are_removed_before_proxying_and_scopes_are_checked() {
    let app = Upstream::start("app");
    let gateway = gateway_with(
        &app,
        "{ key_auth: { query: api_key, hide_credentials: true } }",
        CONSUMERS,
    );
    let response = get(&gateway, "/orders?page=2&api_key=test", &[]);
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(app.last_request().path, "/orders?page=2");

    let strict = gateway_with(
        &app,
        "{ key_auth: { query: api_key, required_scopes: [orders:write] } }",
        CONSUMERS,
    );
    let refused = get(&strict, "/orders?api_key=test", &[]);
    assert_gateway_error(&refused, 403, "FORBIDDEN");
    assert_eq!(
        failures(&strict, "api", "key_auth", "insufficient_scope"),
        1.0
    );
}

#[test]
fn a_route_with_both_accepts_either_and_reports_the_presented_credential() {
    let app = Upstream::start("app");
    let gateway = gateway_with(
        &app,
        &format!("{{ key_auth: {{}}, jwt: {{ secret: \"{SECRET}\" }} }}"),
        CONSUMERS,
    );
    let token = mint_hmac(SECRET.as_bytes(), Algorithm::HS256, &claims("u1"));
    assert_eq!(get(&gateway, "/", &[("X-Api-Key", "test")]).status, 200);
    assert_eq!(with_token(&gateway, "/", &token).status, 200);

    let neither = get(&gateway, "/", &[]);
    assert_gateway_error(&neither, 401, "UNAUTHORIZED");
    let expired = mint_hmac(
        SECRET.as_bytes(),
        Algorithm::HS256,
        &json!({"sub": "u1", "exp": now() - 600}),
    );
    let bad = with_token(&gateway, "/", &expired);
    assert_gateway_error(&bad, 401, "UNAUTHORIZED");
    assert_eq!(
        failures(&gateway, "api", "jwt", "expired"),
        1.0,
        "the presented token's reason wins"
    );
    assert_eq!(
        failures(&gateway, "api", "key_auth", "missing"),
        1.0,
        "only the request with nothing"
    );
}

#[test]
fn repeated_failures_from_one_address_are_limited() {
    let app = Upstream::start("app");
    let gateway = gateway_with(
        &app,
        "{ key_auth: {} }",
        &format!("{CONSUMERS}auth_failure_limit: {{ limit: 3, window: 1m }}\n"),
    );
    for _ in 0..3 {
        assert_eq!(get(&gateway, "/", &[("X-Api-Key", "guess")]).status, 401);
    }
    let limited = get(&gateway, "/", &[("X-Api-Key", "test")]);
    assert_gateway_error(&limited, 429, "RATE_LIMITED");
    assert_eq!(limited.header("Retry-After"), Some("60"));
    assert_eq!(
        gateway.metric(
            "portcullis_rate_limited_total",
            &[("route", "api"), ("rule", "auth_failure_limit")]
        ),
        Some(1.0)
    );
}

#[test]
fn hash_key_prints_the_stored_form_and_check_refuses_plain_keys() {
    let output = run_portcullis(&["hash-key", "test"]);
    assert!(output.status.success());
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
    );

    let dir = TestDir::new();
    let config = dir.write(
        "bad.yaml",
        "listeners: [{ address: \"127.0.0.1:1\" }]\nconsumers: [{ id: acme, api_keys: [plain] }]\n\
         upstreams: { app: { targets: [{ address: \"127.0.0.1:2\" }] } }\n\
         routes: [{ name: r, upstream: app, plugins: { jwt: { jwks_file: x.json, algorithms: [HS256] } } }]\n",
    );
    let output = run_portcullis(&["check", "-c", &config.display().to_string()]);
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(!output.status.success());
    assert!(text.contains("consumers[0].api_keys[0]"), "{text}");
    assert!(
        text.contains("routes[0].plugins.jwt.algorithms[0]"),
        "{text}"
    );
}

#[test]
fn consistent_hash_on_a_jwt_claim_keeps_each_tenant_on_one_target() {
    let (a, b) = (Upstream::start("a"), Upstream::start("b"));
    let gateway = Gateway::start(
        &OneRoute::to(&[&a, &b])
            .upstream("load_balancing: consistent_hash\nhash_on: \"jwt:tenant\"")
            .named("api")
            .route(&format!("plugins: {{ jwt: {{ secret: \"{SECRET}\" }} }}"))
            .yaml(),
    );
    let target_of = |tenant: &str| {
        let token = mint_hmac(
            SECRET.as_bytes(),
            Algorithm::HS256,
            &json!({"sub": "u", "tenant": tenant, "exp": now() + 60}),
        );
        let response = with_token(&gateway, "/", &token);
        assert_eq!(response.status, 200, "{response:?}");
        response.body
    };
    let tenants: Vec<String> = (0..20).map(|i| format!("tenant-{i}")).collect();
    let first: Vec<String> = tenants.iter().map(|t| target_of(t)).collect();
    for _round in 0..3 {
        for (tenant, target) in tenants.iter().zip(&first) {
            assert_eq!(&target_of(tenant), target, "{tenant} moved");
        }
    }
    assert!(
        first.iter().any(|t| t != &first[0]),
        "20 tenants on one target: {first:?}"
    );
}

#[test]
fn a_reload_keeps_the_fetched_keys_without_refetching() {
    let key = SigningKey::ec("k1", Algorithm::ES256);
    let server = JwksServer::start(bind_test_port(), &jwks(&[&key]));
    let app = Upstream::start("app");
    let plugins = format!("{{ jwt: {{ jwks_url: \"{}\" }} }}", server.url());
    let gateway = gateway_with(&app, &plugins, "");
    let token = key.mint(Algorithm::ES256, &claims("u1"));
    eventually!(
        with_token(&gateway, "/", &token).status == 200,
        "the JWKS never loaded"
    );

    gateway.rewrite_config(&api_route(&app, &plugins).routes_after(PING_ROUTE).yaml());
    gateway.reload();
    assert_eq!(gateway.get("/ping").status, 200, "the new config serves");

    assert_eq!(
        with_token(&gateway, "/", &token).status,
        200,
        "keys kept across the reload"
    );
    assert_eq!(server.fetches(), 1, "the reload did not refetch");
}
