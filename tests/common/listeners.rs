//! Gateway configurations with `server:` and `listeners[]` fields of the test's own (the
//! connection and client-address settings) on top of [`BASE_CONFIG`].

use super::config::{extend_section, BASE_CONFIG};

/// [`BASE_CONFIG`] with `server` lines added under `server:` (e.g.
/// `"  request_header_timeout: 1s\n"`), `listener` lines added to its one listener
/// (`"    proxy_protocol: true\n"`), `more_listeners` after it, then `sections`.
pub fn edge_config(server: &str, listener: &str, more_listeners: &str, sections: &str) -> String {
    let config = extend_section(BASE_CONFIG, "server", server);
    let config = extend_section(&config, "listeners", &format!("{listener}{more_listeners}"));
    format!("{config}{sections}")
}
