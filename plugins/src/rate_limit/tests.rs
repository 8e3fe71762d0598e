//! The plugin as a whole, with the identity facts (consumer, tier, claims) filled in the
//! context as the auth plugins would.

use std::sync::Mutex;

use super::*;

#[derive(Default)]
struct Counted(Mutex<Vec<(String, String)>>);

impl Telemetry for Counted {
    fn rate_limited(&self, route: &str, rule: &str) {
        self.0
            .lock()
            .expect("lock")
            .push((route.into(), rule.into()));
    }
}

fn plugin(yaml: &str, telemetry: Arc<Counted>) -> RateLimit {
    let rules: Vec<RateLimitRuleConfig> = serde_yaml::from_str(yaml).expect("yaml");
    let env = PluginEnv {
        telemetry,
        ..PluginEnv::check()
    };
    RateLimit::compile(&rules, Level::Route, &env).unwrap_or_else(|e| panic!("{e:?}"))
}

fn ctx(consumer: Option<&str>, tier: Option<&str>) -> PluginCtx {
    PluginCtx {
        route: "orders".into(),
        client_ip: Some([127, 0, 0, 1].into()),
        consumer: consumer.map(Into::into),
        consumer_tier: tier.map(Into::into),
        ..PluginCtx::default()
    }
}

async fn passed(plugin: &RateLimit, ctx: &mut PluginCtx, tries: usize) -> usize {
    let mut req = RequestHeader::build("GET", b"/", None).expect("request");
    let mut passed = 0;
    for _ in 0..tries {
        if plugin.request(&mut req, ctx).await.is_ok() {
            passed += 1;
        }
    }
    passed
}

#[tokio::test]
async fn consumers_are_counted_apart() {
    let plugin = plugin(
        "[{name: per-consumer, key: consumer, algorithm: token_bucket, rate: 1, per: 1h, burst: 3}]",
        Arc::default(),
    );
    assert_eq!(passed(&plugin, &mut ctx(Some("acme"), None), 10).await, 3);
    assert_eq!(passed(&plugin, &mut ctx(Some("globex"), None), 10).await, 3);
    // Without a consumer the request is counted by its client address.
    assert_eq!(passed(&plugin, &mut ctx(None, None), 10).await, 3);
}

#[tokio::test]
async fn tiers_override_the_limits() {
    let plugin = plugin(
        "[{name: by-tier, key: consumer, algorithm: sliding_window, limit: 2, window: 1h, \
           tiers: {gold: {limit: 5}}}]",
        Arc::default(),
    );
    assert_eq!(
        passed(&plugin, &mut ctx(Some("a"), Some("gold")), 10).await,
        5
    );
    assert_eq!(
        passed(&plugin, &mut ctx(Some("b"), Some("free")), 10).await,
        2
    );
    assert_eq!(passed(&plugin, &mut ctx(Some("c"), None), 10).await, 2);
}

#[tokio::test]
async fn tier_key_shares_one_counter_per_tier() {
    let plugin = plugin(
        "[{name: tier, key: tier, algorithm: token_bucket, rate: 1, per: 1h, \
           tiers: {gold: {rate: 4}}}]",
        Arc::default(),
    );
    assert_eq!(
        passed(&plugin, &mut ctx(Some("a"), Some("gold")), 3).await,
        3
    );
    assert_eq!(
        passed(&plugin, &mut ctx(Some("b"), Some("gold")), 3).await,
        1
    );
}

#[tokio::test]
async fn jwt_claims_key_the_count() {
    let plugin = plugin(
        "[{name: tenant, key: 'jwt:tenant', algorithm: token_bucket, rate: 1, per: 1h, burst: 2}]",
        Arc::default(),
    );
    let with_tenant = |tenant: &str| {
        let mut claims = serde_json::Map::new();
        claims.insert("tenant".into(), serde_json::json!(tenant));
        PluginCtx {
            claims: Some(Arc::new(claims)),
            ..ctx(Some("same-consumer"), None)
        }
    };
    assert_eq!(passed(&plugin, &mut with_tenant("t1"), 5).await, 2);
    assert_eq!(passed(&plugin, &mut with_tenant("t2"), 5).await, 2);
}

#[tokio::test]
async fn the_rule_closest_to_its_limit_drives_the_headers_and_refusals_are_counted() {
    let telemetry = Arc::new(Counted::default());
    let plugin = plugin(
        "[{name: roomy, key: route, algorithm: sliding_window, limit: 100, window: 1h}, \
          {name: tight, key: consumer, algorithm: sliding_window, limit: 2, window: 1h}]",
        Arc::clone(&telemetry),
    );
    let mut req = RequestHeader::build("GET", b"/", None).expect("request");
    let mut first = ctx(Some("acme"), None);
    plugin.request(&mut req, &mut first).await.expect("passes");
    let headers = first.extensions.get::<RateLimitHeaders>().expect("headers");
    assert_eq!(&*headers.rule, "tight");
    assert_eq!(headers.outcome.remaining, 1);

    let mut second = ctx(Some("acme"), None);
    plugin.request(&mut req, &mut second).await.expect("passes");
    let mut third = ctx(Some("acme"), None);
    let refusal = plugin
        .request(&mut req, &mut third)
        .await
        .expect_err("refused");
    assert_eq!(refusal.code, ErrorCode::RateLimited);
    assert!(refusal.retry_after.is_some_and(|seconds| seconds >= 1));
    assert_eq!(third.rate_limit_rule.as_deref(), Some("tight"));
    assert_eq!(
        *telemetry.0.lock().expect("lock"),
        vec![("orders".to_string(), "tight".to_string())]
    );
}

#[test]
fn mistakes_are_reported_with_their_path() {
    let problems = |yaml: &str| -> Vec<String> {
        crate::config::section_problems(&format!("rate_limit: {yaml}"))
            .into_iter()
            .map(|p| p.path)
            .collect()
    };
    assert_eq!(
        problems("[{name: a, key: client_ip, algorithm: token_bucket}]"),
        ["rate_limit[0].rate"]
    );
    assert_eq!(
        problems(
            "[{name: a, key: client_ip, algorithm: sliding_window, limit: 1, window: 1s, rate: 3}]"
        ),
        ["rate_limit[0].rate"]
    );
    assert_eq!(
        problems("[{name: a, key: client_ip, algorithm: token_bucket, rate: 1, backend: redis}]"),
        ["rate_limit[0].backend"]
    );
    assert_eq!(
        problems(
            "[{name: a, key: client_ip, algorithm: token_bucket, rate: 1}, \
              {name: a, key: 'cookie:x', algorithm: token_bucket, rate: 1}]"
        ),
        ["rate_limit[1].name", "rate_limit[1].key"]
    );
    assert_eq!(
        problems(
            "[{name: a, key: client_ip, algorithm: token_bucket, rate: 1, \
               tiers: {gold: {rate: 0}}}]"
        ),
        ["rate_limit[0].tiers.gold.rate"]
    );
}

#[tokio::test]
async fn a_request_refused_by_one_rule_is_counted_by_none() {
    let telemetry = Arc::new(Counted::default());
    let plugin = plugin(
        "[{name: per-consumer, key: consumer, algorithm: token_bucket, rate: 1, per: 1h, burst: 5}, \
          {name: per-ip, key: client_ip, algorithm: sliding_window, limit: 2, window: 1h}]",
        Arc::clone(&telemetry),
    );
    let from = |ip: [u8; 4]| PluginCtx {
        client_ip: Some(ip.into()),
        ..ctx(Some("acme"), None)
    };
    // Two pass per address; the eight refused by per-ip leave acme's bucket alone.
    assert_eq!(passed(&plugin, &mut from([10, 0, 0, 1]), 10).await, 2);
    assert_eq!(passed(&plugin, &mut from([10, 0, 0, 2]), 10).await, 2);
    // One token left for acme: refused by the first rule, not counted by the second.
    assert_eq!(passed(&plugin, &mut from([10, 0, 0, 3]), 1).await, 1);
    assert_eq!(passed(&plugin, &mut from([10, 0, 0, 4]), 5).await, 0);
    let mut other = PluginCtx {
        client_ip: Some([10, 0, 0, 4].into()),
        ..ctx(Some("globex"), None)
    };
    assert_eq!(
        passed(&plugin, &mut other, 5).await,
        2,
        "10.0.0.4 was not counted while acme's bucket refused it"
    );
    let refused = telemetry.0.lock().expect("lock").len();
    assert_eq!(refused, 8 + 8 + 5 + 3);
}

#[test]
fn refunds_give_back_exactly_what_was_counted() {
    const SECOND: u64 = 1_000_000_000;
    let bucket = TokenBucket {
        rate: 1,
        per_ns: SECOND,
        burst: 2,
    };
    let mut state = BucketState::default();
    for _ in 0..2 {
        let now = 10 * SECOND;
        assert!(bucket.peek(&state, now).allowed);
        bucket.count(&mut state, now);
    }
    assert!(!bucket.peek(&state, 10 * SECOND).allowed);
    bucket.refund(&mut state);
    assert!(bucket.peek(&state, 10 * SECOND).allowed);

    let window = SlidingWindow {
        limit: 1,
        window_ns: SECOND,
    };
    let mut state = WindowState::default();
    window.count(&mut state, 5 * SECOND);
    assert!(!window.peek(&mut state, 5 * SECOND + 1).allowed);
    window.refund(&mut state, 5 * SECOND);
    assert!(window.peek(&mut state, 5 * SECOND + 1).allowed);
    // Counted in one window, given back in the next: it leaves the previous count.
    window.count(&mut state, 5 * SECOND);
    assert!(!window.peek(&mut state, 6 * SECOND).allowed);
    window.refund(&mut state, 5 * SECOND);
    assert!(window.peek(&mut state, 6 * SECOND).allowed);
}
