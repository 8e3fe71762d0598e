//! Response compression in the request's walk, two ways.
//!
//! **Uncached routes**: Pingora's downstream compression module (gzip and zstd) driven by
//! the route's policy. Pingora installs the module on every proxy service, disabled. Each
//! request enables it before the module reads Accept-Encoding ([`prepare`]), turns it off
//! again unless its route has a compression policy ([`start`]), and each response turns
//! it off when its type or size is not worth compressing ([`filter_response`]).
//!
//! **Cached routes** compress once, on insert: the coding is negotiated once per request
//! (`RequestCtx::encoding`, also the variant key); on a miss the upstream is asked for
//! exactly that coding and Pingora's *upstream* compression context encodes the body
//! before the cache stores it ([`ask_upstream`], [`adjust_upstream`]); hits are served as
//! stored, with the downstream module off.
//!
//! Either way, the answers that have no body to encode (HEAD, 304) or must not be encoded
//! (206) get from the policy the fields the full answer has.

use http::header::{ACCEPT_ENCODING, CONTENT_ENCODING};
use http::{Method, StatusCode};
use pingora::cache::CachePhase;
use pingora::modules::http::compression::ResponseCompression;
use pingora::protocols::http::compression::{Algorithm, ResponseCompressionCtx};
use pingora::proxy::Session;
use pingora_http::{RequestHeader, ResponseHeader};

use crate::model::compression::{weaken_etag, CompressionPolicy};

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

/// Request phase: the downstream module on with `policy`'s levels, or off. The module
/// takes the first coding the client lists and ignores q-values; when that is not the
/// coding negotiation chose (`encoding`, which honours `q=0`), its level goes to 0 so the
/// module never sends a coding the client refused.
pub fn start(session: &mut Session, policy: Option<&CompressionPolicy>) {
    let choice = policy.map(|policy| {
        let req = session.req_header();
        let refused = policy
            .module_choice(req)
            .filter(|chosen| policy.negotiate(req) != Some(*chosen));
        (policy, refused)
    });
    let Some(module) = session
        .downstream_modules_ctx
        .get_mut::<ResponseCompression>()
    else {
        return;
    };
    match choice {
        Some((policy, refused)) => {
            for (algorithm, level) in policy.levels() {
                let level = if refused == Some(algorithm) { 0 } else { level };
                module.adjust_algorithm_level(algorithm, level);
            }
        }
        None => module.adjust_level(0),
    }
}

/// Response phase of an uncached route: off for a response `policy` does not want
/// compressed; a derived answer (HEAD, 304, 206) gets the full answer's fields instead.
pub fn filter_response(
    session: &mut Session,
    policy: Option<&CompressionPolicy>,
    resp: &mut ResponseHeader,
) {
    let Some(policy) = policy else { return };
    let derived = is_derived(session, resp);
    if derived {
        // The 200 a cached 304 or 206 was made from describes the representation.
        let stored = session
            .cache
            .maybe_cache_meta()
            .map(|meta| meta.response_header())
            .filter(|stored| stored.status == StatusCode::OK);
        let req = session.req_header();
        let encoding = policy
            .module_choice(req)
            .filter(|chosen| policy.negotiate(req) == Some(*chosen));
        policy.derive(encoding, req, resp, stored);
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

/// The coding a request on a cached route is answered with, and stored under. A range
/// request selects the identity variant: byte ranges of a compressed variant would count
/// bytes of a stream the encoder may produce differently next time, so ranges are only
/// served from identity bytes (with their strong ETag and `Accept-Ranges`).
pub fn negotiate_stored(policy: &CompressionPolicy, req: &RequestHeader) -> Option<Algorithm> {
    if req.headers.contains_key(http::header::RANGE) {
        return None;
    }
    policy.negotiate(req)
}

/// Before a cached route's request goes upstream: it asks for exactly the negotiated
/// coding (none for identity), and the upstream compression context encodes into that
/// coding with the route's level. The context is made afresh: a retried attempt must not
/// meet the previous attempt's state.
pub fn ask_upstream(
    session: &mut Session,
    upstream_request: &mut RequestHeader,
    policy: &CompressionPolicy,
    encoding: Option<Algorithm>,
) {
    let mut upstream = ResponseCompressionCtx::new(0, false, false);
    match encoding {
        Some(algorithm) => {
            let _ = upstream_request.insert_header(ACCEPT_ENCODING, algorithm.as_str());
            upstream.adjust_algorithm_level(algorithm, policy.level(algorithm));
        }
        None => {
            upstream_request.remove_header(&ACCEPT_ENCODING);
            // Nothing is encoded (no coding is asked for), but a compressible answer
            // still gets `Vary: Accept-Encoding`: the identity variant is one of several.
            for (algorithm, level) in policy.levels() {
                upstream.adjust_algorithm_level(algorithm, level);
            }
        }
    }
    session.upstream_compression = upstream;
}

/// The upstream's response header, before the upstream compression context reads it:
/// off when the route's policy (types, `min_size`) does not want it compressed.
pub fn adjust_upstream(session: &mut Session, policy: &CompressionPolicy, resp: &ResponseHeader) {
    let upstream = &mut session.upstream_compression;
    if upstream.is_header_phase() && !resp.status.is_informational() && !policy.compressible(resp) {
        upstream.adjust_level(0);
    }
}

/// Whether an upstream answer on a cached route may be stored under the variant of
/// `encoding`: its Content-Encoding must be that coding, or none (a response the policy
/// leaves uncompressed suits every client). An upstream that answers an identity request
/// with an encoded body is passed through but never stored for other clients.
pub fn storable_under(resp: &ResponseHeader, encoding: Option<Algorithm>) -> bool {
    match resp.headers.get(CONTENT_ENCODING) {
        None => true,
        Some(coding) => encoding.is_some_and(|algorithm| {
            coding
                .as_bytes()
                .trim_ascii()
                .eq_ignore_ascii_case(algorithm.as_str().as_bytes())
        }),
    }
}

/// Response phase of a cached route: answers from the cache are sent as stored; a
/// derived answer that came from the upstream (a HEAD miss, a 304 or 206 passed
/// through) gets the fields the full answer of its variant has.
pub fn filter_stored_response(
    session: &Session,
    policy: &CompressionPolicy,
    encoding: Option<Algorithm>,
    resp: &mut ResponseHeader,
) {
    let from_cache = matches!(
        session.cache.phase(),
        CachePhase::Hit
            | CachePhase::Stale
            | CachePhase::StaleUpdating
            | CachePhase::Revalidated
            | CachePhase::RevalidatedNoCache(_)
    );
    if from_cache || !is_derived(session, resp) {
        return;
    }
    policy.derive(encoding, session.req_header(), resp, None);
}

/// An upstream 304 revalidating a stored compressed variant: its ETag is weakened as the
/// 200's was, before pingora-cache copies it into the stored header (a strong tag must
/// never describe the compressed bytes).
pub fn filter_revalidation(session: &Session, resp: &mut ResponseHeader) {
    let compressed = session
        .cache
        .maybe_cache_meta()
        .is_some_and(|meta| meta.headers().contains_key(CONTENT_ENCODING));
    if resp.status == StatusCode::NOT_MODIFIED && compressed {
        weaken_etag(resp);
    }
}

fn is_derived(session: &Session, resp: &ResponseHeader) -> bool {
    session.req_header().method == Method::HEAD
        || matches!(
            resp.status,
            StatusCode::NOT_MODIFIED | StatusCode::PARTIAL_CONTENT
        )
}
