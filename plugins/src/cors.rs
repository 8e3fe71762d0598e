//! `cors`: answers CORS preflights at the edge and adds the CORS response headers to
//! every response (errors included, so a browser can read a 401 or a 429).

use http::header::{
    ACCESS_CONTROL_ALLOW_CREDENTIALS, ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS,
    ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE,
    ACCESS_CONTROL_REQUEST_HEADERS, ACCESS_CONTROL_REQUEST_METHOD, ORIGIN, VARY,
};
use http::{HeaderName, HeaderValue, Method, StatusCode};
use pingora_http::RequestHeader;
use serde::Deserialize;

use crate::units::Duration;
use crate::{
    Answer, Entry, ErrorCode, Level, Phase, Plugin, PluginCtx, PluginEnv, Problem, Rejection,
};

/// `plugins.cors` as written in the configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorsConfig {
    /// Allowed origins: `*`, exact origins (`https://app.example.com`) or one-level
    /// wildcards (`https://*.example.com`).
    pub allow_origins: Vec<String>,
    /// Methods a preflight may ask for.
    #[serde(default = "default_methods")]
    pub allow_methods: Vec<String>,
    /// Request headers a preflight may ask for; empty allows whatever it asks for.
    #[serde(default)]
    pub allow_headers: Vec<String>,
    /// Response headers the browser may expose to scripts.
    #[serde(default)]
    pub expose_headers: Vec<String>,
    /// Allow cookies and credentials (never together with origin `*`).
    #[serde(default)]
    pub allow_credentials: bool,
    /// How long a browser may cache a preflight answer.
    pub max_age: Option<Duration>,
}

fn default_methods() -> Vec<String> {
    ["GET", "HEAD", "POST"].map(String::from).to_vec()
}

#[derive(Debug)]
enum OriginRule {
    Any,
    Exact(String),
    /// `scheme://*.suffix`: the prefix up to and including `://`, and `.suffix`.
    Subdomains {
        scheme: String,
        suffix: String,
    },
}

impl OriginRule {
    fn parse(origin: &str) -> Option<Self> {
        if origin == "*" {
            return Some(Self::Any);
        }
        let (scheme, host) = origin.split_once("://")?;
        if scheme.is_empty() || host.is_empty() || origin.ends_with('/') {
            return None;
        }
        match host.strip_prefix('*') {
            Some(suffix) if suffix.starts_with('.') && !suffix.contains('*') => {
                Some(Self::Subdomains {
                    scheme: format!("{}://", scheme.to_ascii_lowercase()),
                    suffix: suffix.to_ascii_lowercase(),
                })
            }
            Some(_) => None,
            None if host.contains('*') => None,
            None => Some(Self::Exact(origin.to_ascii_lowercase())),
        }
    }

    fn allows(&self, origin: &str) -> bool {
        match self {
            Self::Any => true,
            Self::Exact(exact) => origin.eq_ignore_ascii_case(exact),
            Self::Subdomains { scheme, suffix } => {
                let origin = origin.to_ascii_lowercase();
                origin
                    .strip_prefix(scheme.as_str())
                    .and_then(|host| host.strip_suffix(suffix.as_str()))
                    .is_some_and(|label| !label.is_empty() && !label.contains(['.', '/']))
            }
        }
    }
}

/// The compiled `cors` plugin.
#[derive(Debug)]
pub struct Cors {
    origins: Vec<OriginRule>,
    any_origin: bool,
    methods: Vec<Method>,
    methods_value: HeaderValue,
    /// Lower-cased allowed request headers; empty allows what the preflight asks for.
    headers: Vec<String>,
    headers_value: Option<HeaderValue>,
    expose_value: Option<HeaderValue>,
    credentials: bool,
    max_age: Option<HeaderValue>,
}

impl Entry for Cors {
    const NAME: &'static str = "cors";
    const PHASE: Phase = Phase::Cors;
    type Config = CorsConfig;

    /// Parses origins, methods and header lists once.
    fn compile(config: &CorsConfig, _: Level, _: &PluginEnv) -> Result<Self, Vec<Problem>> {
        Self::parse(config).map_err(|problem| vec![problem])
    }
}

impl Cors {
    fn parse(config: &CorsConfig) -> Result<Self, Problem> {
        if config.allow_origins.is_empty() {
            return Err(Problem::new(
                "allow_origins",
                "list at least one origin (or \"*\")",
            ));
        }
        let mut origins = Vec::new();
        for (i, origin) in config.allow_origins.iter().enumerate() {
            origins.push(OriginRule::parse(origin).ok_or_else(|| {
                Problem::new(
                    format!("allow_origins[{i}]"),
                    format!("{origin:?} is not *, scheme://host[:port] or scheme://*.domain"),
                )
            })?);
        }
        let any_origin = origins.iter().any(|rule| matches!(rule, OriginRule::Any));
        if any_origin && config.allow_credentials {
            return Err(Problem::new(
                "allow_credentials",
                "browsers refuse credentials with origin \"*\"; list the origins instead",
            ));
        }
        let mut methods = Vec::new();
        for (i, method) in config.allow_methods.iter().enumerate() {
            methods.push(
                Method::from_bytes(method.to_ascii_uppercase().as_bytes()).map_err(|_| {
                    Problem::new(
                        format!("allow_methods[{i}]"),
                        format!("{method:?} is not a method"),
                    )
                })?,
            );
        }
        let list_value = |path: &str, items: &[String]| -> Result<Option<HeaderValue>, _> {
            if items.is_empty() {
                return Ok(None);
            }
            for (i, item) in items.iter().enumerate() {
                if HeaderName::from_bytes(item.as_bytes()).is_err() {
                    return Err(Problem::new(
                        format!("{path}[{i}]"),
                        format!("{item:?} is not a header name"),
                    ));
                }
            }
            HeaderValue::from_str(&items.join(", "))
                .map(Some)
                .map_err(|_| Problem::new(path, "not a valid header list"))
        };
        let method_names: Vec<String> = methods.iter().map(|m| m.to_string()).collect();
        let max_age = config
            .max_age
            .map(|age| age.within("max_age", std::time::Duration::ZERO, crate::units::LONGEST))
            .transpose()?;
        Ok(Self {
            origins,
            any_origin,
            methods_value: HeaderValue::from_str(&method_names.join(", "))
                .map_err(|_| Problem::new("allow_methods", "invalid"))?,
            methods,
            headers: config
                .allow_headers
                .iter()
                .map(|h| h.to_ascii_lowercase())
                .collect(),
            headers_value: list_value("allow_headers", &config.allow_headers)?,
            expose_value: list_value("expose_headers", &config.expose_headers)?,
            credentials: config.allow_credentials,
            max_age: max_age.map(|age| HeaderValue::from(age.as_secs())),
        })
    }

    fn allows_origin(&self, origin: &str) -> bool {
        self.origins.iter().any(|rule| rule.allows(origin))
    }

    /// `Access-Control-Allow-Origin` (and credentials, `Vary`) for an allowed origin.
    fn origin_headers(&self, origin: &HeaderValue) -> Vec<(HeaderName, HeaderValue)> {
        let mut headers = Vec::with_capacity(4);
        if self.any_origin {
            headers.push((ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*")));
        } else {
            headers.push((ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone()));
            headers.push((VARY, HeaderValue::from_static("Origin")));
        }
        if self.credentials {
            headers.push((
                ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            ));
        }
        headers
    }

    fn preflight(&self, req: &RequestHeader, origin: &HeaderValue) -> Result<Answer, Rejection> {
        let refused = |what: &str| {
            Rejection::new(
                ErrorCode::Forbidden,
                format!("CORS preflight refused: {what} not allowed"),
            )
        };
        let method = req
            .headers
            .get(ACCESS_CONTROL_REQUEST_METHOD)
            .and_then(|value| Method::from_bytes(value.as_bytes()).ok())
            .ok_or_else(|| refused("method"))?;
        if !self.methods.contains(&method) {
            return Err(refused("method"));
        }
        let requested = req.headers.get(ACCESS_CONTROL_REQUEST_HEADERS);
        if let (Some(requested), false) = (requested, self.headers.is_empty()) {
            let listed = requested.to_str().map_err(|_| refused("header"))?;
            let all_allowed = listed
                .split(',')
                .map(|name| name.trim().to_ascii_lowercase())
                .filter(|name| !name.is_empty())
                .all(|name| self.headers.contains(&name));
            if !all_allowed {
                return Err(refused("header"));
            }
        }
        let mut headers = self.origin_headers(origin);
        headers.push((ACCESS_CONTROL_ALLOW_METHODS, self.methods_value.clone()));
        match (&self.headers_value, requested) {
            (Some(allowed), _) => headers.push((ACCESS_CONTROL_ALLOW_HEADERS, allowed.clone())),
            (None, Some(requested)) => {
                headers.push((ACCESS_CONTROL_ALLOW_HEADERS, requested.clone()));
            }
            (None, None) => {}
        }
        if let Some(max_age) = &self.max_age {
            headers.push((ACCESS_CONTROL_MAX_AGE, max_age.clone()));
        }
        Ok(Answer {
            status: StatusCode::NO_CONTENT,
            headers,
        })
    }
}

impl Cors {
    /// The request hook's verdict; never waits.
    fn decide(&self, req: &mut RequestHeader, ctx: &mut PluginCtx) -> Result<(), Rejection> {
        let Some(origin) = req.headers.get(ORIGIN).cloned() else {
            return Ok(()); // not a cross-origin request
        };
        let allowed = origin.to_str().is_ok_and(|o| self.allows_origin(o));
        let is_preflight = req.method == Method::OPTIONS
            && req.headers.contains_key(ACCESS_CONTROL_REQUEST_METHOD);
        if is_preflight {
            if !allowed {
                return Err(Rejection::new(
                    ErrorCode::Forbidden,
                    "CORS preflight refused: origin not allowed",
                ));
            }
            ctx.answer = Some(self.preflight(req, &origin)?);
            return Ok(());
        }
        if allowed {
            // On every response, errors included, so scripts can read them.
            ctx.response_headers.extend(self.origin_headers(&origin));
            if let Some(expose) = &self.expose_value {
                ctx.response_headers
                    .push((ACCESS_CONTROL_EXPOSE_HEADERS, expose.clone()));
            }
        }
        Ok(())
    }
}

impl Plugin for Cors {
    fn request_now(
        &self,
        req: &mut RequestHeader,
        ctx: &mut PluginCtx,
    ) -> Option<Result<(), Rejection>> {
        Some(self.decide(req, ctx))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::section_problems;

    fn cors(yaml: &str) -> Cors {
        let config: CorsConfig = serde_yaml::from_str(yaml).expect("valid yaml");
        Cors::compile(&config, Level::Route, &PluginEnv::check()).expect("valid config")
    }

    #[test]
    fn origins_match_exactly_or_by_one_subdomain_label() {
        let cors =
            cors(r#"{ allow_origins: ["https://app.example.com", "https://*.example.org"] }"#);
        assert!(cors.allows_origin("https://app.example.com"));
        assert!(cors.allows_origin("HTTPS://APP.EXAMPLE.COM"));
        assert!(!cors.allows_origin("https://evil.com"));
        assert!(!cors.allows_origin("http://app.example.com"));
        assert!(cors.allows_origin("https://a.example.org"));
        assert!(!cors.allows_origin("https://a.b.example.org"));
        assert!(!cors.allows_origin("https://example.org"));
        assert!(!cors.allows_origin("https://evilexample.org"));
    }

    #[test]
    fn credentials_with_any_origin_is_a_config_error() {
        let problems =
            section_problems(r#"cors: { allow_origins: ["*"], allow_credentials: true }"#);
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].path, "cors.allow_credentials");
    }

    #[tokio::test]
    async fn preflight_is_answered_with_the_allowed_methods_and_max_age() {
        let cors = cors(
            r#"{ allow_origins: ["https://app.example.com"], allow_methods: [GET, PUT], max_age: 10m }"#,
        );
        let mut req = RequestHeader::build("OPTIONS", b"/x", None).expect("request");
        req.insert_header("Origin", "https://app.example.com")
            .expect("header");
        req.insert_header("Access-Control-Request-Method", "PUT")
            .expect("header");
        let mut ctx = PluginCtx::default();

        cors.request(&mut req, &mut ctx).await.expect("allowed");

        let answer = ctx.answer.expect("answered");
        assert_eq!(answer.status, StatusCode::NO_CONTENT);
        let get = |name: HeaderName| {
            answer
                .headers
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.to_str().unwrap_or_default().to_string())
        };
        assert_eq!(
            get(ACCESS_CONTROL_ALLOW_ORIGIN).as_deref(),
            Some("https://app.example.com")
        );
        assert_eq!(
            get(ACCESS_CONTROL_ALLOW_METHODS).as_deref(),
            Some("GET, PUT")
        );
        assert_eq!(get(ACCESS_CONTROL_MAX_AGE).as_deref(), Some("600"));
    }

    #[tokio::test]
    async fn preflight_for_a_method_not_allowed_is_refused() {
        let cors = cors(r#"{ allow_origins: ["*"] }"#);
        let mut req = RequestHeader::build("OPTIONS", b"/x", None).expect("request");
        req.insert_header("Origin", "https://x.test")
            .expect("header");
        req.insert_header("Access-Control-Request-Method", "DELETE")
            .expect("header");
        let refusal = cors
            .request(&mut req, &mut PluginCtx::default())
            .await
            .expect_err("refused");
        assert_eq!(refusal.code, ErrorCode::Forbidden);
    }
}
