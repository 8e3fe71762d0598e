//! A compression policy, compiled: the encoder levels, and which responses (by type and
//! size) are worth compressing. The proxy applies it to Pingora's compression module
//! (`proxy/compression.rs`).
//!
//! Brotli is refused: Pingora 0.9.1's brotli encoder flushes but never finishes its
//! stream, so every `br` body lacks its final meta-block. Lenient decoders (curl) accept
//! that; strict ones (the `brotli` crate, some browsers) fail the whole response.

use pingora::protocols::http::compression::Algorithm;
use pingora_http::ResponseHeader;

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
                     unterminated (see README); use gzip and zstd",
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
    /// than the minimum size.
    pub fn compressible(&self, resp: &ResponseHeader) -> bool {
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
