//! Response compression in the request's walk: Pingora's compression module (gzip and
//! zstd, chosen by the client's Accept-Encoding) driven by the route's policy.
//!
//! Pingora installs the module on every proxy service, disabled. Each request enables it
//! before the module reads Accept-Encoding ([`prepare`]), turns it off again unless its
//! route has a compression policy ([`start`]), and each response turns it off when its
//! type or size is not worth compressing ([`filter_response`]). The answers the module
//! leaves alone because they have no body to encode (HEAD, 304) or must not be encoded
//! (206) get from the policy the fields the module gives the full answer.

use http::{Method, StatusCode};
use pingora::modules::http::compression::ResponseCompression;
use pingora::proxy::Session;
use pingora_http::ResponseHeader;

use crate::model::compression::CompressionPolicy;

/// The level the module reads Accept-Encoding with; every request then sets its own.
const MODULE_LEVEL: u32 = 6;

/// Before the request's modules run: enabled, so the module records Accept-Encoding
/// (it ignores the header while disabled).
pub fn prepare(session: &mut Session) {
    if let Some(module) = session
        .downstream_modules_ctx
        .get_mut::<ResponseCompression>()
    {
        module.adjust_level(MODULE_LEVEL);
    }
}

/// Request phase: compression on with `policy`'s levels, or off.
pub fn start(session: &mut Session, policy: Option<&CompressionPolicy>) {
    let Some(module) = session
        .downstream_modules_ctx
        .get_mut::<ResponseCompression>()
    else {
        return;
    };
    match policy {
        Some(policy) => {
            for (algorithm, level) in policy.levels() {
                module.adjust_algorithm_level(algorithm, level);
            }
        }
        None => module.adjust_level(0),
    }
}

/// Response phase: off for a response `policy` does not want compressed; a derived
/// answer (HEAD, 304, 206) gets the full answer's fields instead.
pub fn filter_response(
    session: &mut Session,
    policy: Option<&CompressionPolicy>,
    resp: &mut ResponseHeader,
) {
    let Some(policy) = policy else { return };
    let derived = session.req_header().method == Method::HEAD
        || matches!(
            resp.status,
            StatusCode::NOT_MODIFIED | StatusCode::PARTIAL_CONTENT
        );
    if derived {
        // The 200 a cached 304 or 206 was made from describes the representation.
        let stored = session
            .cache
            .maybe_cache_meta()
            .map(|meta| meta.response_header())
            .filter(|stored| stored.status == StatusCode::OK);
        policy.derive(session.req_header(), resp, stored);
    }
    if derived || !policy.compressible(resp) {
        if let Some(module) = session
            .downstream_modules_ctx
            .get_mut::<ResponseCompression>()
        {
            module.adjust_level(0);
        }
    }
}
