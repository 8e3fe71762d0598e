//! The admin status page (`GET /`): signed in with the admin token once, strict headers,
//! and in a real headless Chromium a target ejected by outlier detection and a refused
//! reload shown, without a console message.

mod common;

use std::fs::{self, File};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{
    eventually, extend_section, send, wait_until, Gateway, TestDir, Upstream, BASE_CONFIG,
    PING_ROUTE,
};

const TOKEN: &str = "s3cret";

/// How long one Chromium run may take before the test gives up.
const BROWSER_TIMEOUT: Duration = Duration::from_secs(60);

/// Virtual time the page gets to run its script: several refreshes of two seconds.
const PAGE_TIME_MS: u32 = 7_000;

/// [`BASE_CONFIG`] with the admin token.
fn token_config() -> String {
    extend_section(BASE_CONFIG, "admin", &format!("  token: {TOKEN}"))
}

/// `GET path` on the admin listener with these headers.
fn admin_get(gateway: &Gateway, path: &str, headers: &[(&str, &str)]) -> common::HttpResponse {
    send(
        &common::http_agent(),
        "GET",
        &gateway.admin_url(path),
        headers,
    )
}

/// Runs headless Chromium on `url` with `args`, in a fresh profile; returns its stdout
/// and every console line it logged. A missing Chromium fails the test.
fn chromium(url: &str, args: &[&str]) -> (String, Vec<String>) {
    let dir = TestDir::new();
    let output =
        |name: &str| File::create(dir.join(name)).unwrap_or_else(|e| panic!("create {name}: {e}"));
    let mut child = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--enable-logging=stderr",
            "--v=0",
        ])
        .arg(format!("--user-data-dir={}", dir.join("profile").display()))
        .arg(format!("--virtual-time-budget={PAGE_TIME_MS}"))
        .args(args)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(output("stdout"))
        .stderr(output("stderr"))
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot run chromium ({e}): apt-get install chromium (scripts/setup-debian.sh)")
        });
    let mut status = None;
    wait_until(BROWSER_TIMEOUT, || {
        status = child.try_wait().ok().flatten();
        status.is_some()
    });
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    let read = |name: &str| fs::read_to_string(dir.join(name)).unwrap_or_default();
    let stderr = read("stderr");
    assert!(
        status.is_some_and(|status| status.success()),
        "chromium {args:?} {url} did not finish within {BROWSER_TIMEOUT:?} ({status:?}):\n{stderr}"
    );
    // The page writes nothing to the console itself: every line there is an uncaught
    // error or a refusal by the Content-Security-Policy.
    let console = stderr
        .lines()
        .filter(|line| line.contains(":CONSOLE"))
        .map(str::to_string)
        .collect();
    (read("stdout"), console)
}

/// The start tag of the element whose attribute `attribute` is `value`, in `dom`.
fn tag_with<'a>(dom: &'a str, attribute: &str, value: &str) -> Option<&'a str> {
    let at = dom.find(&format!("{attribute}=\"{value}\""))?;
    let start = dom[..at].rfind('<')?;
    let end = at + dom[at..].find('>')?;
    Some(&dom[start..=end])
}

#[test]
fn the_page_shows_an_ejected_target_and_a_refused_reload_without_console_messages() {
    let (good, bad, next) = (
        Upstream::start("good"),
        Upstream::start("bad"),
        Upstream::start("next"),
    );
    let sections = format!(
        r#"
upstreams:
  app:
    targets: [{{ address: "{good}" }}, {{ address: "{bad}" }}]
    outlier_detection: {{ consecutive_5xx: 2, base_ejection_time: 5m, max_ejection_percent: 50 }}
  next:
    targets: [{{ address: "{next}" }}]
routes:
{PING_ROUTE}  - name: api
    match: {{ path_prefix: / }}
    upstream: app
    canary: {{ upstream: next, weight: 10 }}
    cache: {{ enabled: true }}
    plugins: {{ headers: {{ request_add: {{ X-Via: portcullis }} }} }}
"#,
        good = good.addr(),
        bad = bad.addr(),
        next = next.addr(),
    );
    let config = token_config() + &sections;
    let gateway = Gateway::start_raw(&config);
    bad.set_status(500);
    eventually!(
        {
            gateway.get("/");
            gateway.target_status("app", &bad.addr())["ejected"] == true
        },
        "the failing target was never ejected"
    );
    gateway.rewrite_config_raw(&format!(
        "{config}  - name: broken\n    match: {{ path: /x }}\n"
    ));
    let bearer = format!("Bearer {TOKEN}");
    let refused = gateway.admin_post("/reload", &[("Authorization", &bearer)], "");
    assert_eq!(refused.status, 400, "{refused:?}");
    let url = gateway.admin_url(&format!("/?token={TOKEN}"));

    let (dom, console) = chromium(&url, &["--dump-dom"]);

    assert!(
        console.is_empty(),
        "console messages:\n{}",
        console.join("\n")
    );
    let bad_row = tag_with(&dom, "data-address", &bad.addr())
        .unwrap_or_else(|| panic!("no row for {} in the page:\n{dom}", bad.addr()));
    assert!(bad_row.contains("data-state=\"ejected\""), "{bad_row}");
    let good_row = tag_with(&dom, "data-address", &good.addr()).expect("a row for the good target");
    assert!(good_row.contains("data-state=\"serving\""), "{good_row}");
    assert!(
        tag_with(&dom, "data-route", "api").is_some(),
        "no route api:\n{dom}"
    );
    for shown in [
        "next 10%",
        "headers",
        "routes[2]: set exactly one of upstream and respond",
        "HTTP (http/1.1, h2c)",
    ] {
        assert!(dom.contains(shown), "{shown:?} not on the page:\n{dom}");
    }
    let updated = tag_with(&dom, "id", "updated").expect("the update line");
    assert!(
        updated.contains("muted"),
        "reading /status failed: {updated}"
    );
    assert!(
        !dom.contains("id=\"refusal\" hidden"),
        "the refused reload is hidden:\n{dom}"
    );

    let shots = TestDir::new();
    let png = shots.join("status-page.png");
    let (_, console) = chromium(
        &url,
        &[
            &format!("--screenshot={}", png.display()),
            "--window-size=1280,900",
            "--hide-scrollbars",
        ],
    );
    assert!(
        console.is_empty(),
        "console messages:\n{}",
        console.join("\n")
    );
    let image = fs::read(&png).expect("chromium wrote the screenshot");
    assert!(
        image.starts_with(b"\x89PNG") && image.len() > 10_000,
        "not a screenshot of a page: {} bytes",
        image.len()
    );
    // To refresh the README's picture: PORTCULLIS_SCREENSHOT=docs/status-page.png.
    if let Ok(keep) = std::env::var("PORTCULLIS_SCREENSHOT") {
        fs::copy(&png, &keep).unwrap_or_else(|e| panic!("copy the screenshot to {keep}: {e}"));
    }
}

#[test]
fn the_page_asks_for_the_admin_token_once_and_has_strict_headers() {
    let gateway = Gateway::start_raw(&format!("{}routes:\n{PING_ROUTE}", token_config()));

    let asked = admin_get(&gateway, "/", &[]);
    assert_eq!(asked.status, 401, "{asked:?}");
    assert!(asked.body.contains("<form method=\"post\""), "{asked:?}");
    let wrong = admin_get(&gateway, "/?token=guess", &[]);
    assert_eq!(wrong.status, 401, "{wrong:?}");
    assert!(wrong.body.contains("not the admin token"), "{wrong:?}");

    let signed_in = admin_get(&gateway, &format!("/?token={TOKEN}"), &[]);
    assert_eq!(signed_in.status, 303, "{signed_in:?}");
    assert_eq!(signed_in.header("Location"), Some("/"));
    let set_cookie = signed_in.header("Set-Cookie").unwrap_or_default();
    assert!(
        set_cookie.contains("HttpOnly") && set_cookie.contains("SameSite=Strict"),
        "{set_cookie}"
    );
    assert!(
        !set_cookie.contains(TOKEN),
        "the cookie carries the token: {set_cookie}"
    );
    let cookie = set_cookie.split(';').next().unwrap_or_default();

    let page = admin_get(&gateway, "/", &[("Cookie", cookie)]);
    assert_eq!(page.status, 200, "{page:?}");
    assert_eq!(
        page.header("Content-Type"),
        Some("text/html; charset=utf-8")
    );
    assert_eq!(page.header("X-Frame-Options"), Some("DENY"));
    assert_eq!(page.header("Cache-Control"), Some("no-store"));
    let policy = page.header("Content-Security-Policy").unwrap_or_default();
    for directive in [
        "default-src 'none'",
        "connect-src 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(policy.contains(directive), "{directive} not in {policy}");
    }
    assert!(
        !policy.contains("unsafe-inline") && !policy.contains("http"),
        "{policy}"
    );

    let by_form = gateway.admin_post(
        "/",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        &format!("token={TOKEN}"),
    );
    assert_eq!(by_form.status, 303, "{by_form:?}");
    let forged = admin_get(
        &gateway,
        "/",
        &[("Cookie", &format!("portcullis_admin={TOKEN}"))],
    );
    assert_eq!(forged.status, 401, "{forged:?}");
    let reload_by_cookie = gateway.admin_post("/reload", &[("Cookie", cookie)], "");
    assert_eq!(
        reload_by_cookie.status, 401,
        "the page's session is no bearer token for POSTs"
    );
    assert_eq!(gateway.admin_post("/", &[], "token=%zz").status, 401);
}

#[test]
fn the_page_is_behind_the_admin_allow_list() {
    let routes = format!("\nroutes:\n{PING_ROUTE}");
    // Readiness cannot be probed through a refusing admin listener: start it allowing
    // loopback, then reload with the restrictive list.
    let gateway = Gateway::start(&routes);
    assert_eq!(gateway.admin_get("/").status, 200, "no token: the page");
    let restricted = extend_section(BASE_CONFIG, "admin", "  allow: [\"10.0.0.0/8\"]");
    gateway.rewrite_config_raw(&format!("{restricted}{routes}"));
    gateway.reload();

    let refused = gateway.admin_get("/");
    assert_eq!(refused.status, 403, "{refused:?}");
}
