//! Facts about a request that routing, caching and logging all read the same way.

use pingora_http::RequestHeader;

/// The request's host without port: the URI authority (HTTP/2, absolute-form) or `Host`.
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
    strip_port(raw)
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
