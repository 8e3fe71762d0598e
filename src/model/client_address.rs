//! Who the client is: the trusted-proxy networks and the rule that finds the client's
//! address behind them (nginx `real_ip_recursive`, Envoy `xff_num_trusted_hops`).
//!
//! The connection's peer is the client unless it is a trusted proxy. A trusted proxy's
//! `client_ip_header` (`X-Forwarded-For` by default) is then read from the right: each
//! address a trusted proxy appended is believed, and the first address that is not in a
//! trusted network is the client. Anything further left was written by that client and
//! is never believed.

use std::net::{IpAddr, SocketAddr};

use http::{HeaderMap, HeaderName};
use portcullis_plugins::ip_restriction::IpRules;

use crate::config::{verdict, Problem, ServerSection};

/// The header a trusted proxy names the client in when the configuration does not say.
pub const DEFAULT_CLIENT_IP_HEADER: &str = "X-Forwarded-For";

/// `server.trusted_proxies` and `server.client_ip_header`, compiled once per configuration.
#[derive(Debug, Clone)]
pub struct ClientAddressRule {
    /// The trusted networks (an allow-only rule set; empty means nobody is trusted).
    trusted: IpRules,
    any_trusted: bool,
    header: HeaderName,
}

impl ClientAddressRule {
    /// Parses the networks and the header name of `server`.
    pub fn compile(server: &ServerSection) -> Result<Self, Vec<Problem>> {
        let mut problems = Vec::new();
        let trusted =
            IpRules::new("server", &server.trusted_proxies, &[]).unwrap_or_else(|problem| {
                let path = problem
                    .path
                    .replacen("server.allow", "server.trusted_proxies", 1);
                problems.push(Problem::new(path, problem.message));
                IpRules::default()
            });
        let name = server
            .client_ip_header
            .as_deref()
            .unwrap_or(DEFAULT_CLIENT_IP_HEADER);
        let header = HeaderName::from_bytes(name.as_bytes()).unwrap_or_else(|_| {
            problems.push(Problem::new(
                "server.client_ip_header",
                format!("{name:?} is not a valid header name"),
            ));
            HeaderName::from_static("x-forwarded-for")
        });
        let rule = Self {
            trusted,
            any_trusted: !server.trusted_proxies.is_empty(),
            header,
        };
        verdict(rule, problems)
    }

    /// Whether `ip` is in one of the trusted networks.
    pub fn trusts(&self, ip: IpAddr) -> bool {
        self.any_trusted && self.trusted.permits(Some(ip))
    }

    /// The client of a request that arrived from `peer` with `headers`: the right-most
    /// address of the client IP header (all its lines, in order) that is not trusted,
    /// walking only while every address so far is trusted. An entry that is not an
    /// address ends the walk at the trusted hop that forwarded it.
    pub fn resolve(&self, peer: Option<IpAddr>, headers: &HeaderMap) -> Option<IpAddr> {
        let mut client = peer?;
        if !self.trusts(client) {
            return Some(client);
        }
        let entries = headers
            .get_all(&self.header)
            .iter()
            .rev()
            .flat_map(|line| line.to_str().unwrap_or("").rsplit(','));
        for entry in entries {
            let entry = entry.trim();
            if entry.is_empty() {
                continue;
            }
            let Some(hop) = parse_hop(entry) else {
                break;
            };
            client = hop;
            if !self.trusts(hop) {
                break;
            }
        }
        Some(client)
    }
}

/// One entry of a forwarding header: `203.0.113.7`, `2001:db8::1`, `203.0.113.7:4711` or
/// `[2001:db8::1]:4711`.
fn parse_hop(entry: &str) -> Option<IpAddr> {
    entry
        .parse::<IpAddr>()
        .or_else(|_| entry.parse::<SocketAddr>().map(|addr| addr.ip()))
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(trusted: &[&str]) -> ClientAddressRule {
        let server = ServerSection {
            trusted_proxies: trusted.iter().map(|s| s.to_string()).collect(),
            ..ServerSection::default()
        };
        ClientAddressRule::compile(&server).expect("valid")
    }

    fn headers(lines: &[&str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for line in lines {
            map.append("x-forwarded-for", line.parse().expect("value"));
        }
        map
    }

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().expect("ip"))
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_claims() {
        let rule = rule(&["10.0.0.0/8"]);
        let claimed = headers(&["198.51.100.1"]);
        assert_eq!(rule.resolve(ip("203.0.113.9"), &claimed), ip("203.0.113.9"));
        let nobody_trusted = super::tests::rule(&[]);
        assert_eq!(
            nobody_trusted.resolve(ip("10.0.0.1"), &claimed),
            ip("10.0.0.1")
        );
    }

    #[test]
    fn the_right_most_untrusted_address_is_the_client() {
        let rule = rule(&["10.0.0.0/8", "192.168.1.1"]);
        let chain = headers(&["198.51.100.1, 203.0.113.7, 192.168.1.1"]);
        assert_eq!(rule.resolve(ip("10.1.2.3"), &chain), ip("203.0.113.7"));
    }

    #[test]
    fn every_header_line_counts_in_order() {
        let rule = rule(&["10.0.0.0/8"]);
        let lines = headers(&["198.51.100.1", "203.0.113.7, 10.0.0.5", "10.0.0.6"]);
        assert_eq!(rule.resolve(ip("10.0.0.1"), &lines), ip("203.0.113.7"));
    }

    #[test]
    fn when_every_hop_is_trusted_the_left_most_is_the_client() {
        let rule = rule(&["10.0.0.0/8"]);
        assert_eq!(
            rule.resolve(ip("10.0.0.1"), &headers(&["10.0.0.3, 10.0.0.2"])),
            ip("10.0.0.3")
        );
        assert_eq!(
            rule.resolve(ip("10.0.0.1"), &HeaderMap::new()),
            ip("10.0.0.1")
        );
    }

    #[test]
    fn garbage_stops_the_walk_at_the_last_trusted_hop() {
        let rule = rule(&["10.0.0.0/8"]);
        let forged = headers(&["203.0.113.7, not-an-ip, 10.0.0.2"]);
        assert_eq!(rule.resolve(ip("10.0.0.1"), &forged), ip("10.0.0.2"));
        let binary = {
            let mut map = HeaderMap::new();
            map.append(
                "x-forwarded-for",
                http::HeaderValue::from_bytes(b"\xff\xfe").expect("opaque value"),
            );
            map
        };
        assert_eq!(rule.resolve(ip("10.0.0.1"), &binary), ip("10.0.0.1"));
    }

    #[test]
    fn ports_and_ipv6_forms_are_read() {
        let rule = rule(&["10.0.0.0/8", "2001:db8::/32"]);
        let chain = headers(&["[2001:db9::1]:4711, 203.0.113.7:80, 2001:db8::5"]);
        assert_eq!(
            rule.resolve(ip("::ffff:10.0.0.1"), &chain),
            ip("203.0.113.7")
        );
        let v6 = headers(&["[2001:db9::1]:4711"]);
        assert_eq!(rule.resolve(ip("10.0.0.1"), &v6), ip("2001:db9::1"));
    }

    #[test]
    fn another_header_can_carry_the_client() {
        let server = ServerSection {
            trusted_proxies: vec!["127.0.0.1".into()],
            client_ip_header: Some("X-Real-IP".into()),
            ..ServerSection::default()
        };
        let rule = ClientAddressRule::compile(&server).expect("valid");
        let mut map = headers(&["198.51.100.1"]);
        map.append("x-real-ip", "203.0.113.7".parse().expect("value"));
        assert_eq!(rule.resolve(ip("127.0.0.1"), &map), ip("203.0.113.7"));
    }

    #[test]
    fn bad_networks_and_header_names_are_reported_with_their_path() {
        let server = ServerSection {
            trusted_proxies: vec!["10.0.0.0/8".into(), "10.0.0.0/99".into()],
            client_ip_header: Some("bad header".into()),
            ..ServerSection::default()
        };
        let problems = ClientAddressRule::compile(&server).expect_err("invalid");
        let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            ["server.trusted_proxies[1]", "server.client_ip_header"]
        );
    }
}
