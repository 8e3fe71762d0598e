//! Route matching: the compiled form of `routes[].match` and the precedence rule.
//!
//! Precedence (most specific wins), compared in this order:
//! 1. host: an exact host beats a wildcard (`*.example.com`), which beats no host condition;
//! 2. path: exact `path` beats `path_regex`, which beats `path_prefix`, which beats none;
//!    between two prefixes the longer wins;
//! 3. the number of method and header conditions (more wins);
//! 4. file order (earlier wins).
//!
//! Routes are sorted by that key once, at load; a request takes the first route that matches.

use std::cmp::Reverse;

use http::{HeaderName, HeaderValue, Method};
use pingora_http::RequestHeader;
use regex::Regex;

use super::request::request_host;
use crate::config::{MatchConfig, Problem};

/// A host condition.
#[derive(Debug, Clone)]
enum HostPattern {
    /// `api.example.com` (stored lowercase).
    Exact(String),
    /// `*.example.com`, stored as `.example.com`: any subdomain, not the apex.
    Suffix(String),
}

impl HostPattern {
    fn matches(&self, host: &str) -> bool {
        match self {
            Self::Exact(name) => name.eq_ignore_ascii_case(host),
            Self::Suffix(suffix) => {
                host.len() > suffix.len()
                    && host.as_bytes()[host.len() - suffix.len()..]
                        .eq_ignore_ascii_case(suffix.as_bytes())
            }
        }
    }
}

/// A path condition.
#[derive(Debug, Clone)]
enum PathPattern {
    Any,
    Exact(String),
    /// Matches the prefix itself and anything below it on a segment boundary:
    /// `/api` takes `/api`, `/api/x` and `/api?q`, not `/apix`.
    Prefix(String),
    Regex(Regex),
}

impl PathPattern {
    fn matches(&self, path: &str) -> bool {
        match self {
            Self::Any => true,
            Self::Exact(exact) => path == exact,
            Self::Prefix(prefix) => {
                path.starts_with(prefix.as_str())
                    && (prefix.ends_with('/')
                        || path.len() == prefix.len()
                        || path.as_bytes()[prefix.len()] == b'/')
            }
            Self::Regex(regex) => regex.is_match(path),
        }
    }

    fn rank(&self) -> (u8, usize) {
        match self {
            Self::Exact(_) => (3, 0),
            Self::Regex(_) => (2, 0),
            Self::Prefix(prefix) => (1, prefix.len()),
            Self::Any => (0, 0),
        }
    }
}

/// The compiled conditions of one route.
#[derive(Debug, Clone)]
pub struct Matcher {
    hosts: Vec<HostPattern>,
    path: PathPattern,
    methods: Vec<Method>,
    headers: Vec<(HeaderName, HeaderValue)>,
}

impl Matcher {
    /// Compiles `routes[i].match`; `path` is that field's config path for problems.
    pub fn compile(config: &MatchConfig, path: &str) -> Result<Self, Vec<Problem>> {
        let mut problems = Vec::new();
        let hosts = config
            .hosts
            .iter()
            .enumerate()
            .filter_map(|(i, host)| match compile_host(host) {
                Ok(pattern) => Some(pattern),
                Err(message) => {
                    problems.push(Problem::new(format!("{path}.hosts[{i}]"), message));
                    None
                }
            })
            .collect();

        let conditions = [
            config.path.is_some(),
            config.path_prefix.is_some(),
            config.path_regex.is_some(),
        ];
        if conditions.iter().filter(|set| **set).count() > 1 {
            problems.push(Problem::new(
                path,
                "set at most one of path, path_prefix and path_regex",
            ));
        }
        let path_pattern = if let Some(exact) = &config.path {
            check_absolute(exact, &format!("{path}.path"), &mut problems);
            PathPattern::Exact(exact.clone())
        } else if let Some(prefix) = &config.path_prefix {
            check_absolute(prefix, &format!("{path}.path_prefix"), &mut problems);
            PathPattern::Prefix(prefix.clone())
        } else if let Some(pattern) = &config.path_regex {
            // Anchored: the regex must match the whole path, as in Envoy's safe_regex.
            match Regex::new(&format!("^(?:{pattern})$")) {
                Ok(regex) => PathPattern::Regex(regex),
                Err(e) => {
                    problems.push(Problem::new(format!("{path}.path_regex"), e.to_string()));
                    PathPattern::Any
                }
            }
        } else {
            PathPattern::Any
        };

        let methods = config
            .methods
            .iter()
            .enumerate()
            .filter_map(|(i, method)| {
                match Method::from_bytes(method.to_ascii_uppercase().as_bytes()) {
                    Ok(method) => Some(method),
                    Err(_) => {
                        problems.push(Problem::new(
                            format!("{path}.methods[{i}]"),
                            format!("{method:?} is not an HTTP method"),
                        ));
                        None
                    }
                }
            })
            .collect();

        let headers = config
            .headers
            .iter()
            .filter_map(|(name, value)| {
                let header_path = format!("{path}.headers.{name}");
                let Ok(header_name) = HeaderName::from_bytes(name.as_bytes()) else {
                    problems.push(Problem::new(header_path, "not a valid header name"));
                    return None;
                };
                let Ok(header_value) = HeaderValue::from_str(value) else {
                    problems.push(Problem::new(header_path, "not a valid header value"));
                    return None;
                };
                Some((header_name, header_value))
            })
            .collect();

        if problems.is_empty() {
            Ok(Self {
                hosts,
                path: path_pattern,
                methods,
                headers,
            })
        } else {
            Err(problems)
        }
    }

    /// Whether a request with this (lowercase, port-less) `host` and `path` matches.
    pub fn matches(&self, req: &RequestHeader, host: &str, path: &str) -> bool {
        (self.hosts.is_empty() || self.hosts.iter().any(|pattern| pattern.matches(host)))
            && self.path.matches(path)
            && (self.methods.is_empty() || self.methods.contains(&req.method))
            && self
                .headers
                .iter()
                .all(|(name, value)| req.headers.get_all(name).iter().any(|v| v == value))
    }

    /// The prefix `strip_prefix` removes, if the path condition is a prefix.
    pub fn prefix(&self) -> Option<&str> {
        match &self.path {
            PathPattern::Prefix(prefix) => Some(prefix),
            _ => None,
        }
    }

    /// The sort key of the precedence rule (greater is more specific).
    fn specificity(&self) -> (u8, u8, usize, usize) {
        let host_rank = if self
            .hosts
            .iter()
            .any(|h| matches!(h, HostPattern::Exact(_)))
        {
            2
        } else if self.hosts.is_empty() {
            0
        } else {
            1
        };
        let (path_rank, prefix_len) = self.path.rank();
        let conditions = usize::from(!self.methods.is_empty()) + self.headers.len();
        (host_rank, path_rank, prefix_len, conditions)
    }
}

fn compile_host(host: &str) -> Result<HostPattern, String> {
    let host = host.trim().to_ascii_lowercase();
    let (wildcard, name) = match host.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, host.as_str()),
    };
    let valid = !name.is_empty()
        && name.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if !valid {
        return Err(format!("{host:?} is not a host name or *.wildcard"));
    }
    Ok(if wildcard {
        HostPattern::Suffix(format!(".{name}"))
    } else {
        HostPattern::Exact(name.to_string())
    })
}

fn check_absolute(path_value: &str, path: &str, problems: &mut Vec<Problem>) {
    if !path_value.starts_with('/') {
        problems.push(Problem::new(path, "must start with '/'"));
    }
}

/// Routes in precedence order; `T` is whatever the caller attaches to a route.
pub struct Router<T> {
    routes: Vec<(Matcher, T)>,
}

impl<T> Router<T> {
    /// Sorts `routes` (given in file order) by the precedence rule.
    pub fn new(routes: Vec<(Matcher, T)>) -> Self {
        let mut indexed: Vec<_> = routes.into_iter().enumerate().collect();
        indexed.sort_by_key(|(index, (matcher, _))| (Reverse(matcher.specificity()), *index));
        Self {
            routes: indexed.into_iter().map(|(_, route)| route).collect(),
        }
    }

    /// The most specific route matching the request, with its matcher.
    pub fn find(&self, req: &RequestHeader) -> Option<(&Matcher, &T)> {
        let host = request_host(req);
        let path = req.uri.path();
        self.routes
            .iter()
            .find(|(matcher, _)| matcher.matches(req, host, path))
            .map(|(matcher, route)| (matcher, route))
    }

    /// The routes, in precedence order.
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.routes.iter().map(|(_, route)| route)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matcher(yaml: &str) -> Matcher {
        Matcher::compile(
            &serde_yaml::from_str(yaml).expect("yaml"),
            "routes[0].match",
        )
        .expect("valid")
    }

    fn request(method: &str, host: &str, path: &str) -> RequestHeader {
        crate::model::request::testing::request_to(method, path, &[("Host", host)])
    }

    fn router(routes: &[(&'static str, &str)]) -> Router<&'static str> {
        Router::new(
            routes
                .iter()
                .map(|(name, yaml)| (matcher(yaml), *name))
                .collect(),
        )
    }

    fn route_of(router: &Router<&'static str>, req: &RequestHeader) -> Option<&'static str> {
        router.find(req).map(|(_, name)| *name)
    }

    #[test]
    fn prefixes_match_on_segment_boundaries() {
        let m = matcher("{path_prefix: /api}");
        for (path, expected) in [
            ("/api", true),
            ("/api/x", true),
            ("/apix", false),
            ("/", false),
        ] {
            let req = request("GET", "h", path);
            assert_eq!(m.matches(&req, "h", req.uri.path()), expected, "{path}");
        }
        let req = request("GET", "h", "/api?x=1");
        assert!(m.matches(&req, "h", req.uri.path()));
    }

    #[test]
    fn most_specific_route_wins() {
        let router = router(&[
            ("catch-all", "{path_prefix: /}"),
            ("short", "{path_prefix: /api}"),
            ("long", "{path_prefix: /api/v1}"),
            ("regex", "{path_regex: '/api/v1/[0-9]+'}"),
            ("exact", "{path: /api/v1/42}"),
            ("get-only", "{path_prefix: /api, methods: [GET]}"),
            ("host", "{hosts: [api.example.com], path_prefix: /}"),
            ("wildcard", "{hosts: ['*.example.com'], path_prefix: /}"),
        ]);
        let find = |method, host, path| route_of(&router, &request(method, host, path));
        assert_eq!(find("GET", "other", "/x"), Some("catch-all"));
        assert_eq!(find("POST", "other", "/api/x"), Some("short"));
        assert_eq!(find("GET", "other", "/api/x"), Some("get-only"));
        assert_eq!(find("GET", "other", "/api/v1/x"), Some("long"));
        assert_eq!(find("GET", "other", "/api/v1/7"), Some("regex"));
        assert_eq!(find("GET", "other", "/api/v1/42"), Some("exact"));
        assert_eq!(
            find("GET", "api.example.com:8080", "/api/v1/42"),
            Some("host")
        );
        assert_eq!(find("GET", "www.EXAMPLE.com", "/"), Some("wildcard"));
        assert_eq!(find("GET", "example.com", "/"), Some("catch-all"));
    }

    #[test]
    fn ties_go_to_the_earlier_route() {
        let router = router(&[
            ("first", "{path_prefix: /a}"),
            ("second", "{path_prefix: /a}"),
        ]);
        assert_eq!(route_of(&router, &request("GET", "h", "/a")), Some("first"));
    }

    #[test]
    fn header_conditions_must_all_match() {
        let router = router(&[("v1", "{path_prefix: /, headers: {X-Api-Version: '1'}}")]);
        let mut req = request("GET", "h", "/");
        assert_eq!(route_of(&router, &req), None);
        req.insert_header("X-Api-Version", "1").expect("header");
        assert_eq!(route_of(&router, &req), Some("v1"));
    }

    #[test]
    fn invalid_conditions_are_reported_with_their_paths() {
        let config: MatchConfig =
            serde_yaml::from_str("{path_regex: '(', methods: ['G E T'], hosts: ['a..b']}")
                .expect("yaml");
        let problems = Matcher::compile(&config, "routes[2].match").expect_err("invalid");
        let paths: Vec<_> = problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "routes[2].match.hosts[0]",
                "routes[2].match.path_regex",
                "routes[2].match.methods[0]"
            ]
        );
    }
}
