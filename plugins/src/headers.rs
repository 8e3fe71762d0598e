//! `headers`: add or remove request headers (to the upstream) and response headers (to
//! the client).

use std::collections::BTreeMap;

use http::{HeaderName, HeaderValue};
use pingora_http::{RequestHeader, ResponseHeader};
use serde::Deserialize;

use crate::{Entry, Level, Phase, Plugin, PluginCtx, PluginEnv, Problem};

/// `plugins.headers` as written in the configuration.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeadersConfig {
    /// Headers set on the upstream request, replacing any the client sent (and its
    /// underscored look-alikes).
    #[serde(default)]
    pub request_add: BTreeMap<String, String>,
    /// Headers removed from the upstream request.
    #[serde(default)]
    pub request_remove: Vec<String>,
    /// Headers set on the response, replacing any the upstream sent.
    #[serde(default)]
    pub response_add: BTreeMap<String, String>,
    /// Headers removed from the response.
    #[serde(default)]
    pub response_remove: Vec<String>,
}

/// The compiled `headers` plugin: names and values parsed once.
pub struct Headers {
    request_add: Vec<(HeaderName, HeaderValue)>,
    request_remove: Vec<HeaderName>,
    response_add: Vec<(HeaderName, HeaderValue)>,
    response_remove: Vec<HeaderName>,
}

impl Entry for Headers {
    const NAME: &'static str = "headers";
    const PHASE: Phase = Phase::Transform;
    type Config = HeadersConfig;

    /// Parses every header name and value of the configuration.
    fn compile(config: &HeadersConfig, _: Level, _: &PluginEnv) -> Result<Self, Vec<Problem>> {
        let parse = || {
            Ok(Self {
                request_add: parse_pairs("request_add", &config.request_add)?,
                request_remove: parse_names("request_remove", &config.request_remove)?,
                response_add: parse_pairs("response_add", &config.response_add)?,
                response_remove: parse_names("response_remove", &config.response_remove)?,
            })
        };
        parse().map_err(|problem| vec![problem])
    }
}

fn parse_name(path: &str, name: &str) -> Result<HeaderName, Problem> {
    HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| Problem::new(path, format!("{name:?} is not a valid header name")))
}

fn parse_names(path: &str, names: &[String]) -> Result<Vec<HeaderName>, Problem> {
    names
        .iter()
        .enumerate()
        .map(|(i, name)| parse_name(&format!("{path}[{i}]"), name))
        .collect()
}

fn parse_pairs(
    path: &str,
    pairs: &BTreeMap<String, String>,
) -> Result<Vec<(HeaderName, HeaderValue)>, Problem> {
    pairs
        .iter()
        .map(|(name, value)| {
            let path = format!("{path}.{name}");
            let header_value = HeaderValue::from_str(value).map_err(|_| {
                Problem::new(&path, format!("{value:?} is not a valid header value"))
            })?;
            Ok((parse_name(&path, name)?, header_value))
        })
        .collect()
}

#[async_trait::async_trait]
impl Plugin for Headers {
    fn upstream_request(&self, req: &mut RequestHeader, _ctx: &PluginCtx) {
        crate::lookalike::remove_lookalikes(req, |name| {
            self.request_add.iter().any(|(own, _)| own.as_str() == name)
        });
        for name in &self.request_remove {
            req.remove_header(name);
        }
        for (name, value) in &self.request_add {
            // Only fails on header names pingora cannot case-preserve; ours are valid.
            let _ = req.insert_header(name.clone(), value.clone());
        }
    }

    fn response(&self, resp: &mut ResponseHeader, _ctx: &mut PluginCtx) {
        for name in &self.response_remove {
            resp.remove_header(name);
        }
        for (name, value) in &self.response_add {
            let _ = resp.insert_header(name.clone(), value.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::section_problems;

    fn plugin(yaml: &str) -> Headers {
        let config = serde_yaml::from_str(yaml).expect("yaml");
        Headers::compile(&config, Level::Route, &PluginEnv::check()).expect("valid")
    }

    #[test]
    fn rewrites_both_directions() {
        let headers = plugin(
            "{request_add: {X-Gateway: portcullis}, request_remove: [X-Debug], \
             response_add: {X-Frame-Options: DENY}, response_remove: [Server]}",
        );
        let ctx = PluginCtx::default();

        let mut req = RequestHeader::build("GET", b"/", None).expect("request");
        req.insert_header("X-Debug", "1").expect("header");
        req.insert_header("X-Gateway", "spoofed").expect("header");
        headers.upstream_request(&mut req, &ctx);
        assert!(req.headers.get("x-debug").is_none());
        assert_eq!(
            req.headers.get("x-gateway").map(|v| v.as_bytes()),
            Some(&b"portcullis"[..])
        );

        let mut resp = ResponseHeader::build(200, None).expect("response");
        resp.insert_header("Server", "nginx").expect("header");
        headers.response(&mut resp, &mut PluginCtx::default());
        assert!(resp.headers.get("server").is_none());
        assert_eq!(
            resp.headers.get("x-frame-options").map(|v| v.as_bytes()),
            Some(&b"DENY"[..])
        );
    }

    #[test]
    fn invalid_names_are_reported_with_their_path() {
        let problems = section_problems("headers: {response_remove: [Server, 'bad name']}");
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].path, "headers.response_remove[1]");
    }
}
