//! `ip_restriction`: allow or deny clients by address (CIDR lists).

use std::net::IpAddr;

use ipnet::IpNet;
use pingora_http::RequestHeader;
use serde::Deserialize;

use crate::{Entry, ErrorCode, Level, Phase, Plugin, PluginCtx, PluginEnv, Problem, Rejection};

/// `plugins.ip_restriction` as written in the configuration.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IpRestrictionConfig {
    /// When not empty, only these networks (`10.0.0.0/8`, `2001:db8::/32`, or a single
    /// address) may use the route.
    #[serde(default)]
    pub allow: Vec<String>,
    /// Networks refused even when `allow` lists them.
    #[serde(default)]
    pub deny: Vec<String>,
}

/// Compiled allow and deny lists.
#[derive(Debug, Clone, Default)]
pub struct IpRules {
    allow: Vec<IpNet>,
    deny: Vec<IpNet>,
}

impl IpRules {
    /// Parses both lists; the problem paths (`allow[0]`) are placed under `path`
    /// (`admin`; empty to leave them relative).
    pub fn new(path: &str, allow: &[String], deny: &[String]) -> Result<Self, Problem> {
        let parse = || {
            Ok(Self {
                allow: parse_nets("allow", allow)?,
                deny: parse_nets("deny", deny)?,
            })
        };
        parse().map_err(|problem: Problem| problem.under(path))
    }

    /// Whether `ip` may pass: not denied, and allowed when there is an allow list. An
    /// unknown address (a Unix socket peer) passes only when there is no allow list.
    pub fn permits(&self, ip: Option<IpAddr>) -> bool {
        let Some(ip) = ip.map(canonical) else {
            return self.allow.is_empty();
        };
        !self.deny.iter().any(|net| net.contains(&ip))
            && (self.allow.is_empty() || self.allow.iter().any(|net| net.contains(&ip)))
    }
}

/// An IPv4 client seen through an IPv6 socket (`::ffff:a.b.c.d`) is matched as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn parse_nets(path: &str, items: &[String]) -> Result<Vec<IpNet>, Problem> {
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            item.parse::<IpNet>()
                .or_else(|_| item.parse::<IpAddr>().map(IpNet::from))
                .map(|net| net.trunc())
                .map_err(|_| {
                    Problem::new(
                        format!("{path}[{i}]"),
                        format!("{item:?} is not an address or CIDR network"),
                    )
                })
        })
        .collect()
}

/// The compiled `ip_restriction` plugin.
pub struct IpRestriction {
    rules: IpRules,
}

impl Entry for IpRestriction {
    const NAME: &'static str = "ip_restriction";
    const PHASE: Phase = Phase::Admission;
    type Config = IpRestrictionConfig;

    /// Parses the lists.
    fn compile(
        config: &IpRestrictionConfig,
        _: Level,
        _: &PluginEnv,
    ) -> Result<Self, Vec<Problem>> {
        if config.allow.is_empty() && config.deny.is_empty() {
            return Err(vec![Problem::new("", "set allow, deny or both")]);
        }
        let rules = IpRules::new("", &config.allow, &config.deny).map_err(|p| vec![p])?;
        Ok(Self { rules })
    }
}

impl IpRestriction {
    /// The request hook's verdict; never waits.
    fn decide(&self, _req: &mut RequestHeader, ctx: &mut PluginCtx) -> Result<(), Rejection> {
        if self.rules.permits(ctx.client_ip) {
            Ok(())
        } else {
            Err(Rejection::new(
                ErrorCode::Forbidden,
                "client address not allowed on this route",
            ))
        }
    }
}

impl Plugin for IpRestriction {
    fn request_now(
        &self,
        req: &mut RequestHeader,
        ctx: &mut PluginCtx,
    ) -> Option<Result<(), Rejection>> {
        Some(self.decide(req, ctx))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(allow: &[&str], deny: &[&str]) -> IpRules {
        let owned = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        IpRules::new("t", &owned(allow), &owned(deny)).expect("valid")
    }

    #[test]
    fn deny_wins_over_allow_and_allow_lists_are_exclusive() {
        let rules = rules(&["10.0.0.0/8", "::1"], &["10.1.0.0/16"]);
        let ip = |s: &str| Some(s.parse::<IpAddr>().expect("ip"));
        assert!(rules.permits(ip("10.2.3.4")));
        assert!(!rules.permits(ip("10.1.2.3")));
        assert!(!rules.permits(ip("192.168.1.1")));
        assert!(rules.permits(ip("::1")));
        assert!(rules.permits(ip("::ffff:10.2.3.4")));
        assert!(!rules.permits(None));
    }

    #[test]
    fn a_bad_network_names_its_place() {
        let problem =
            IpRules::new("ip_restriction", &["10.0.0.0/33".into()], &[]).expect_err("bad");
        assert_eq!(problem.path, "ip_restriction.allow[0]");
        let problems = crate::config::section_problems("ip_restriction: {deny: [x]}");
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].path, "ip_restriction.deny[0]");
    }
}
