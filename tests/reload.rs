//! Reloading the configuration: admin `POST /reload` behind the admin token, refused
//! invalid or restart-only changes that keep the running configuration, and SIGHUP.

mod common;

use std::process::Command;

use common::{free_port, http_agent, wait_until, Gateway, HttpResponse, EVENTUALLY};

/// [`common::BASE_CONFIG`] with an admin token; `{listeners}` is replaced by the listener
/// list so a test can change it.
const TOKEN_CONFIG: &str = r#"server:
  threads: 2
  pid_file: "{dir}/portcullis.pid"
  upgrade_sock: "{dir}/upgrade.sock"
listeners:
{listeners}
admin:
  address: "127.0.0.1:{admin}"
  token: secret
access_log:
  target: "{access_log}"
  format: json
"#;

/// The routes every gateway here starts with.
const FIRST_ROUTES: &str = r#"
routes:
  - name: ping
    match: { path: /ping }
    respond: { status: 200, body: pong }
"#;

/// [`FIRST_ROUTES`] plus a new `respond` route on `/new`.
const SECOND_ROUTES: &str = r#"
routes:
  - name: ping
    match: { path: /ping }
    respond: { status: 200, body: pong }
  - name: new
    match: { path: /new }
    respond: { status: 200, body: new-route }
"#;

/// The config template with the gateway's own listener and `routes`.
fn config(routes: &str) -> String {
    config_with_listeners("  - address: \"127.0.0.1:{listen}\"", routes)
}

fn config_with_listeners(listeners: &str, routes: &str) -> String {
    format!("{}{routes}", TOKEN_CONFIG.replace("{listeners}", listeners))
}

/// `POST /reload` on the admin listener with optional `Authorization` value.
fn post_reload(gateway: &Gateway, authorization: Option<&str>) -> HttpResponse {
    let url = gateway.admin_url("/reload");
    let mut request = http_agent().post(&url);
    if let Some(value) = authorization {
        request = request.set("Authorization", value);
    }
    match request.call() {
        Ok(response) | Err(ureq::Error::Status(_, response)) => response.into(),
        Err(error) => panic!("POST {url}: {error}"),
    }
}

fn reload(gateway: &Gateway) -> HttpResponse {
    post_reload(gateway, Some("Bearer secret"))
}

fn version(gateway: &Gateway) -> serde_json::Value {
    gateway.status_json()["version"].clone()
}

#[test]
fn reload_without_the_admin_token_is_refused() {
    let gateway = Gateway::start_raw(&config(FIRST_ROUTES));
    gateway.rewrite_config_raw(&config(SECOND_ROUTES));

    let missing = post_reload(&gateway, None);
    let wrong = post_reload(&gateway, Some("Bearer not-the-secret"));

    assert_eq!(missing.status, 401, "{missing:?}");
    assert_eq!(wrong.status, 401, "{wrong:?}");
    assert_eq!(
        version(&gateway),
        1,
        "a refused reload must not load anything"
    );
    assert_eq!(
        gateway.get("/new").status,
        404,
        "the new route must not be served"
    );
}

#[test]
fn reload_with_the_token_serves_the_new_config_and_keeps_it_when_the_next_is_invalid() {
    let gateway = Gateway::start_raw(&config(FIRST_ROUTES));
    assert_eq!(gateway.get("/new").status, 404);

    gateway.rewrite_config_raw(&config(SECOND_ROUTES));
    let reloaded = reload(&gateway);

    assert_eq!(reloaded.status, 200, "{reloaded:?}");
    let body = reloaded.json();
    assert_eq!(body["version"], 2, "{body}");
    assert_eq!(body["result"], "reloaded", "{body}");
    let new = gateway.get("/new");
    assert_eq!(new.status, 200, "{new:?}");
    assert_eq!(new.body, "new-route");
    assert_eq!(version(&gateway), 2);
    assert_eq!(gateway.metric("portcullis_config_version", &[]), Some(2.0));

    // Invalid: the third route proxies to an upstream that does not exist.
    gateway.rewrite_config_raw(&config(&format!(
        "{SECOND_ROUTES}  - name: broken\n    match: {{ path: /broken }}\n    upstream: missing\n"
    )));
    let refused = reload(&gateway);

    assert_eq!(refused.status, 400, "{refused:?}");
    let body = refused.json();
    let problems = body["problems"]
        .as_array()
        .unwrap_or_else(|| panic!("no problems list: {body}"));
    assert!(
        problems.iter().any(|p| p
            .as_str()
            .unwrap_or_default()
            .contains("routes[2].upstream")),
        "the problems should name routes[2].upstream: {body}"
    );
    assert_eq!(gateway.get("/ping").body, "pong");
    assert_eq!(gateway.get("/new").body, "new-route");
    assert_eq!(version(&gateway), 2);
    assert_eq!(gateway.metric("portcullis_config_version", &[]), Some(2.0));
    assert_eq!(
        gateway.metric("portcullis_config_reloads_total", &[("result", "failure")]),
        Some(1.0)
    );
    assert_eq!(
        gateway.metric("portcullis_config_reloads_total", &[("result", "success")]),
        Some(1.0)
    );
}

#[test]
fn reload_that_changes_listeners_is_refused_as_a_whole() {
    let gateway = Gateway::start_raw(&config(FIRST_ROUTES));
    let extra = free_port();
    gateway.rewrite_config_raw(&config_with_listeners(
        &format!("  - address: \"127.0.0.1:{{listen}}\"\n  - address: \"127.0.0.1:{extra}\""),
        SECOND_ROUTES,
    ));

    let refused = reload(&gateway);

    assert_eq!(refused.status, 400, "{refused:?}");
    assert!(
        refused.body.contains("listeners"),
        "the refusal should name the listeners: {refused:?}"
    );
    assert_eq!(version(&gateway), 1);
    assert_eq!(
        gateway.get("/new").status,
        404,
        "the routes of a refused reload must not be served"
    );
}

#[test]
fn sighup_reloads_the_config() {
    let gateway = Gateway::start_raw(&config(FIRST_ROUTES));
    gateway.rewrite_config_raw(&config(SECOND_ROUTES));

    let status = Command::new("kill")
        .args(["-HUP", &gateway.pid().to_string()])
        .status()
        .expect("run kill -HUP");
    assert!(status.success(), "kill -HUP failed: {status}");

    let reloaded = wait_until(EVENTUALLY, || version(&gateway) == 2);
    assert!(
        reloaded,
        "/status should report version 2 within {EVENTUALLY:?} after SIGHUP: {}",
        gateway.status_json()
    );
    let new = gateway.get("/new");
    assert_eq!(new.status, 200, "{new:?}");
    assert_eq!(new.body, "new-route");
}
