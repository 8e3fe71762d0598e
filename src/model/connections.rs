//! What a client connection may do before and between requests: the timeouts, the caps
//! per listener and per client address, PROXY protocol, and who the client is.
//!
//! Compiled once from `server:` and `listeners[]`; both sections only change with a
//! restart or graceful upgrade, so the running process keeps the policy it started with.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use portcullis_plugins::units;

use super::client_address::ClientAddressRule;
use crate::config::{noted, verdict, Config, Problem};

/// `server.request_header_timeout` when not set.
pub const DEFAULT_REQUEST_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// `server.keepalive_timeout` when not set.
pub const DEFAULT_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(60);
/// `server.body_read_timeout` when not set (Pingora's own default).
pub const DEFAULT_BODY_READ_TIMEOUT: Duration = Duration::from_secs(60);

/// The compiled connection policy of the whole process.
#[derive(Debug, Clone)]
pub struct ConnectionPolicy {
    /// Most time from a connection's start, or from the first byte of a later request,
    /// to the end of the request head.
    pub request_header_timeout: Duration,
    /// Most time an idle keep-alive connection waits for its next request; `None` when
    /// keep-alive is off.
    pub keepalive_timeout: Option<Duration>,
    /// Most time between two reads of a request body.
    pub body_read_timeout: Duration,
    /// Who the client is behind trusted proxies.
    pub client_address: ClientAddressRule,
    /// The public listeners, in configuration order.
    pub listeners: Vec<ListenerPolicy>,
}

/// The part of the policy that differs per listener.
#[derive(Debug, Clone)]
pub struct ListenerPolicy {
    /// The bound address.
    pub address: SocketAddr,
    /// The address as a metric label value.
    pub label: Arc<str>,
    /// Connections start with a PROXY protocol header.
    pub proxy_protocol: bool,
    /// The listener terminates TLS.
    pub tls: bool,
    /// Most open connections (`None`: unlimited).
    pub max_connections: Option<u32>,
    /// Most open connections from one client address (`None`: unlimited).
    pub max_connections_per_ip: Option<u32>,
}

impl ConnectionPolicy {
    /// Checks and compiles the connection settings of `config`.
    pub fn compile(config: &Config) -> Result<Self, Vec<Problem>> {
        let server = &config.server;
        let mut problems = Vec::new();
        let client_address = noted(ClientAddressRule::compile(server), &mut problems);
        let positive = |value: Option<units::Duration>, default, path: &str| match value {
            Some(d) => d
                .within(path, Duration::from_millis(1), units::LONGEST)
                .map_err(|problem| vec![problem]),
            None => Ok(default),
        };
        let request_header_timeout = positive(
            server.request_header_timeout,
            DEFAULT_REQUEST_HEADER_TIMEOUT,
            "server.request_header_timeout",
        );
        let request_header_timeout = noted(request_header_timeout, &mut problems);
        let body_read_timeout = positive(
            server.body_read_timeout,
            DEFAULT_BODY_READ_TIMEOUT,
            "server.body_read_timeout",
        );
        let body_read_timeout = noted(body_read_timeout, &mut problems);
        let keepalive_timeout = match server.keepalive_timeout {
            Some(units::Duration(d)) if d.is_zero() => None,
            Some(d) => noted(
                d.within("server.keepalive_timeout", Duration::ZERO, units::LONGEST)
                    .map_err(|problem| vec![problem]),
                &mut problems,
            ),
            None => Some(DEFAULT_KEEPALIVE_TIMEOUT),
        };
        let cap = |value: u32| (value > 0).then_some(value);
        let mut listeners = Vec::with_capacity(config.listeners.len());
        for (i, listener) in config.listeners.iter().enumerate() {
            // A bad address is reported where the listeners are compiled.
            let Ok(address) = listener.address.parse::<SocketAddr>() else {
                continue;
            };
            if listener.proxy_protocol && server.trusted_proxies.is_empty() {
                problems.push(Problem::new(
                    format!("listeners[{i}].proxy_protocol"),
                    "PROXY headers are only accepted from server.trusted_proxies, which is empty",
                ));
            }
            listeners.push(ListenerPolicy {
                address,
                label: address.to_string().into(),
                proxy_protocol: listener.proxy_protocol,
                tls: listener.tls.is_some(),
                max_connections: cap(listener.max_connections.unwrap_or(server.max_connections)),
                max_connections_per_ip: cap(listener
                    .max_connections_per_ip
                    .unwrap_or(server.max_connections_per_ip)),
            });
        }
        let (Some(client_address), Some(request_header_timeout), Some(body_read_timeout)) =
            (client_address, request_header_timeout, body_read_timeout)
        else {
            return Err(problems);
        };
        let policy = Self {
            request_header_timeout,
            keepalive_timeout,
            body_read_timeout,
            client_address,
            listeners,
        };
        verdict(policy, problems)
    }

    /// The listener a connection arrived on, by the connection's local address: the
    /// listener bound to exactly that address, else one bound to the wildcard address
    /// on that port.
    pub fn listener(&self, local: SocketAddr) -> Option<(usize, &ListenerPolicy)> {
        self.listeners
            .iter()
            .enumerate()
            .find(|(_, l)| l.address == local)
            .or_else(|| {
                self.listeners.iter().enumerate().find(|(_, l)| {
                    l.address.port() == local.port() && l.address.ip().is_unspecified()
                })
            })
    }

    /// The open-file limit the caps need: two descriptors per connection (the client's
    /// and one to an upstream) plus some for everything else; `None` when a listener
    /// has no cap.
    pub fn open_files_needed(&self) -> Option<u64> {
        const OTHER_FILES: u64 = 256;
        self.listeners
            .iter()
            .map(|l| l.max_connections.map(|max| 2 * u64::from(max)))
            .sum::<Option<u64>>()
            .map(|connections| connections + OTHER_FILES)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(yaml: &str) -> Result<ConnectionPolicy, Vec<Problem>> {
        let config = crate::config::parse(yaml).expect("parses");
        ConnectionPolicy::compile(&config)
    }

    #[test]
    fn defaults_are_safe() {
        let policy = policy("listeners: [{address: '127.0.0.1:8080'}]").expect("valid");
        assert_eq!(policy.request_header_timeout, Duration::from_secs(10));
        assert_eq!(policy.keepalive_timeout, Some(Duration::from_secs(60)));
        assert_eq!(policy.body_read_timeout, Duration::from_secs(60));
        assert_eq!(policy.listeners[0].max_connections, None);
        assert_eq!(policy.open_files_needed(), None);
    }

    #[test]
    fn listeners_override_the_server_caps() {
        let policy = policy(
            "server: {max_connections: 100, max_connections_per_ip: 5, keepalive_timeout: 0s}\n\
             listeners: [{address: '127.0.0.1:8080'}, {address: '0.0.0.0:8081', max_connections: 0, \
             max_connections_per_ip: 2}]",
        )
        .expect("valid");
        let (first, second) = (&policy.listeners[0], &policy.listeners[1]);
        assert_eq!(
            (first.max_connections, first.max_connections_per_ip),
            (Some(100), Some(5))
        );
        assert_eq!(
            (second.max_connections, second.max_connections_per_ip),
            (None, Some(2))
        );
        assert_eq!(policy.keepalive_timeout, None);
        let local = |s: &str| s.parse::<SocketAddr>().expect("address");
        assert_eq!(
            policy.listener(local("127.0.0.1:8080")).map(|(i, _)| i),
            Some(0)
        );
        assert_eq!(
            policy.listener(local("10.1.1.1:8081")).map(|(i, _)| i),
            Some(1)
        );
        assert!(policy.listener(local("10.1.1.1:8080")).is_none());
    }

    #[test]
    fn the_open_file_need_counts_every_capped_listener() {
        let policy = policy(
            "server: {max_connections: 1000}\n\
             listeners: [{address: '127.0.0.1:8080'}, {address: '127.0.0.1:8081'}]",
        )
        .expect("valid");
        assert_eq!(policy.open_files_needed(), Some(4256));
    }

    #[test]
    fn problems_name_their_field() {
        let problems = policy(
            "server: {request_header_timeout: 0s, body_read_timeout: 0s}\n\
             listeners: [{address: '127.0.0.1:8080', proxy_protocol: true}]",
        )
        .expect_err("invalid");
        let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "server.request_header_timeout",
                "server.body_read_timeout",
                "listeners[0].proxy_protocol"
            ]
        );
    }
}
