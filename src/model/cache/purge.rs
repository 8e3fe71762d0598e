//! `POST /cache/purge`: remove cached responses by host and path, or by path prefix.

use serde::Deserialize;

use super::store::all_stores;

/// What a purge request removes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Purge {
    /// Every variant (and every query string) of one path on one host.
    Path {
        /// Host, compared without case.
        host: String,
        /// Exact path, without query.
        path: String,
    },
    /// Every path that starts with `prefix`, on `host` or on every host.
    Prefix {
        /// Limits the purge to one host when set.
        host: Option<String>,
        /// Path prefix (plain string prefix).
        prefix: String,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Body {
    host: Option<String>,
    path: Option<String>,
    prefix: Option<String>,
}

impl Purge {
    /// Reads the JSON body: `{"host": "...", "path": "/..."}` or `{"prefix": "/..."}`
    /// (optionally with `host`).
    pub fn parse(body: &[u8]) -> Result<Self, String> {
        let body: Body = serde_json::from_slice(body).map_err(|e| format!("invalid body: {e}"))?;
        let starts_with_slash = |text: &str, field: &str| {
            if text.starts_with('/') {
                Ok(())
            } else {
                Err(format!("{field} must start with '/'"))
            }
        };
        match (body.host, body.path, body.prefix) {
            (Some(host), Some(path), None) if !host.is_empty() => {
                starts_with_slash(&path, "path")?;
                Ok(Self::Path {
                    host: host.to_ascii_lowercase(),
                    path,
                })
            }
            (host, None, Some(prefix)) => {
                starts_with_slash(&prefix, "prefix")?;
                Ok(Self::Prefix {
                    host: host.map(|host| host.to_ascii_lowercase()),
                    prefix,
                })
            }
            _ => Err("send {\"host\": ..., \"path\": ...} or {\"prefix\": ...}".to_string()),
        }
    }

    /// Whether a cached response for `host` and `path` is covered.
    pub fn covers(&self, host: &str, path: &str) -> bool {
        match self {
            Self::Path { host: h, path: p } => h == host && p == path,
            Self::Prefix { host: h, prefix } => {
                h.as_deref().is_none_or(|h| h == host) && path.starts_with(prefix.as_str())
            }
        }
    }

    /// Removes what the purge covers from every route's store; returns how many cached
    /// responses went. Scans the stores shard by shard (an admin operation, not a
    /// request-path one).
    pub fn execute(&self) -> usize {
        all_stores()
            .into_iter()
            .map(|store| store.purge_matching(|host, path| self.covers(host, path)))
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_read_as_documented() {
        assert_eq!(
            Purge::parse(br#"{"host": "Example.com", "path": "/a"}"#),
            Ok(Purge::Path {
                host: "example.com".into(),
                path: "/a".into()
            })
        );
        assert_eq!(
            Purge::parse(br#"{"prefix": "/static/"}"#),
            Ok(Purge::Prefix {
                host: None,
                prefix: "/static/".into()
            })
        );
        assert!(Purge::parse(br#"{"path": "/a"}"#).is_err());
        assert!(Purge::parse(br#"{"prefix": "static"}"#).is_err());
        assert!(Purge::parse(br#"{"prefix": "/", "other": 1}"#).is_err());
        assert!(Purge::parse(b"not json").is_err());
    }

    #[test]
    fn coverage() {
        let path = Purge::Path {
            host: "a.com".into(),
            path: "/x".into(),
        };
        assert!(path.covers("a.com", "/x"));
        assert!(!path.covers("b.com", "/x"));
        assert!(!path.covers("a.com", "/x/y"));
        let prefix = Purge::Prefix {
            host: None,
            prefix: "/static/".into(),
        };
        assert!(prefix.covers("any", "/static/app.js"));
        assert!(!prefix.covers("any", "/api"));
    }
}
