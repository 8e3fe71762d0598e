//! Pool and target choice: the canary's pool, the route's, or its fallback; the bulkhead
//! slot; the balancing key.

use std::sync::Arc;

use pingora::proxy::Session;
use portcullis_plugins::{ErrorCode, PluginCtx, Rejection, RequestKey};

use super::RequestCtx;
use crate::model::canary::Variant;
use crate::model::gateway::RouteAction;
use crate::model::upstream::Upstream;

/// The canary split's choice for a request on a route with a canary (`None` otherwise).
/// Made before the cache lookup, whose key includes it, and read by [`choose_target`].
pub(super) fn split(session: &Session, ctx: &mut RequestCtx) -> Option<Variant> {
    let route = ctx.route.as_ref()?;
    let RouteAction::Proxy {
        canary: Some(canary),
        ..
    } = &route.action
    else {
        return None;
    };
    Some(canary.choose(session.req_header(), &ctx.plugins, &mut ctx.key))
}

/// Chooses the pool and target of a proxied request (nothing to choose for a route that
/// answers itself): the canary's pool for a request the split ([`split`]) sent there,
/// else the route's pool, else its fallback.
pub(super) fn choose_target(session: &Session, ctx: &mut RequestCtx) -> Result<(), Rejection> {
    let Some(route) = ctx.route.clone() else {
        return Ok(());
    };
    let RouteAction::Proxy {
        upstream,
        canary,
        fallback,
    } = &route.action
    else {
        return Ok(());
    };
    let canary = canary
        .as_ref()
        .filter(|_| ctx.split == Some(Variant::Canary));
    let pools = [
        canary.map(|canary| (&canary.upstream, Variant::Canary)),
        Some((upstream, Variant::Stable)),
        fallback
            .as_ref()
            .map(|fallback| (fallback, Variant::Stable)),
    ];
    first_available(session, ctx, pools)
}

/// Takes the first of `pools` (the canary for canary requests, the route's pool, its
/// fallback) that has an available target: a bulkhead slot there and the target. A
/// canary without an available target leaves the request to the stable pool. With no
/// pool available the route fails fast: 503 with `Retry-After`, no connect attempt.
/// Availability is learnt from the selection itself, so the usual case costs one
/// selection and no scan of the targets.
fn first_available(
    session: &Session,
    ctx: &mut RequestCtx,
    pools: [Option<(&Arc<Upstream>, Variant)>; 3],
) -> Result<(), Rejection> {
    let mut unavailable_pool = None;
    for (pool, variant) in pools.into_iter().flatten() {
        ctx.upstream = Some(Arc::clone(pool));
        ctx.variant = Some(variant);
        let Some(slot) = pool.try_acquire() else {
            return Err(Rejection::new(
                ErrorCode::UpstreamOverloaded,
                format!("upstream {} has too many requests in flight", pool.name),
            )
            .retry_after(1));
        };
        let key = balancing_key(session, &ctx.plugins, pool.hash_on.as_ref(), &mut ctx.key);
        if let Some(target) = pool.select(key, 0) {
            if let Some(budget) = &pool.retries.budget {
                budget.deposit();
            }
            ctx.upstream_slot = Some(slot);
            ctx.target = Some(target);
            return Ok(());
        }
        if variant == Variant::Stable {
            unavailable_pool.get_or_insert(pool);
        }
    }
    // The route's own pool (a canary is never the last candidate) names the failure.
    let pool = unavailable_pool.or(ctx.upstream.as_ref()).map(Arc::clone);
    ctx.upstream = pool.clone();
    Err(match pool {
        Some(pool) => unavailable(&pool),
        None => Rejection::new(ErrorCode::UpstreamUnavailable, "no upstream available"),
    })
}

fn unavailable(pool: &Upstream) -> Rejection {
    Rejection::new(
        ErrorCode::UpstreamUnavailable,
        format!("upstream {} has no healthy, non-ejected target", pool.name),
    )
    .retry_after(pool.retry_after())
}

/// The bytes `consistent_hash` hashes (empty for the other algorithms, and when the
/// request lacks the key), written into the request's reused `buffer`.
pub(super) fn balancing_key<'a>(
    session: &Session,
    plugins: &PluginCtx,
    hash_on: Option<&RequestKey>,
    buffer: &'a mut Vec<u8>,
) -> &'a [u8] {
    buffer.clear();
    if let Some(key) = hash_on {
        key.write_value(session.req_header(), plugins, buffer);
    }
    buffer
}
