//! The plugin interface of Portcullis and its built-in plugins.
//!
//! A [`Plugin`] is request/response policy attached to a route (or globally); an [`Entry`]
//! is a plugin as the `plugins:` section names and compiles it. At config load the core
//! compiles each `plugins:` section once into [`CompiledPlugins`], assembles each route's
//! [`PluginChain`] from its own section and the global one, and calls the chain in phase
//! order on every request. Plugins never import the core: everything they may read or
//! change about a request travels through [`PluginCtx`] and the request/response headers
//! handed to each hook.

pub mod auth;
mod chain;
mod config;
mod context;
mod env;
pub mod phase_times;
mod problem;
mod reject;
pub mod request_key;
pub mod units;

pub mod concurrency_limit;
pub mod consumers;
pub mod cors;
pub mod headers;
pub mod ip_restriction;
pub mod jwt;
pub mod key_auth;
pub mod lookalike;
pub mod mtls;
pub mod rate_limit;
pub mod request_size;

pub use chain::PluginChain;
use chain::{AuthGuard, Step};
pub use config::{CompiledPlugins, PluginsConfig};
pub use context::{Answer, ClientCertificate, PluginCtx};
pub use env::{NoTelemetry, PluginEnv, Retained, RetainedSet, Telemetry};
pub use problem::Problem;
pub use reject::{ErrorCode, Rejection};
pub use request_key::{KeyUse, RequestKey};

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

/// Where a `plugins:` section is: limits of the global section count across every route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// The top-level `plugins:` section.
    Global,
    /// A route's own `plugins:` section.
    Route,
}

/// A plugin as an entry of a `plugins:` section: its name there, its typed configuration,
/// the phase it runs in, and how the configuration compiles.
pub trait Entry: Plugin + Sized + 'static {
    /// The entry's name in `plugins:` (`request_size`, `jwt`, ...), which is also the
    /// plugin's label in metrics, logs and the admin API.
    const NAME: &'static str;
    /// The phase this plugin's request hook runs in.
    const PHASE: Phase;
    /// The entry as written in the configuration.
    type Config;

    /// Checks and compiles the entry; problem paths are relative to it (`max_body`,
    /// `[0].rate`; empty for the entry as a whole).
    fn compile(config: &Self::Config, level: Level, env: &PluginEnv) -> Result<Self, Vec<Problem>>;
}

/// Request/response policy that can be attached to a route.
///
/// Every hook has a default that does nothing, so a plugin implements only the phases it
/// cares about. Hooks must not block: they run on the proxy's worker threads.
#[async_trait]
pub trait Plugin: Send + Sync {
    /// Request phase, after routing. Returning a [`Rejection`] ends the request with that
    /// error response; nothing is proxied. By default, [`Plugin::request_now`]'s verdict.
    async fn request(&self, req: &mut RequestHeader, ctx: &mut PluginCtx) -> Result<(), Rejection> {
        self.request_now(req, ctx).unwrap_or(Ok(()))
    }

    /// The request phase without waiting: `Some(verdict)` when the plugin can decide this
    /// request now, and the chain then skips [`Plugin::request`] (and the boxed future
    /// every call of it costs); `None`, with nothing done, when it may have to wait (a
    /// Redis round trip, a key fetch).
    fn request_now(
        &self,
        _req: &mut RequestHeader,
        _ctx: &mut PluginCtx,
    ) -> Option<Result<(), Rejection>> {
        None
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
