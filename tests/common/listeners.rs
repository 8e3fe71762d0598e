//! Gateway configurations with `server:` and `listeners[]` fields of the test's own (the
//! connection and client-address settings) on top of [`BASE_CONFIG`].

use super::BASE_CONFIG;

/// [`BASE_CONFIG`] with `server` lines added under `server:` (e.g.
/// `"  request_header_timeout: 1s\n"`), `listener` lines added to the main listener
/// (`"    proxy_protocol: true\n"`), `more_listeners` after it, then `sections`.
pub fn edge_config(server: &str, listener: &str, more_listeners: &str, sections: &str) -> String {
    let main_listener = "  - address: \"127.0.0.1:{listen}\"\n";
    assert!(
        BASE_CONFIG.contains("server:\n") && BASE_CONFIG.contains(main_listener),
        "BASE_CONFIG changed shape: {BASE_CONFIG}"
    );
    let config = BASE_CONFIG
        .replacen("server:\n", &format!("server:\n{server}"), 1)
        .replacen(
            main_listener,
            &format!("{main_listener}{listener}{more_listeners}"),
            1,
        );
    format!("{config}{sections}")
}
