//! Response compression in the request's walk: Pingora's compression module (gzip and
//! zstd, chosen by the client's Accept-Encoding) driven by the route's policy.
//!
//! Pingora installs the module on every proxy service, disabled. Each request enables it
//! before the module reads Accept-Encoding ([`prepare`]), turns it off again unless its
//! route has a compression policy ([`start`]), and each response turns it off when its
//! type or size is not worth compressing ([`filter_response`]).

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

/// Response phase: off for a response `policy` does not want compressed.
pub fn filter_response(
    session: &mut Session,
    policy: Option<&CompressionPolicy>,
    resp: &ResponseHeader,
) {
    if policy.is_some_and(|policy| !policy.compressible(resp)) {
        if let Some(module) = session
            .downstream_modules_ctx
            .get_mut::<ResponseCompression>()
        {
            module.adjust_level(0);
        }
    }
}
