//! Facts about a request that routing, caching and logging all read the same way, and the
//! limits every request head is held to before routing.

use pingora_http::RequestHeader;
use portcullis_plugins::units::within;

use crate::config::{Problem, ServerSection};

/// The bounds of a request head and the path rule (`server.max_request_target`,
/// `max_header_count`, `max_header_bytes`, `merge_slashes`), compiled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestLimits {
    /// Longest request target, in bytes.
    pub max_target: usize,
    /// Most header fields.
    pub max_header_count: usize,
    /// Largest header block (sum of `name: value` lines), in bytes.
    pub max_header_bytes: u64,
    /// Merge repeated slashes in paths.
    pub merge_slashes: bool,
}

/// The most header fields Pingora's HTTP/1 parser reads; a request with more is refused
/// before any phase runs.
pub const PARSER_MAX_HEADERS: usize = 256;
/// The largest request head Pingora's HTTP/1 parser reads.
pub const PARSER_MAX_HEAD: u64 = 1024 * 1024 - 1;

impl Default for RequestLimits {
    fn default() -> Self {
        Self {
            max_target: 8 * 1024,
            max_header_count: 100,
            max_header_bytes: 64 * 1024,
            merge_slashes: true,
        }
    }
}

impl RequestLimits {
    /// Compiles the `server` fields, checking their ranges.
    pub fn compile(server: &ServerSection) -> Result<Self, Vec<Problem>> {
        let defaults = Self::default();
        let mut problems = Vec::new();
        // Past Pingora's parser limits a value would never apply.
        let mut bounded = |field: &str, value: u64, max: u64| {
            within(&format!("server.{field}"), value, 1, max).unwrap_or_else(|problem| {
                problems.push(problem);
                value
            })
        };
        let max_target = server
            .max_request_target
            .map_or(defaults.max_target as u64, |size| {
                bounded("max_request_target", size.0, PARSER_MAX_HEAD)
            });
        let max_header_count = server
            .max_header_count
            .map_or(defaults.max_header_count, |count| {
                bounded("max_header_count", count as u64, PARSER_MAX_HEADERS as u64) as usize
            });
        let max_header_bytes = server
            .max_header_bytes
            .map_or(defaults.max_header_bytes, |size| {
                bounded("max_header_bytes", size.0, PARSER_MAX_HEAD)
            });
        let limits = Self {
            max_target: usize::try_from(max_target).unwrap_or(usize::MAX),
            max_header_count,
            max_header_bytes,
            merge_slashes: server.merge_slashes.unwrap_or(true),
        };
        crate::config::verdict(limits, problems)
    }
}

/// The request's host without port (and without the trailing dot of a fully qualified
/// name, so `api.example.com.` routes as `api.example.com`): the URI authority (HTTP/2,
/// absolute-form) or `Host`.
pub fn request_host(req: &RequestHeader) -> &str {
    let raw = req
        .uri
        .host()
        .or_else(|| {
            req.headers
                .get(http::header::HOST)
                .and_then(|v| v.to_str().ok())
        })
        .unwrap_or("");
    let host = strip_port(raw);
    host.strip_suffix('.').unwrap_or(host)
}

/// The port the request names in its authority or `Host`, if it names one.
pub fn request_port(req: &RequestHeader) -> Option<u16> {
    if let Some(port) = req.uri.port_u16() {
        return Some(port);
    }
    let host = req.headers.get(http::header::HOST)?.to_str().ok()?;
    let after_literal = host.rfind(']').map_or(host, |end| &host[end..]);
    after_literal.rsplit_once(':')?.1.parse().ok()
}

fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        // IPv6 literal: keep the brackets, drop a trailing :port.
        return host.find(']').map_or(host, |end| &host[..=end]);
    }
    host.rsplit_once(':')
        .filter(|(_, port)| port.bytes().all(|b| b.is_ascii_digit()))
        .map_or(host, |(name, _)| name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_past_the_parser_are_problems() {
        let server: ServerSection = serde_yaml::from_str(
            "{max_request_target: 2MiB, max_header_count: 1000, max_header_bytes: 0}",
        )
        .expect("yaml");
        let problems = RequestLimits::compile(&server).expect_err("out of range");
        let paths: Vec<_> = problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "server.max_request_target",
                "server.max_header_count",
                "server.max_header_bytes"
            ]
        );
        assert_eq!(
            RequestLimits::compile(&ServerSection::default()),
            Ok(RequestLimits::default())
        );
    }
}

/// Requests for unit tests.
#[cfg(test)]
pub mod testing {
    use pingora_http::RequestHeader;

    /// `GET /` with `headers`, appended in order (a name may repeat).
    pub fn request(headers: &[(&str, &str)]) -> RequestHeader {
        request_to("GET", "/", headers)
    }

    /// `method path` with `headers`, appended in order (a name may repeat).
    pub fn request_to(method: &str, path: &str, headers: &[(&str, &str)]) -> RequestHeader {
        let mut req = RequestHeader::build(method, path.as_bytes(), None).expect("request");
        for (name, value) in headers {
            req.append_header(name.to_string(), *value).expect("header");
        }
        req
    }
}
