//! Reloading the configuration: admin `POST /reload` behind the admin token, refused
//! invalid or restart-only changes that keep the running configuration, and SIGHUP.

mod common;

use common::{
    eventually, extend_section, free_port, Gateway, HttpResponse, BASE_CONFIG, EVENTUALLY,
    PING_ROUTE,
};

/// [`BASE_CONFIG`] with an admin token.
fn token_config() -> String {
    extend_section(BASE_CONFIG, "admin", "  token: secret")
}

/// The routes every gateway here starts with.
fn first_routes() -> String {
    format!("\nroutes:\n{PING_ROUTE}")
}

/// [`first_routes`] plus a new `respond` route on `/new`.
fn second_routes() -> String {
    first_routes() + "  - name: new\n    match: { path: /new }\n    respond: { status: 200, body: new-route }\n"
}

/// The config template with an admin token and `routes`.
fn config(routes: &str) -> String {
    format!("{}{routes}", token_config())
}

/// `POST /reload` on the admin listener with `headers`.
fn post_reload(gateway: &Gateway, headers: &[(&str, &str)]) -> HttpResponse {
    gateway.admin_post("/reload", headers, "")
}

fn reload(gateway: &Gateway) -> HttpResponse {
    post_reload(gateway, &[("Authorization", "Bearer secret")])
}

fn version(gateway: &Gateway) -> serde_json::Value {
    gateway.status_json()["version"].clone()
}

#[test]
fn reload_without_the_admin_token_is_refused() {
    let gateway = Gateway::start_raw(&config(&first_routes()));
    gateway.rewrite_config_raw(&config(&second_routes()));

    let missing = post_reload(&gateway, &[]);
    let wrong = post_reload(&gateway, &[("Authorization", "Bearer not-the-secret")]);

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
    let gateway = Gateway::start_raw(&config(&first_routes()));
    assert_eq!(gateway.get("/new").status, 404);

    gateway.rewrite_config_raw(&config(&second_routes()));
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
        "{}  - name: broken\n    match: {{ path: /broken }}\n    upstream: missing\n",
        second_routes()
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
    let gateway = Gateway::start_raw(&config(&first_routes()));
    let extra = format!("  - address: \"127.0.0.1:{}\"", free_port());
    gateway.rewrite_config_raw(&format!(
        "{}{}",
        extend_section(&token_config(), "listeners", &extra),
        second_routes()
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
    let gateway = Gateway::start_raw(&config(&first_routes()));
    gateway.rewrite_config_raw(&config(&second_routes()));

    gateway.signal("HUP");

    eventually!(
        version(&gateway) == 2,
        "/status should report version 2 within {EVENTUALLY:?} after SIGHUP: {}",
        gateway.status_json()
    );
    let new = gateway.get("/new");
    assert_eq!(new.status, 200, "{new:?}");
    assert_eq!(new.body, "new-route");
}
