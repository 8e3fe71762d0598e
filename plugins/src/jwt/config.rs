//! `plugins.jwt` as written in the configuration, and its checks.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::Arc;

use http::HeaderName;
use jsonwebtoken::Algorithm;
use serde::Deserialize;

use super::fetch::RemoteJwks;
use super::keys::KeySet;
use crate::units::{self, Duration};

/// How often a `jwks_url` is fetched when `jwks_refresh` is not set.
const DEFAULT_REFRESH: std::time::Duration = std::time::Duration::from_secs(300);
/// The most clock skew `leeway` may allow.
const MOST_LEEWAY: std::time::Duration = std::time::Duration::from_secs(86_400);
use crate::{PluginEnv, Problem};

/// The shortest HMAC secret accepted: RFC 7518 §3.2 asks for at least the hash size.
const MIN_SECRET_BYTES: usize = 32;

/// `plugins.jwt`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtConfig {
    /// A JWKS document on disk, read at each configuration load.
    pub jwks_file: Option<String>,
    /// A JWKS URL, fetched in the background.
    pub jwks_url: Option<String>,
    /// How often `jwks_url` is fetched again (default 5m).
    pub jwks_refresh: Option<Duration>,
    /// An HMAC secret (HS256/384/512), at least 32 bytes; usually `${ENV_NAME}`.
    pub secret: Option<String>,
    /// Accepted `alg` values. Default: `[HS256]` with `secret`, else every asymmetric
    /// algorithm (RS*, PS*, ES256, ES384, EdDSA), each still bound to its key's type.
    #[serde(default)]
    pub algorithms: Vec<String>,
    /// Required `iss`.
    pub issuer: Option<String>,
    /// Required `aud` (one value, or a list of which one must match).
    pub audience: Option<Audience>,
    /// Clock skew allowed on `exp` and `nbf` (default 0s).
    pub leeway: Option<Duration>,
    /// Scopes the token must grant (`scope` or `scp` claim).
    #[serde(default)]
    pub required_scopes: Vec<String>,
    /// Claims sent upstream as headers; inbound copies of these headers are always removed.
    #[serde(default)]
    pub claims_to_headers: BTreeMap<String, String>,
    /// Also read the token from this cookie (after `Authorization: Bearer`).
    pub cookie: Option<String>,
    /// Also read the token from this query parameter (after the header and the cookie).
    pub query: Option<String>,
}

/// `jwt.audience`: one value or a list.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Audience {
    /// One accepted audience.
    One(String),
    /// Several accepted audiences.
    Many(Vec<String>),
}

/// Where a `jwt` plugin's keys come from.
pub enum KeySource {
    /// A secret or a JWKS file: loaded with the configuration.
    Loaded(Arc<KeySet>),
    /// A JWKS URL, kept fresh by a background fetcher shared across reloads.
    Remote(Arc<RemoteJwks>),
}

/// Headers `claims_to_headers` may not write.
const RESERVED_HEADERS: [&str; 6] = [
    "x-consumer-id",
    "host",
    "authorization",
    "connection",
    "content-length",
    "transfer-encoding",
];

/// Every algorithm a published (asymmetric) key can verify.
const ASYMMETRIC: [Algorithm; 9] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

impl JwtConfig {
    /// The clock skew allowed on `exp` and `nbf`, in seconds (at most a day).
    pub fn leeway(&self) -> Result<u64, Problem> {
        let Some(leeway) = self.leeway else {
            return Ok(0);
        };
        let leeway = leeway.within("leeway", std::time::Duration::ZERO, MOST_LEEWAY)?;
        Ok(leeway.as_secs())
    }

    /// The accepted algorithms, checked against the key source.
    pub fn algorithms(&self) -> Result<Vec<Algorithm>, Problem> {
        if self.algorithms.is_empty() {
            return Ok(if self.secret.is_some() {
                vec![Algorithm::HS256]
            } else {
                ASYMMETRIC.to_vec()
            });
        }
        let mut algorithms = Vec::new();
        for (i, name) in self.algorithms.iter().enumerate() {
            let alg = Algorithm::from_str(name).map_err(|_| {
                Problem::new(format!("algorithms[{i}]"),
                    format!("{name:?} is not a supported algorithm (HS256/384/512, RS256/384/512, PS256/384/512, ES256/384, EdDSA)"),
                )
            })?;
            let hmac = matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512);
            if hmac != self.secret.is_some() {
                return Err(Problem::new(
                    format!("algorithms[{i}]"),
                    if hmac {
                        "HS algorithms need secret:; JWKS keys are public keys"
                    } else {
                        "with secret: only HS256/384/512 can be verified"
                    },
                ));
            }
            algorithms.push(alg);
        }
        Ok(algorithms)
    }

    /// Loads the keys (file, secret) or starts (or takes over) the fetcher of the URL.
    pub fn key_source(&self, env: &PluginEnv) -> Result<KeySource, Problem> {
        match (&self.secret, &self.jwks_file, &self.jwks_url) {
            (Some(secret), None, None) => {
                if secret.len() < MIN_SECRET_BYTES {
                    return Err(Problem::new(
                        "secret",
                        format!("must be at least {MIN_SECRET_BYTES} bytes"),
                    ));
                }
                Ok(KeySource::Loaded(Arc::new(KeySet::secret(
                    secret.as_bytes(),
                ))))
            }
            (None, Some(file), None) => {
                let text = std::fs::read(file)
                    .map_err(|e| Problem::new("jwks_file", format!("cannot read {file}: {e}")))?;
                let (keys, skipped) = KeySet::from_jwks(&text)
                    .map_err(|e| Problem::new("jwks_file", format!("{file}: {e}")))?;
                if !skipped.is_empty() {
                    log::warn!("jwt: {file}: skipped {}", skipped.join("; "));
                }
                Ok(KeySource::Loaded(Arc::new(keys)))
            }
            (None, None, Some(url)) => {
                if !(url.starts_with("https://") || url.starts_with("http://")) {
                    return Err(Problem::new(
                        "jwks_url",
                        "must be an http:// or https:// URL",
                    ));
                }
                let refresh = self.jwks_refresh.map_or(Ok(DEFAULT_REFRESH), |refresh| {
                    let second = std::time::Duration::from_secs(1);
                    refresh.within("jwks_refresh", second, units::LONGEST)
                })?;
                // The fetcher (and its cache) survives reloads that keep URL and period.
                let key = format!("{url} every {}ms", refresh.as_millis());
                Ok(KeySource::Remote(
                    env.retained.get_or_insert_with(&key, || {
                        RemoteJwks::start(url, refresh, env.background)
                    }),
                ))
            }
            _ => Err(Problem::new(
                "",
                "set exactly one of jwks_file, jwks_url and secret",
            )),
        }
    }

    /// The accepted audiences.
    pub fn audiences(&self) -> Vec<String> {
        match &self.audience {
            None => Vec::new(),
            Some(Audience::One(one)) => vec![one.clone()],
            Some(Audience::Many(many)) => many.clone(),
        }
    }

    /// `claims_to_headers` with checked header names.
    pub fn claim_headers(&self) -> Result<Vec<(String, HeaderName)>, Problem> {
        self.claims_to_headers
            .iter()
            .map(|(claim, header)| {
                let path = format!("claims_to_headers.{claim}");
                let name = HeaderName::from_bytes(header.as_bytes()).map_err(|_| {
                    Problem::new(&path, format!("{header:?} is not a valid header name"))
                })?;
                // Headers the gateway itself vouches for or routes on are not claim slots.
                if RESERVED_HEADERS.contains(&name.as_str()) {
                    return Err(Problem::new(
                        &path,
                        format!("{header} is set by the gateway"),
                    ));
                }
                Ok((claim.clone(), name))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(yaml: &str) -> JwtConfig {
        serde_yaml::from_str(yaml).expect("parses")
    }

    /// The first problem of a `jwt` entry, as `path: message`.
    fn first_problem(yaml: &str) -> String {
        let problems = crate::config::section_problems(&format!("jwt: {yaml}"));
        problems.first().expect("a problem").to_string()
    }

    #[test]
    fn key_sources_and_algorithms_must_agree() {
        assert!(
            first_problem("{ jwks_url: http://x/j, algorithms: [HS256] }")
                .starts_with("jwt.algorithms[0]: HS algorithms need secret")
        );
        assert!(
            first_problem("{ secret: 0123456789abcdef0123456789abcdef, algorithms: [RS256] }")
                .starts_with("jwt.algorithms[0]: with secret")
        );
        assert!(first_problem("{ secret: short }").starts_with("jwt.secret: must be at least 32"));
        assert!(
            first_problem("{ algorithms: [none], jwks_url: http://x/j }")
                .starts_with("jwt.algorithms[0]: \"none\" is not a supported algorithm")
        );
        assert_eq!(
            first_problem("{ secret: 0123456789abcdef0123456789abcdef, jwks_url: http://x/j }"),
            "jwt: set exactly one of jwks_file, jwks_url and secret"
        );
        assert!(first_problem("{ jwks_url: ftp://x/j }").starts_with("jwt.jwks_url"));
    }

    #[test]
    fn claims_cannot_write_the_gateways_own_headers() {
        assert_eq!(
            first_problem("{ jwks_url: http://x/j, claims_to_headers: { sub: X-Consumer-Id } }"),
            "jwt.claims_to_headers.sub: X-Consumer-Id is set by the gateway"
        );
    }

    #[test]
    fn defaults_follow_the_key_source() {
        assert_eq!(
            config("{ secret: s }").algorithms().expect("valid"),
            [Algorithm::HS256]
        );
        assert_eq!(
            config("{ jwks_url: http://x/j }")
                .algorithms()
                .expect("valid")
                .len(),
            ASYMMETRIC.len()
        );
    }
}
