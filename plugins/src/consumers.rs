//! `consumers`: who may call the gateway. Compiled once per load into a lookup from an API
//! key's SHA-256 digest to its consumer, from JWT subjects to consumers, and from client
//! certificates (fingerprint or subject) to consumers.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::Problem;

/// One entry of the `consumers:` section as written in the configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsumerConfig {
    /// The consumer's id: sent upstream as `X-Consumer-Id` and logged as `consumer`.
    pub id: String,
    /// API keys of the consumer, only in their `sha256:<hex>` form (`portcullis hash-key`).
    #[serde(default)]
    pub api_keys: Vec<String>,
    /// What the consumer may do; checked against a route's `required_scopes`.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// The consumer's tier, for rate-limit rules keyed on tier.
    pub tier: Option<String>,
    /// JWT subjects (`sub`) that authenticate as this consumer; `*` matches any run of
    /// characters.
    #[serde(default)]
    pub jwt_subjects: Vec<String>,
    /// Client certificates that authenticate as this consumer (`mtls` plugin):
    /// `sha256:<64 hex digits>` (the certificate's fingerprint) or `subject:<RFC 2253
    /// subject>` (`subject:CN=billing,O=Acme`).
    #[serde(default)]
    pub client_certs: Vec<String>,
}

/// A consumer, compiled.
#[derive(Debug)]
pub struct Consumer {
    /// `consumers[].id`.
    pub id: Arc<str>,
    /// `consumers[].scopes`.
    pub scopes: Vec<String>,
    /// `consumers[].tier`.
    pub tier: Option<Arc<str>>,
}

/// The SHA-256 digest of an API key. Equality is constant-time, so a lookup leaks nothing
/// about how much of a stored digest a presented key's digest shares.
#[derive(Clone, Copy)]
struct KeyDigest([u8; 32]);

impl PartialEq for KeyDigest {
    fn eq(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl Eq for KeyDigest {}

impl Hash for KeyDigest {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.hash(state);
    }
}

/// A `jwt_subjects` pattern: literal parts separated by `*`.
#[derive(Debug)]
struct SubjectPattern {
    parts: Vec<String>,
}

impl SubjectPattern {
    fn new(pattern: &str) -> Self {
        Self {
            parts: pattern.split('*').map(str::to_string).collect(),
        }
    }

    fn matches(&self, subject: &str) -> bool {
        let [first, middle @ .., last] = self.parts.as_slice() else {
            // One part: no `*`, an exact subject.
            return self.parts.first().is_some_and(|exact| exact == subject);
        };
        let Some(mut rest) = subject.strip_prefix(first.as_str()) else {
            return false;
        };
        for part in middle {
            match rest.find(part.as_str()) {
                Some(at) => rest = &rest[at + part.len()..],
                None => return false,
            }
        }
        rest.len() >= last.len() && rest.ends_with(last.as_str())
    }
}

/// Every consumer of one configuration, indexed for the request path.
#[derive(Debug, Default)]
pub struct Consumers {
    by_key: HashMap<KeyDigest, Arc<Consumer>>,
    by_subject: HashMap<String, Arc<Consumer>>,
    subject_patterns: Vec<(SubjectPattern, Arc<Consumer>)>,
    by_cert_sha256: HashMap<[u8; 32], Arc<Consumer>>,
    by_cert_subject: HashMap<String, Arc<Consumer>>,
}

impl std::fmt::Debug for KeyDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyDigest(..)")
    }
}

impl Consumers {
    /// Compiles the `consumers:` section; problem paths start with `consumers[i]`.
    pub fn compile(configs: &[ConsumerConfig]) -> Result<Self, Vec<Problem>> {
        let mut consumers = Self::default();
        let mut problems = Vec::new();
        let mut ids = std::collections::HashSet::new();
        for (i, config) in configs.iter().enumerate() {
            let path = format!("consumers[{i}]");
            if !valid_id(&config.id) {
                problems.push(Problem::new(
                    format!("{path}.id"),
                    "ids use letters, digits, '-', '_', '.', '@' and ':' (at most 128)",
                ));
            }
            if !ids.insert(config.id.as_str()) {
                problems.push(Problem::new(
                    format!("{path}.id"),
                    "another consumer has this id",
                ));
            }
            let consumer = Arc::new(Consumer {
                id: config.id.as_str().into(),
                scopes: config.scopes.clone(),
                tier: config.tier.as_deref().map(Into::into),
            });
            for (j, key) in config.api_keys.iter().enumerate() {
                let key_path = format!("{path}.api_keys[{j}]");
                match parse_digest(key) {
                    Some(digest) => {
                        if consumers
                            .by_key
                            .insert(digest, Arc::clone(&consumer))
                            .is_some()
                        {
                            problems.push(Problem::new(
                                key_path,
                                "this key is already given to a consumer",
                            ));
                        }
                    }
                    None => problems.push(Problem::new(
                        key_path,
                        "store keys as sha256:<64 hex digits> (print it with `portcullis hash-key KEY`)",
                    )),
                }
            }
            for (j, subject) in config.jwt_subjects.iter().enumerate() {
                if subject.is_empty() {
                    problems.push(Problem::new(
                        format!("{path}.jwt_subjects[{j}]"),
                        "must not be empty",
                    ));
                } else if subject.contains('*') {
                    consumers
                        .subject_patterns
                        .push((SubjectPattern::new(subject), Arc::clone(&consumer)));
                } else {
                    consumers
                        .by_subject
                        .entry(subject.clone())
                        .or_insert_with(|| Arc::clone(&consumer));
                }
            }
            for (j, cert) in config.client_certs.iter().enumerate() {
                let cert_path = format!("{path}.client_certs[{j}]");
                if let Err(problem) = consumers.add_client_cert(cert, &consumer, &cert_path) {
                    problems.push(problem);
                }
            }
        }
        if problems.is_empty() {
            Ok(consumers)
        } else {
            Err(problems)
        }
    }

    /// The consumer whose API key this is: the key is hashed, then compared in constant
    /// time with the stored digests.
    pub fn by_api_key(&self, key: &[u8]) -> Option<&Arc<Consumer>> {
        self.by_key.get(&KeyDigest(Sha256::digest(key).into()))
    }

    /// The consumer a JWT subject maps to: an exact `jwt_subjects` entry first, else the
    /// first pattern in file order.
    pub fn by_jwt_subject(&self, subject: &str) -> Option<&Arc<Consumer>> {
        self.by_subject.get(subject).or_else(|| {
            self.subject_patterns
                .iter()
                .find(|(pattern, _)| pattern.matches(subject))
                .map(|(_, consumer)| consumer)
        })
    }

    /// The consumer a verified client certificate authenticates as: by its SHA-256
    /// fingerprint first, else by its RFC 2253 subject.
    pub fn by_client_cert(&self, sha256: &[u8; 32], subject: &str) -> Option<&Arc<Consumer>> {
        self.by_cert_sha256
            .get(sha256)
            .or_else(|| self.by_cert_subject.get(subject))
    }

    fn add_client_cert(
        &mut self,
        cert: &str,
        consumer: &Arc<Consumer>,
        path: &str,
    ) -> Result<(), Problem> {
        let taken = if let Some(hex) = cert.strip_prefix("sha256:") {
            let Some(digest) = parse_fingerprint(hex) else {
                return Err(Problem::new(
                    path,
                    "write sha256:<64 hex digits> (`openssl x509 -noout -fingerprint -sha256`)",
                ));
            };
            self.by_cert_sha256
                .insert(digest, Arc::clone(consumer))
                .is_some()
        } else if let Some(subject) = cert.strip_prefix("subject:") {
            if subject.trim().is_empty() {
                return Err(Problem::new(path, "the subject must not be empty"));
            }
            self.by_cert_subject
                .insert(subject.trim().to_string(), Arc::clone(consumer))
                .is_some()
        } else {
            return Err(Problem::new(
                path,
                "write sha256:<fingerprint> or subject:<RFC 2253 subject>",
            ));
        };
        if taken {
            return Err(Problem::new(
                path,
                "this certificate is already given to a consumer",
            ));
        }
        Ok(())
    }

    /// Whether any consumer has an API key.
    pub fn has_api_keys(&self) -> bool {
        !self.by_key.is_empty()
    }
}

/// The `sha256:<hex>` form of an API key, as stored in `consumers[].api_keys`.
pub fn hash_api_key(key: &str) -> String {
    let digest = Sha256::digest(key.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// A certificate fingerprint: 64 hex digits, optionally in pairs separated by `:` as
/// `openssl x509 -fingerprint` prints them, in either case.
fn parse_fingerprint(text: &str) -> Option<[u8; 32]> {
    let hex: String = text.chars().filter(|c| *c != ':').collect();
    parse_digest(&format!("sha256:{}", hex.to_ascii_lowercase())).map(|digest| digest.0)
}

fn parse_digest(stored: &str) -> Option<KeyDigest> {
    let hex = stored.strip_prefix("sha256:")?;
    if hex.len() != 64 {
        return None;
    }
    let mut digest = [0u8; 32];
    for (byte, pair) in digest.iter_mut().zip(hex.as_bytes().chunks(2)) {
        let pair = std::str::from_utf8(pair).ok()?;
        *byte = u8::from_str_radix(pair, 16).ok()?;
    }
    Some(KeyDigest(digest))
}

/// Consumer ids travel in a header and the access log: keep them plain.
fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'@' | b':'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn consumer(id: &str, keys: &[&str], subjects: &[&str]) -> ConsumerConfig {
        ConsumerConfig {
            id: id.into(),
            api_keys: keys.iter().map(|key| hash_api_key(key)).collect(),
            scopes: vec!["orders:read".into()],
            tier: Some("gold".into()),
            jwt_subjects: subjects.iter().map(|s| s.to_string()).collect(),
            client_certs: Vec::new(),
        }
    }

    #[test]
    fn the_spec_example_hash_is_the_sha256_of_test() {
        assert_eq!(
            hash_api_key("test"),
            "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
        );
    }

    #[test]
    fn a_key_finds_its_consumer_and_nothing_else_does() {
        let consumers = Consumers::compile(&[
            consumer("acme", &["k-acme"], &[]),
            consumer("beta", &["k-beta"], &[]),
        ])
        .expect("valid");
        let found = consumers.by_api_key(b"k-acme").expect("acme");
        assert_eq!(&*found.id, "acme");
        assert_eq!(found.tier.as_deref(), Some("gold"));
        assert!(consumers.by_api_key(b"k-acm").is_none());
        assert!(consumers.by_api_key(b"").is_none());
    }

    #[test]
    fn subjects_map_exactly_then_by_pattern_in_file_order() {
        let consumers = Consumers::compile(&[
            consumer("apps", &[], &["app-*"]),
            consumer("special", &[], &["app-special"]),
            consumer("mid", &[], &["a*b*c"]),
        ])
        .expect("valid");
        let id = |sub: &str| consumers.by_jwt_subject(sub).map(|c| c.id.to_string());
        assert_eq!(id("app-special").as_deref(), Some("special"));
        assert_eq!(id("app-42").as_deref(), Some("apps"));
        assert_eq!(id("app-").as_deref(), Some("apps"));
        assert_eq!(id("axxbyyc").as_deref(), Some("mid"));
        assert_eq!(id("abc").as_deref(), Some("mid"));
        assert_eq!(id("ac"), None);
        assert_eq!(id("web-1"), None);
    }

    #[test]
    fn certificates_find_their_consumer_by_fingerprint_then_subject() {
        let mut by_print = consumer("printed", &[], &[]);
        by_print.client_certs = vec![format!("sha256:{}", "AB:".repeat(31) + "AB")];
        let mut by_subject = consumer("named", &[], &[]);
        by_subject.client_certs = vec!["subject:CN=billing,O=Acme".into()];
        let consumers = Consumers::compile(&[by_print, by_subject]).expect("valid");
        let id = |sha: [u8; 32], subject: &str| {
            consumers
                .by_client_cert(&sha, subject)
                .map(|c| c.id.to_string())
        };
        assert_eq!(id([0xab; 32], "CN=other").as_deref(), Some("printed"));
        assert_eq!(id([0; 32], "CN=billing,O=Acme").as_deref(), Some("named"));
        assert_eq!(id([0; 32], "CN=billing"), None);
    }

    #[test]
    fn bad_and_duplicate_certificates_are_refused_with_paths() {
        let mut bad = consumer("a", &[], &[]);
        bad.client_certs = vec!["sha256:zz".into(), "CN=x".into(), "subject: ".into()];
        let mut dup = consumer("b", &[], &[]);
        dup.client_certs = vec!["subject:CN=x".into(), "subject:CN=x".into()];
        let problems = Consumers::compile(&[bad, dup]).expect_err("invalid");
        let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "consumers[0].client_certs[0]",
                "consumers[0].client_certs[1]",
                "consumers[0].client_certs[2]",
                "consumers[1].client_certs[1]",
            ]
        );
    }

    #[test]
    fn plain_keys_duplicates_and_bad_ids_are_refused_with_paths() {
        let mut plain = consumer("acme", &[], &[]);
        plain.api_keys = vec!["secret".into(), "sha256:zz".into()];
        let problems = Consumers::compile(&[
            plain,
            consumer("dup", &["same"], &[]),
            consumer("dup", &["same"], &[]),
            consumer("bad id", &[], &[]),
        ])
        .expect_err("invalid");
        let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "consumers[0].api_keys[0]",
                "consumers[0].api_keys[1]",
                "consumers[2].id",
                "consumers[2].api_keys[0]",
                "consumers[3].id",
            ]
        );
    }
}
