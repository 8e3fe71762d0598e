//! `request_size`: refuse request bodies and header blocks above configured sizes.

use pingora_http::RequestHeader;
use serde::Deserialize;

use crate::units::Size;
use crate::{Entry, ErrorCode, Level, Phase, Plugin, PluginCtx, PluginEnv, Problem, Rejection};

/// `plugins.request_size` as written in the configuration.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestSizeConfig {
    /// Largest request body accepted (declared by Content-Length or streamed).
    pub max_body: Option<Size>,
    /// Largest header block accepted: the sum of every `name: value\r\n` line.
    pub max_header: Option<Size>,
    /// Most header lines accepted.
    pub max_headers: Option<usize>,
}

/// The compiled `request_size` plugin.
pub struct RequestSize {
    max_body: Option<u64>,
    max_header: Option<u64>,
    max_headers: Option<usize>,
}

impl Entry for RequestSize {
    const NAME: &'static str = "request_size";
    const PHASE: Phase = Phase::Admission;
    type Config = RequestSizeConfig;

    /// Checks the configured limits.
    fn compile(config: &RequestSizeConfig, _: Level, _: &PluginEnv) -> Result<Self, Vec<Problem>> {
        let problem = |path: &str, message: &str| Err(vec![Problem::new(path, message)]);
        if config.max_body.is_none() && config.max_header.is_none() && config.max_headers.is_none()
        {
            return problem(
                "",
                "set at least one of max_body, max_header and max_headers",
            );
        }
        if config.max_headers == Some(0) {
            return problem("max_headers", "must be greater than 0");
        }
        if config.max_header == Some(Size(0)) {
            return problem("max_header", "must be greater than 0");
        }
        Ok(Self {
            max_body: config.max_body.map(|size| size.0),
            max_header: config.max_header.map(|size| size.0),
            max_headers: config.max_headers,
        })
    }
}

impl RequestSize {
    fn body_too_large(&self, limit: u64) -> Rejection {
        Rejection::new(
            ErrorCode::PayloadTooLarge,
            format!("request body larger than {limit} bytes"),
        )
    }
}

impl RequestSize {
    /// The request hook's verdict; never waits.
    fn decide(&self, req: &mut RequestHeader, _ctx: &mut PluginCtx) -> Result<(), Rejection> {
        if let Some(limit) = self.max_headers {
            if req.headers.len() > limit {
                return Err(Rejection::new(
                    ErrorCode::HeadersTooLarge,
                    format!("more than {limit} request headers"),
                ));
            }
        }
        if let Some(limit) = self.max_header {
            if header_block_size(req) > limit {
                return Err(Rejection::new(
                    ErrorCode::HeadersTooLarge,
                    format!("request headers larger than {limit} bytes"),
                ));
            }
        }
        if let Some(limit) = self.max_body {
            let declared = req
                .headers
                .get(http::header::CONTENT_LENGTH)
                .and_then(|value| value.to_str().ok())
                .and_then(|value| value.trim().parse::<u64>().ok());
            if declared.is_some_and(|length| length > limit) {
                return Err(self.body_too_large(limit));
            }
        }
        Ok(())
    }
}

impl Plugin for RequestSize {
    fn request_now(
        &self,
        req: &mut RequestHeader,
        ctx: &mut PluginCtx,
    ) -> Option<Result<(), Rejection>> {
        Some(self.decide(req, ctx))
    }

    fn request_body(&self, total: u64, _ctx: &mut PluginCtx) -> Result<(), Rejection> {
        match self.max_body {
            Some(limit) if total > limit => Err(self.body_too_large(limit)),
            _ => Ok(()),
        }
    }
}

/// The size of a request's header block as every header limit counts it: the sum of its
/// `name: value\r\n` lines (the core's `server.max_header_bytes` uses it too).
pub fn header_block_size(req: &RequestHeader) -> u64 {
    req.headers
        .iter()
        .map(|(name, value)| (name.as_str().len() + value.len() + 4) as u64)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request_with(headers: &[(&str, &str)]) -> RequestHeader {
        let mut req = RequestHeader::build("POST", b"/upload", None).expect("request");
        for (name, value) in headers {
            req.append_header(name.to_string(), *value).expect("header");
        }
        req
    }

    fn limits(max_body: u64, max_header: u64) -> RequestSize {
        let config = RequestSizeConfig {
            max_body: Some(Size(max_body)),
            max_header: Some(Size(max_header)),
            max_headers: Some(20),
        };
        RequestSize::compile(&config, Level::Route, &PluginEnv::check()).expect("valid")
    }

    #[tokio::test]
    async fn too_many_header_lines_are_refused() {
        let plugin = limits(10, 1 << 20);
        let names: Vec<String> = (0..21).map(|i| format!("x-h{i}")).collect();
        let pairs: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "v")).collect();
        let refusal = plugin
            .request(&mut request_with(&pairs), &mut PluginCtx::default())
            .await
            .expect_err("refused");
        assert_eq!(refusal.code, ErrorCode::HeadersTooLarge);
    }

    #[tokio::test]
    async fn declared_body_over_the_limit_is_refused_before_reading() {
        let plugin = limits(10, 1024);
        let mut ctx = PluginCtx::default();
        let mut small = request_with(&[("Content-Length", "10")]);
        assert!(plugin.request(&mut small, &mut ctx).await.is_ok());
        let mut large = request_with(&[("Content-Length", "11")]);
        let refusal = plugin
            .request(&mut large, &mut ctx)
            .await
            .expect_err("too large");
        assert_eq!(refusal.code, ErrorCode::PayloadTooLarge);
    }

    #[tokio::test]
    async fn streamed_body_is_counted() {
        let plugin = limits(10, 1024);
        let mut ctx = PluginCtx::default();
        assert!(plugin.request_body(10, &mut ctx).is_ok());
        assert!(plugin.request_body(11, &mut ctx).is_err());
    }

    #[tokio::test]
    async fn header_block_over_the_limit_is_refused() {
        let plugin = limits(10, 64);
        let mut req = request_with(&[("X-Long", &"a".repeat(100))]);
        let refusal = plugin
            .request(&mut req, &mut PluginCtx::default())
            .await
            .expect_err("big");
        assert_eq!(refusal.code, ErrorCode::HeadersTooLarge);
    }
}
