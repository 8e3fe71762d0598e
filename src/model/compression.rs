//! Response compression: which responses Pingora's compression module (gzip and zstd,
//! chosen by the client's Accept-Encoding) may encode.
//!
//! Brotli is refused: Pingora 0.9.1's brotli encoder flushes but never finishes its
//! stream, so every `br` body lacks its final meta-block. Lenient decoders (curl) accept
//! that; strict ones (the `brotli` crate, some browsers) fail the whole response.
//!
//! Pingora installs the module on every proxy service, disabled. Each request enables it
//! before the module reads Accept-Encoding ([`prepare`]), turns it off again unless its
//! route has a compression policy ([`start`]), and each response turns it off when its
//! type or size is not worth compressing ([`filter_response`]).

use crate::config::{CompressionConfig, Problem};
use pingora::modules::http::compression::ResponseCompression;
use pingora::protocols::http::compression::Algorithm;
use pingora::proxy::Session;
use pingora_http::ResponseHeader;

/// The level the module reads Accept-Encoding with; every request then sets its own.
const MODULE_LEVEL: u32 = 6;

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
    pub fn compile(
        config: &CompressionConfig,
        path: &str,
        problems: &mut Vec<Problem>,
    ) -> Option<Self> {
        if !config.enabled {
            return None;
        }
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
                     unterminated (see README); use gzip and zstd",
                )),
                other => problems.push(Problem::new(at, format!("{other:?} is not gzip or zstd"))),
            }
        }
        let level = |on: bool, max: u32| if on { config.level.min(max) } else { 0 };
        Some(Self {
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
        })
    }

    fn compressible(&self, resp: &ResponseHeader) -> bool {
        let header = |name| {
            resp.headers
                .get(name)
                .and_then(|value: &http::HeaderValue| value.to_str().ok())
        };
        let too_small = header(http::header::CONTENT_LENGTH)
            .and_then(|length| length.trim().parse::<u64>().ok())
            .is_some_and(|length| length < self.min_size);
        if too_small {
            return false;
        }
        let Some(content_type) = header(http::header::CONTENT_TYPE) else {
            return false;
        };
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
}

/// Before the request's modules run: enabled, so the module records Accept-Encoding
/// (it ignores the header while disabled).
pub fn prepare(session: &mut Session) {
    if let Some(module) = session
        .downstream_modules_ctx
        .get_mut::<ResponseCompression>()
    {
        module.adjust_level(MODULE_LEVEL);
    }
}

/// Request phase: compression on with `policy`'s levels, or off.
pub fn start(session: &mut Session, policy: Option<&CompressionPolicy>) {
    let Some(module) = session
        .downstream_modules_ctx
        .get_mut::<ResponseCompression>()
    else {
        return;
    };
    match policy {
        Some(policy) => {
            for (algorithm, level) in policy.levels {
                module.adjust_algorithm_level(algorithm, level);
            }
        }
        None => module.adjust_level(0),
    }
}

/// Response phase: off for a response `policy` does not want compressed.
pub fn filter_response(
    session: &mut Session,
    policy: Option<&CompressionPolicy>,
    resp: &ResponseHeader,
) {
    if policy.is_some_and(|policy| !policy.compressible(resp)) {
        if let Some(module) = session
            .downstream_modules_ctx
            .get_mut::<ResponseCompression>()
        {
            module.adjust_level(0);
        }
    }
}
