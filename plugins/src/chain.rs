//! A route's compiled plugins, run in phase order.

use std::sync::Arc;

use pingora_http::{RequestHeader, ResponseHeader};

use crate::{Phase, Plugin, PluginCtx, Rejection};

/// The plugins of one route, sorted by [`Phase`], built once at config load.
#[derive(Clone, Default)]
pub struct PluginChain {
    plugins: Arc<[Arc<dyn Plugin>]>,
}

impl PluginChain {
    /// Builds a chain; the order of `plugins` within a phase is kept.
    pub fn new(mut plugins: Vec<Arc<dyn Plugin>>) -> Self {
        plugins.sort_by_key(|plugin| plugin.phase());
        Self {
            plugins: plugins.into(),
        }
    }

    /// Whether the chain has no plugins at all (the common fast path).
    pub fn is_empty(&self) -> bool {
        self.plugins.is_empty()
    }

    /// The configuration names of the plugins, in run order.
    pub fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.plugins.iter().map(|plugin| plugin.name())
    }

    /// Runs every request hook in phase order and stops at the first rejection, or at the
    /// first plugin that answers the request itself ([`PluginCtx::answer`]).
    ///
    /// Auth plugins are alternatives: the request passes the auth phase as soon as one of
    /// them accepts it; if all refuse, the first refusal is returned.
    pub async fn request(
        &self,
        req: &mut RequestHeader,
        ctx: &mut PluginCtx,
    ) -> Result<(), Rejection> {
        let mut auth_refusal: Option<Rejection> = None;
        let mut auth_passed = false;
        for plugin in self.plugins.iter() {
            let phase = plugin.phase();
            if phase > Phase::Auth {
                if let Some(refusal) = auth_refusal.take().filter(|_| !auth_passed) {
                    return Err(refusal);
                }
            }
            if phase == Phase::Auth {
                if auth_passed {
                    continue;
                }
                match plugin.request(req, ctx).await {
                    Ok(()) => auth_passed = true,
                    Err(refusal) => {
                        auth_refusal.get_or_insert(refusal);
                    }
                }
                continue;
            }
            plugin.request(req, ctx).await?;
            if ctx.answer.is_some() {
                return Ok(());
            }
        }
        match auth_refusal {
            Some(refusal) if !auth_passed => Err(refusal),
            _ => Ok(()),
        }
    }

    /// Runs every request-body hook; `total` counts the body bytes received so far.
    pub fn request_body(&self, total: u64, ctx: &mut PluginCtx) -> Result<(), Rejection> {
        self.plugins
            .iter()
            .try_for_each(|plugin| plugin.request_body(total, ctx))
    }

    /// Lets every plugin adjust the request about to go upstream.
    pub fn upstream_request(&self, req: &mut RequestHeader, ctx: &PluginCtx) {
        for plugin in self.plugins.iter() {
            plugin.upstream_request(req, ctx);
        }
    }

    /// Lets every plugin adjust the response about to go to the client.
    pub fn response(&self, resp: &mut ResponseHeader, ctx: &mut PluginCtx) {
        for plugin in self.plugins.iter() {
            plugin.response(resp, ctx);
        }
    }

    /// Tells every plugin that the request is over.
    pub fn log(&self, ctx: &mut PluginCtx, status: u16) {
        for plugin in self.plugins.iter() {
            plugin.log(ctx, status);
        }
    }
}
