//! The admin listener (SPEC §6): the status page, metrics, liveness, readiness, status,
//! reload and cache purge.

use std::sync::Arc;

use async_trait::async_trait;
use http::{Method, Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use serde_json::json;

use crate::model::cache::purge::Purge;
use crate::runtime::reload::reload;
use crate::runtime::state::State;
use crate::runtime::status_page::{self, token_matches, Visit};

/// Largest admin request body read.
const MAX_BODY: usize = 64 * 1024;

/// The admin endpoints.
pub struct Admin {
    state: Arc<State>,
}

impl Admin {
    /// Admin endpoints over `state`.
    pub fn new(state: Arc<State>) -> Self {
        Self { state }
    }

    fn status(&self) -> serde_json::Value {
        let gateway = self.state.gateway();
        let answers = self.state.metrics.answers_by_route();
        let routes: Vec<_> = gateway
            .router
            .iter()
            .map(|route| {
                let (upstream, canary, fallback) = match &route.action {
                    crate::model::gateway::RouteAction::Proxy {
                        upstream,
                        canary,
                        fallback,
                    } => (Some(upstream), canary.as_ref(), fallback.as_ref()),
                    crate::model::gateway::RouteAction::Respond(_) => (None, None, None),
                };
                let cache = route.cache.as_ref().map(|cache| {
                    json!({
                        "bytes": cache.store.size(),
                        "responses": cache.store.items(),
                        "results": cache.results().collect::<std::collections::BTreeMap<_, _>>(),
                    })
                });
                let counted = answers.get(&*route.name).copied().unwrap_or_default();
                json!({
                    "name": &*route.name,
                    "upstream": upstream.map(|pool| &*pool.name),
                    "canary_upstream": canary.map(|canary| &*canary.upstream.name),
                    "canary_weight": canary.map(|canary| canary.weight()),
                    "fallback_upstream": fallback.map(|pool| &*pool.name),
                    "plugins": route.plugins.names().collect::<Vec<_>>(),
                    "cache": cache,
                    "requests": counted.requests,
                    "errors": counted.errors,
                })
            })
            .collect();
        let listeners: Vec<_> = gateway
            .process
            .listeners
            .iter()
            .map(|address| {
                let tls = gateway
                    .process
                    .tls_listeners
                    .iter()
                    .find(|(tls, _)| tls == address);
                json!({
                    "address": address.to_string(),
                    "tls": tls.is_some(),
                    "http2": tls.is_some_and(|(_, http2)| *http2),
                })
            })
            .collect();
        let upstreams: serde_json::Map<String, serde_json::Value> = gateway
            .upstreams
            .iter()
            .map(|(name, upstream)| {
                let targets: Vec<_> = upstream
                    .targets()
                    .iter()
                    .map(|target| {
                        let ejected = upstream.target_ejected(target);
                        let outlier = &target.state.outlier;
                        json!({
                            "address": &*target.label,
                            "weight": target.weight,
                            "healthy": upstream.target_healthy(target),
                            "ejected": ejected,
                            "ejection_ends_in_ms": ejected.then(|| {
                                outlier.ejected_until_ms().saturating_sub(crate::model::upstream::clock_ms())
                            }),
                            "ejections": outlier.ejections(),
                            "in_flight": target.state.in_flight.load(std::sync::atomic::Ordering::Relaxed),
                        })
                    })
                    .collect();
                let discovery = upstream.discovery.as_ref().map(|discovery| {
                    let names: serde_json::Map<String, serde_json::Value> = discovery
                        .set
                        .records()
                        .into_iter()
                        .map(|(name, record)| {
                            let addresses: Vec<String> =
                                record.addresses.iter().map(ToString::to_string).collect();
                            let status = json!({
                                "addresses": addresses,
                                "resolved_at": record.resolved_at.map(|at| at.to_rfc3339()),
                                "error": record.error,
                            });
                            (name.to_string(), status)
                        })
                        .collect();
                    json!({ "names": names })
                });
                let pool = json!({
                    "in_flight": upstream.in_flight(),
                    "max_requests": upstream.max_requests,
                    "panic_mode": upstream.in_panic(),
                    "discovery": discovery,
                    "targets": targets,
                });
                (name.clone(), pool)
            })
            .collect();
        json!({
            "pid": std::process::id(),
            "version": gateway.version,
            "hash": gateway.hash,
            "loaded_at": gateway.loaded_at.to_rfc3339(),
            "ready": self.state.ready(),
            "listeners": listeners,
            "routes": routes,
            "upstreams": upstreams,
            "last_refused_reload": self.state.last_refusal().map(|refusal| json!({
                "at": refusal.at.to_rfc3339(),
                "problems": refusal.problems,
            })),
        })
    }

    /// Whether a POST may proceed: with `admin.token` set, the request must carry it as a
    /// bearer token.
    fn authorized(&self, session: &ServerSession) -> bool {
        let gateway = self.state.gateway();
        let Some(token) = gateway.admin_token.as_deref() else {
            return true;
        };
        let presented = session
            .req_header()
            .headers
            .get(http::header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "))
            .unwrap_or("");
        token_matches(presented, token)
    }

    /// The status page, or its sign-in when `admin.token` is set.
    fn status_page(&self, session: &ServerSession, form: Option<&[u8]>) -> Response<Vec<u8>> {
        let request = session.req_header();
        let visit = Visit {
            query: request.uri.query(),
            cookies: request
                .headers
                .get_all(http::header::COOKIE)
                .iter()
                .filter_map(|value| value.to_str().ok())
                .collect(),
            form,
        };
        status_page::respond(self.state.gateway().admin_token.as_deref(), &visit)
    }
}

#[async_trait]
impl ServeHttp for Admin {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let client = session
            .client_addr()
            .and_then(|addr| addr.as_inet())
            .map(|addr| addr.ip());
        if !self.state.gateway().admin_allow.permits(client) {
            return json_reply(
                StatusCode::FORBIDDEN,
                &json!({"error": "client address not allowed on the admin listener"}),
            );
        }
        let method = session.req_header().method.clone();
        let path = session.req_header().uri.path().to_string();
        match (method, path.as_str()) {
            (Method::GET, "/") => self.status_page(session, None),
            (Method::POST, "/") => {
                let form = read_body(session).await;
                self.status_page(session, Some(&form))
            }
            (Method::GET, "/metrics") => reply(
                StatusCode::OK,
                "text/plain; version=0.0.4",
                self.state.metrics.render(),
            ),
            (Method::GET, "/healthz") => text(StatusCode::OK, "ok"),
            (Method::GET, "/readyz") if self.state.ready() => text(StatusCode::OK, "ready"),
            (Method::GET, "/readyz") => text(StatusCode::SERVICE_UNAVAILABLE, "not ready"),
            (Method::GET, "/status") => json_reply(StatusCode::OK, &self.status()),
            (Method::POST, "/reload") => {
                if !self.authorized(session) {
                    return unauthorized();
                }
                // Drain (and bound) the body so the connection stays usable.
                let _ = read_body(session).await;
                match reload(&self.state) {
                    Ok(version) => json_reply(
                        StatusCode::OK,
                        &json!({"result": "reloaded", "version": version}),
                    ),
                    Err(problems) => json_reply(
                        StatusCode::BAD_REQUEST,
                        &json!({
                            "result": "rejected",
                            "version": self.state.gateway().version,
                            "problems": problems.to_string().lines().collect::<Vec<_>>(),
                        }),
                    ),
                }
            }
            (Method::POST, "/cache/purge") => {
                if !self.authorized(session) {
                    return unauthorized();
                }
                let body = read_body(session).await;
                match Purge::parse(&body) {
                    Ok(purge) => json_reply(StatusCode::OK, &json!({"purged": purge.execute()})),
                    Err(problem) => json_reply(StatusCode::BAD_REQUEST, &json!({"error": problem})),
                }
            }
            (
                _,
                "/" | "/metrics" | "/healthz" | "/readyz" | "/status" | "/reload" | "/cache/purge",
            ) => json_reply(
                StatusCode::METHOD_NOT_ALLOWED,
                &json!({"error": "method not allowed"}),
            ),
            _ => json_reply(
                StatusCode::NOT_FOUND,
                &json!({"error": "no such admin endpoint"}),
            ),
        }
    }
}

async fn read_body(session: &mut ServerSession) -> Vec<u8> {
    let mut body = Vec::new();
    while let Ok(Some(chunk)) = session.read_request_body().await {
        if body.len() + chunk.len() > MAX_BODY {
            break;
        }
        body.extend_from_slice(&chunk);
    }
    body
}

fn reply(status: StatusCode, content_type: &str, body: Vec<u8>) -> Response<Vec<u8>> {
    Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, content_type)
        .header(http::header::CONTENT_LENGTH, body.len())
        .body(body)
        .unwrap_or_default()
}

fn text(status: StatusCode, body: &str) -> Response<Vec<u8>> {
    reply(
        status,
        "text/plain; charset=utf-8",
        body.as_bytes().to_vec(),
    )
}

fn json_reply(status: StatusCode, value: &serde_json::Value) -> Response<Vec<u8>> {
    reply(status, "application/json", value.to_string().into_bytes())
}

fn unauthorized() -> Response<Vec<u8>> {
    let mut response = json_reply(
        StatusCode::UNAUTHORIZED,
        &json!({"error": "admin POST needs Authorization: Bearer <admin.token>"}),
    );
    response.headers_mut().insert(
        http::header::WWW_AUTHENTICATE,
        http::HeaderValue::from_static("Bearer"),
    );
    response
}
