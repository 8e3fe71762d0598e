//! The plugin interface of Portcullis and its built-in plugins.
//!
//! A [`Plugin`] is request/response policy attached to a route (or globally). The core
//! compiles each route's plugins into a [`PluginChain`] at config load and calls the chain
//! in phase order on every request. Plugins never import the core: everything they may
//! read or change about a request travels through [`PluginCtx`] and the request/response
//! headers handed to each hook.

pub mod auth;
mod chain;
mod config;
mod context;
mod env;
mod problem;
mod reject;
pub mod units;

pub mod concurrency_limit;
pub mod consumers;
pub mod cors;
pub mod headers;
pub mod ip_restriction;
pub mod jwt;
pub mod key_auth;
pub mod rate_limit;
pub mod request_size;

pub use chain::{AuthGuard, PluginChain};
pub use config::{build_chain, PluginsConfig};
pub use context::{Answer, PluginCtx};
pub use env::{NoTelemetry, PluginEnv, Retained, RetainedSet, Telemetry};
pub use problem::Problem;
pub use reject::{ErrorCode, Rejection};

use async_trait::async_trait;
use pingora_http::{RequestHeader, ResponseHeader};

/// Where in the request's walk a plugin runs. Phases run in the order declared here
/// (SPEC §3: request_size, cors preflight, auth, rate_limit, concurrency_limit), and
/// transforms last, just before the upstream request is built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    /// Cheap checks on the request as received (size limits).
    Admission,
    /// CORS preflight answers.
    Cors,
    /// Authentication: a request passes if any plugin of this phase accepts it.
    Auth,
    /// Rate limits.
    RateLimit,
    /// Concurrency limits.
    Concurrency,
    /// Header rewriting and other transforms that never reject.
    Transform,
}

/// Request/response policy that can be attached to a route.
///
/// Every hook has a default that does nothing, so a plugin implements only the phases it
/// cares about. Hooks must not block: they run on the proxy's worker threads.
#[async_trait]
pub trait Plugin: Send + Sync {
    /// The plugin's configuration name (`request_size`, `jwt`, ...).
    fn name(&self) -> &'static str;

    /// The phase this plugin's request hook runs in.
    fn phase(&self) -> Phase;

    /// Request phase, after routing. Returning a [`Rejection`] ends the request with that
    /// error response; nothing is proxied.
    async fn request(
        &self,
        _req: &mut RequestHeader,
        _ctx: &mut PluginCtx,
    ) -> Result<(), Rejection> {
        Ok(())
    }

    /// Called for each chunk of the request body as it streams through; `total` is the
    /// number of body bytes received so far, including this chunk.
    fn request_body(&self, _total: u64, _ctx: &mut PluginCtx) -> Result<(), Rejection> {
        Ok(())
    }

    /// The request about to be sent upstream (after the core's own header work).
    fn upstream_request(&self, _req: &mut RequestHeader, _ctx: &PluginCtx) {}

    /// The response about to be sent to the client, whether it came from the upstream or
    /// from the gateway itself.
    fn response(&self, _resp: &mut ResponseHeader, _ctx: &mut PluginCtx) {}

    /// Called once the request is over (success, error or client abort).
    fn log(&self, _ctx: &mut PluginCtx, _status: u16) {}
}
