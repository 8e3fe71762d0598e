//! `compression:` (global) and `routes[].compression` — which responses are compressed.

use portcullis_plugins::units::Size;
use serde::Deserialize;

use super::default_true;

/// `compression:` (global) or `routes[].compression` as written in the configuration.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompressionConfig {
    /// Compress at all (a route may turn the global policy off).
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Encoder level: gzip 1–9, brotli 0–11, zstd 1–22 (one value for all three).
    #[serde(default = "CompressionConfig::default_level")]
    pub level: u32,
    /// Responses with a smaller Content-Length are sent as they are.
    #[serde(default = "CompressionConfig::default_min_size")]
    pub min_size: Size,
    /// Content types compressed: exact (`application/json`) or a prefix ending in `/`
    /// or `*` (`text/`, `text/*`).
    #[serde(default = "CompressionConfig::default_types")]
    pub types: Vec<String>,
    /// Encodings offered (`gzip`, `zstd`), in any order (the client's preference decides).
    #[serde(default = "CompressionConfig::default_algorithms")]
    pub algorithms: Vec<String>,
}

impl CompressionConfig {
    fn default_level() -> u32 {
        6
    }
    fn default_min_size() -> Size {
        Size(1024)
    }
    fn default_types() -> Vec<String> {
        [
            "text/",
            "application/json",
            "application/javascript",
            "application/xml",
            "application/problem+json",
            "image/svg+xml",
        ]
        .map(String::from)
        .to_vec()
    }
    fn default_algorithms() -> Vec<String> {
        ["gzip", "zstd"].map(String::from).to_vec()
    }
}
