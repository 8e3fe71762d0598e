//! A compression policy, compiled: the encoder levels, which responses (by type and
//! size) are worth compressing, and which coding a request's Accept-Encoding gets
//! ([`CompressionPolicy::negotiate`], q-values honoured). The proxy applies it to
//! Pingora's compression contexts (`proxy/compression.rs`), and gives the answers they
//! leave alone (HEAD, 304, 206) the header fields the full answer has
//! ([`CompressionPolicy::derive`]).
//!
//! Brotli is refused: Pingora 0.9.1's brotli encoder flushes but never finishes its
//! stream, so every `br` body lacks its final meta-block. Lenient decoders (curl) accept
//! that; strict ones (the `brotli` crate, some browsers) fail the whole response.

use http::header::{ACCEPT_RANGES, CONTENT_ENCODING, CONTENT_LENGTH, ETAG, VARY};
use http::{HeaderValue, StatusCode};
use pingora::protocols::http::compression::Algorithm;
use pingora_http::{RequestHeader, ResponseHeader};

use crate::config::{CompressionConfig, Problem};

/// A compiled compression policy.
#[derive(Debug)]
pub struct CompressionPolicy {
    levels: [(Algorithm, u32); 3],
    min_size: u64,
    /// Lower-cased; a trailing `/` means "any subtype".
    types: Vec<String>,
}

impl CompressionPolicy {
    /// Checks `config` (at `path`); `None` when it turns compression off.
    pub fn compile(config: &CompressionConfig, path: &str) -> Result<Option<Self>, Vec<Problem>> {
        if !config.enabled {
            return Ok(None);
        }
        let mut problems = Vec::new();
        if !(1..=11).contains(&config.level) {
            problems.push(Problem::new(
                format!("{path}.level"),
                "use 1-11 (valid for gzip up to 9, brotli and zstd)",
            ));
        }
        let mut enabled = [false; 3];
        for (i, name) in config.algorithms.iter().enumerate() {
            let at = format!("{path}.algorithms[{i}]");
            match name.as_str() {
                "gzip" => enabled[0] = true,
                "zstd" => enabled[2] = true,
                "br" => problems.push(Problem::new(
                    at,
                    "brotli is not offered: Pingora 0.9.1's encoder leaves br streams \
                     unterminated (see docs/http.md); use gzip and zstd",
                )),
                other => problems.push(Problem::new(at, format!("{other:?} is not gzip or zstd"))),
            }
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        let level = |on: bool, max: u32| if on { config.level.min(max) } else { 0 };
        Ok(Some(Self {
            levels: [
                (Algorithm::Gzip, level(enabled[0], 9)),
                (Algorithm::Brotli, level(enabled[1], 11)),
                (Algorithm::Zstd, level(enabled[2], 22)),
            ],
            min_size: config.min_size.0,
            types: config
                .types
                .iter()
                .map(|t| t.trim_end_matches('*').to_ascii_lowercase())
                .collect(),
        }))
    }

    /// The encoder level of each algorithm (0: not offered).
    pub fn levels(&self) -> [(Algorithm, u32); 3] {
        self.levels
    }

    /// Whether `resp` is worth compressing: a listed type, and not known to be smaller
    /// than the minimum size. A 206 never is: its Content-Range counts identity bytes.
    pub fn compressible(&self, resp: &ResponseHeader) -> bool {
        resp.status != StatusCode::PARTIAL_CONTENT
            && self.representation_compressible(
                header_text(resp, http::header::CONTENT_TYPE),
                header_text(resp, CONTENT_LENGTH).and_then(|length| length.trim().parse().ok()),
            )
    }

    /// Whether a representation of this type and length is compressed (what the module
    /// would do with its full answer): a listed type that Pingora's encoder also takes,
    /// not known to be smaller than the minimum size (nor than Pingora's own).
    fn representation_compressible(&self, content_type: Option<&str>, length: Option<u64>) -> bool {
        if length.is_some_and(|length| length < self.min_size.max(PINGORA_MIN_SIZE)) {
            return false;
        }
        let Some(content_type) = content_type else {
            return false;
        };
        if !pingora_compresses(content_type) {
            return false;
        }
        let essence = content_type
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        self.types.iter().any(|allowed| {
            if allowed.ends_with('/') {
                essence.starts_with(allowed.as_str())
            } else {
                essence == *allowed
            }
        })
    }

    /// The encoding Pingora's module would pick for a request's Accept-Encoding: the first
    /// coding it knows, in the client's order (q-values ignored), when the policy offers
    /// it; none when a list item does not parse.
    pub fn module_choice(&self, req: &RequestHeader) -> Option<Algorithm> {
        let accept = req
            .headers
            .get(http::header::ACCEPT_ENCODING)?
            .to_str()
            .ok()?;
        let mut first = None;
        for item in accept.split(',') {
            let coding = item.split(';').next().unwrap_or_default().trim();
            if coding.is_empty() || !is_token(coding) {
                return None;
            }
            let algorithm = Algorithm::from(coding);
            if first.is_none() && algorithm != Algorithm::Other {
                first = Some(algorithm);
            }
        }
        first.filter(|algorithm| self.level(*algorithm) > 0)
    }

    /// The encoder level of `algorithm` (0: not offered).
    pub fn level(&self, algorithm: Algorithm) -> u32 {
        self.levels
            .iter()
            .find(|(offered, _)| *offered == algorithm)
            .map_or(0, |(_, level)| *level)
    }

    /// The coding this route answers a request with (RFC 9110 §12.5.3): of the codings
    /// the policy offers, the one the client's Accept-Encoding weighs highest (the
    /// client's order breaks ties); `*` stands for every offered coding the client does
    /// not name. `q=0` refuses a coding; items that do not parse are ignored. `None`:
    /// identity (also when no Accept-Encoding was sent).
    pub fn negotiate(&self, req: &RequestHeader) -> Option<Algorithm> {
        // (weight, position in the client's list) per offered coding, and for `*`.
        let mut named = [None::<(u16, usize)>; 3];
        let mut any = None::<(u16, usize)>;
        let mut position = 0;
        for value in req.headers.get_all(http::header::ACCEPT_ENCODING) {
            for item in value.as_bytes().split(|b| *b == b',') {
                let mut parts = item.split(|b| *b == b';');
                let coding = parts.next().unwrap_or_default().trim_ascii();
                let Some(weight) = weight(parts) else {
                    continue;
                };
                let slot = if coding == b"*" {
                    &mut any
                } else {
                    match std::str::from_utf8(coding).map(Algorithm::from) {
                        Ok(Algorithm::Gzip) => &mut named[0],
                        Ok(Algorithm::Zstd) => &mut named[2],
                        _ => continue,
                    }
                };
                // A repeated coding keeps its first weight.
                slot.get_or_insert((weight, position));
                position += 1;
            }
        }
        let mut best: Option<(Algorithm, (u16, usize))> = None;
        for (i, (algorithm, level)) in self.levels.iter().enumerate() {
            let Some((weight, position)) = named[i].or(any) else {
                continue;
            };
            let better = best.is_none_or(|(_, (top, first))| {
                weight > top || (weight == top && position < first)
            });
            if *level > 0 && weight > 0 && better {
                best = Some((*algorithm, (weight, position)));
            }
        }
        best.map(|(algorithm, _)| algorithm)
    }

    /// Gives a derived answer (a HEAD's, a 304, a 206) the fields the full 200 of the
    /// same request has (RFC 9110 §9.3.2, §15.4.5, §15.3.7), that 200 being compressed
    /// with `encoding` when it is compressible: `Vary: accept-encoding` when the
    /// representation is compressible, and, when this request's 200 would be
    /// compressed, its weak ETag (and for HEAD its Content-Encoding, without
    /// Content-Length or Accept-Ranges). A 206 keeps its ETag: its bytes are the identity
    /// representation's. `stored` is the cached 200 a 304 or 206 was made from, if any;
    /// a 304 without it (passed through from the upstream, which leaves Content-Type out)
    /// is taken as compressible, and its ETag weakened when the client's If-None-Match
    /// holds the weak form (which only a compressed 200 gave it).
    pub fn derive(
        &self,
        encoding: Option<Algorithm>,
        req: &RequestHeader,
        resp: &mut ResponseHeader,
        stored: Option<&ResponseHeader>,
    ) {
        let representation = stored.unwrap_or(resp);
        let content_type = header_text(representation, http::header::CONTENT_TYPE);
        let known = content_type.is_some();
        let length = if stored.is_some() {
            header_text(representation, CONTENT_LENGTH).and_then(|l| l.trim().parse().ok())
        } else {
            complete_length(resp)
        };
        if known && !self.representation_compressible(content_type, length) {
            return;
        }
        add_vary_accept_encoding(resp);
        let Some(algorithm) = encoding else {
            return;
        };
        if resp.status == StatusCode::NOT_MODIFIED {
            if known || holds_weak_form(req, resp) {
                weaken_etag(resp);
            }
        } else if resp.status != StatusCode::PARTIAL_CONTENT {
            let _ = resp.insert_header(CONTENT_ENCODING, algorithm.as_str());
            resp.remove_header(&CONTENT_LENGTH);
            resp.remove_header(&ACCEPT_RANGES);
            weaken_etag(resp);
        }
    }
}

/// Pingora's compression module leaves bodies shorter than this alone.
const PINGORA_MIN_SIZE: u64 = 20;

/// Whether Pingora 0.9.1's module compresses this Content-Type at all (its `MIME_CHECK`:
/// text, application, font, a few image types and binary/octet-stream; nothing with
/// "zip" in it), so that the policy never promises what the module refuses.
fn pingora_compresses(content_type: &str) -> bool {
    const PREFIXES: [&str; 7] = [
        "text/",
        "application/",
        "font/",
        "image/x-icon",
        "image/svg+xml",
        "image/nd.microsoft.icon",
        "binary/octet-stream",
    ];
    !content_type.contains("zip") && PREFIXES.iter().any(|p| content_type.starts_with(p))
}

fn is_token(coding: &str) -> bool {
    coding.bytes().enumerate().all(|(i, b)| {
        (i > 0 || b.is_ascii_alphabetic() || b == b'*')
            && (b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~:/".contains(&b))
    })
}

/// The weight (`q`, in thousandths) of an Accept-Encoding item from its parameters; 1000
/// without one; `None` when a `q` does not parse (RFC 9110 §12.4.2: `0` to `1` with up
/// to three decimals).
fn weight<'a>(parameters: impl Iterator<Item = &'a [u8]>) -> Option<u16> {
    for parameter in parameters {
        let parameter = parameter.trim_ascii();
        let Some(value) = parameter
            .strip_prefix(b"q=")
            .or_else(|| parameter.strip_prefix(b"Q="))
        else {
            continue;
        };
        let (whole, fraction) = match value.iter().position(|b| *b == b'.') {
            Some(dot) => (&value[..dot], &value[dot + 1..]),
            None => (value, &b""[..]),
        };
        if !matches!(whole, b"0" | b"1")
            || fraction.len() > 3
            || !fraction.iter().all(u8::is_ascii_digit)
        {
            return None;
        }
        let mut thousandths = u16::from(whole[0] - b'0') * 1000;
        for (digit, scale) in fraction.iter().zip([100, 10, 1]) {
            thousandths += u16::from(digit - b'0') * scale;
        }
        return (thousandths <= 1000).then_some(thousandths);
    }
    Some(1000)
}

fn header_text(resp: &ResponseHeader, name: http::HeaderName) -> Option<&str> {
    resp.headers.get(name).and_then(|value| value.to_str().ok())
}

/// The length of the whole representation a 206 is part of (`Content-Range: bytes
/// 0-99/2240` → 2240); for other answers their Content-Length.
fn complete_length(resp: &ResponseHeader) -> Option<u64> {
    if resp.status == StatusCode::PARTIAL_CONTENT {
        let range = header_text(resp, http::header::CONTENT_RANGE)?;
        return range.rsplit_once('/')?.1.trim().parse().ok();
    }
    header_text(resp, CONTENT_LENGTH)?.trim().parse().ok()
}

fn add_vary_accept_encoding(resp: &mut ResponseHeader) {
    let listed = resp.headers.get_all(VARY).iter().any(|value| {
        value
            .as_bytes()
            .split(|b| *b == b',')
            .map(<[u8]>::trim_ascii)
            .any(|name| name == b"*" || name.eq_ignore_ascii_case(b"accept-encoding"))
    });
    if !listed {
        let _ = resp.append_header(VARY, "accept-encoding");
    }
}

/// As the module does: a strong ETag gets `W/`, an unquoted (invalid) one goes.
pub fn weaken_etag(resp: &mut ResponseHeader) {
    let Some(etag) = resp.headers.get(ETAG) else {
        return;
    };
    let etag = etag.as_bytes();
    if etag.starts_with(b"W/") {
        return;
    }
    let weak = etag
        .starts_with(b"\"")
        .then(|| HeaderValue::from_bytes(&[b"W/", etag].concat()).ok())
        .flatten();
    match weak {
        Some(weak) => {
            let _ = resp.insert_header(ETAG, weak);
        }
        None => {
            resp.remove_header(&ETAG);
        }
    }
}

/// Whether the request's If-None-Match lists the weak form of the answer's strong ETag.
fn holds_weak_form(req: &RequestHeader, resp: &ResponseHeader) -> bool {
    let Some(etag) = resp.headers.get(ETAG).map(HeaderValue::as_bytes) else {
        return false;
    };
    if etag.starts_with(b"W/") {
        return false;
    }
    req.headers
        .get_all(http::header::IF_NONE_MATCH)
        .iter()
        .flat_map(|value| value.as_bytes().split(|b| *b == b','))
        .map(<[u8]>::trim_ascii)
        .any(|tag| tag.strip_prefix(b"W/") == Some(etag))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::CompressionConfig;

    fn policy(algorithms: &[&str]) -> CompressionPolicy {
        let config: CompressionConfig =
            serde_yaml::from_str(&format!("{{ algorithms: [{}] }}", algorithms.join(", ")))
                .expect("valid compression config");
        CompressionPolicy::compile(&config, "compression")
            .expect("valid policy")
            .expect("enabled")
    }

    fn negotiate(policy: &CompressionPolicy, accept: &[u8]) -> Option<&'static str> {
        let mut req = RequestHeader::build("GET", b"/", None).expect("valid request");
        req.insert_header("accept-encoding", accept)
            .expect("valid header");
        policy.negotiate(&req).map(|algorithm| algorithm.as_str())
    }

    #[test]
    fn negotiation_honours_weights_and_refusals() {
        let both = policy(&["gzip", "zstd"]);
        let gzip_only = policy(&["gzip"]);
        for (accept, want) in [
            (&b"gzip"[..], Some("gzip")),
            (b"gzip, deflate, br", Some("gzip")),
            (b"br, zstd, gzip", Some("zstd")),
            (b"gzip;q=0.5, zstd", Some("zstd")),
            (b"gzip;q=0, zstd;q=0", None),
            (b"gzip;q=0", None),
            (b"*", Some("gzip")),
            (b"*;q=0", None),
            (b"gzip;q=0, *", Some("zstd")),
            (b"identity", None),
            (b"GZIP;Q=1.000", Some("gzip")),
            (b"gzip;q=2, zstd;q=0.x", None),
            (b";;;,,,\"gzip\", g z i p", None),
            (b"", None),
        ] {
            assert_eq!(
                negotiate(&both, accept),
                want,
                "{}",
                String::from_utf8_lossy(accept)
            );
        }
        assert_eq!(negotiate(&gzip_only, b"zstd"), None);
        assert_eq!(negotiate(&gzip_only, b"zstd, *;q=0.1"), Some("gzip"));
        let huge = "x-unknown, ".repeat(800) + "gzip;q=0";
        assert_eq!(negotiate(&both, huge.as_bytes()), None);
    }
}
