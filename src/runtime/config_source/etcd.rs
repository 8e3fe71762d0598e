//! The watcher: a background service that keeps the node on the latest revision of
//! `PREFIX/config` and its status key `PREFIX/nodes/<id>` alive.
//!
//! One session is one connection: grant a lease, read the whole document (apply it when
//! its revision is not the one in force), publish the node's status under the lease,
//! then watch from the read revision + 1, keeping the lease alive. Any failure ends the
//! session; the node keeps serving what it has, and a new session starts after a
//! backoff (0.2 s doubling to 5 s). Starting each session with a full read is what makes
//! a node catch up after an outage, and a watch that was compacted away ends the session
//! the same way.
//!
//! A graceful upgrade runs two processes under one node id: the old one keeps accepting
//! for Pingora's close timeout after handing its sockets over, and keeps following the
//! document meanwhile. So that `config push --wait` waits for both, the old process moves
//! its report to `PREFIX/nodes/<id>/draining-<pid>` when the upgrade begins (leaving
//! `PREFIX/nodes/<id>` to the new process), and revokes its lease when it stops
//! accepting ([`super::SourceStatus::release`]).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{Client, Compare, CompareOp, EventType, PutOptions, Txn, TxnOp, WatchOptions};
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use super::node_status::{default_node_id, NodeReport, RefusedRevision};
use super::{cache, connect, is_text, Document, Refusal, SourceStatus};
use crate::model::gateway::source_hash;
use crate::runtime::reload::apply_document;
use crate::runtime::state::State;

/// Lifetime of the node's status key without keep-alives: how long a dead node stays
/// listed.
const LEASE_TTL_SECONDS: i64 = 10;
/// How often the lease is renewed (a third of its lifetime).
const KEEP_ALIVE_EVERY: Duration = Duration::from_secs(3);
/// First pause after a failed session; doubles up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(200);
/// Longest pause between two sessions.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Why a session ended.
type SessionError = String;

/// Keeps the node on the latest revision of its etcd configuration.
pub struct EtcdWatcher {
    state: Arc<State>,
    status: Arc<SourceStatus>,
}

impl EtcdWatcher {
    /// A watcher for `state`, whose configuration comes from `status.source`.
    pub fn new(state: Arc<State>, status: Arc<SourceStatus>) -> Self {
        Self { state, status }
    }

    /// This node's name under `PREFIX/nodes/`.
    fn node_id(&self) -> String {
        self.status
            .bootstrap
            .config_source
            .node_id
            .clone()
            .unwrap_or_else(|| default_node_id(self.first_listener().map_or(0, |a| a.port())))
    }

    /// The key this process reports under: the node's, or once a graceful upgrade began
    /// (`draining`), its own next to the new process's.
    fn report_key(&self, draining: bool) -> String {
        let node_key = format!("{}{}", self.status.source.nodes_prefix(), self.node_id());
        if draining {
            format!("{node_key}/draining-{}", std::process::id())
        } else {
            node_key
        }
    }

    fn first_listener(&self) -> Option<std::net::SocketAddr> {
        self.state.gateway().process.listeners.first().copied()
    }

    fn set_up(&self, up: bool) {
        self.status.set_up(up);
        self.state.metrics.config_source_up.set(i64::from(up));
    }

    /// Applies `document` unless it is the revision in force or one refused already;
    /// says whether anything changed that the status key should show.
    fn apply(&self, document: &Document) -> bool {
        let status = &self.status;
        if document.revision == status.applied_revision()
            || status
                .refusal()
                .is_some_and(|r| r.revision == document.revision)
        {
            return false;
        }
        let file = format!(
            "{} (revision {})",
            status.source.config_key(),
            document.revision
        );
        // The same text again (a re-push, a revert): nothing to compile.
        let unchanged = source_hash(&document.text) == self.state.gateway().hash;
        let applied = unchanged || apply_document(&self.state, &file, &document.text).is_ok();
        if applied {
            log::info!(
                "applied revision {} of {}",
                document.revision,
                status.source.config_key()
            );
            status.set_applied(document.revision);
            self.state.metrics.config_revision.set(document.revision);
            self.cache(document);
        } else {
            // `apply_document` logged the problems and kept them for /status.
            let problems = self
                .state
                .last_refusal()
                .map(|refusal| refusal.problems.clone())
                .unwrap_or_default();
            status.set_refused(Refusal {
                revision: document.revision,
                problems,
            });
        }
        true
    }

    /// Keeps `document` (the one in force) in the cache file, unless it is there already.
    fn cache(&self, document: &Document) {
        let Some(path) = &self.status.bootstrap.config_source.cache_file else {
            return;
        };
        let path = PathBuf::from(path);
        if matches!(cache::read(&path), Ok(Some(cached)) if cached == *document) {
            return;
        }
        if let Err(e) = cache::write(&path, document) {
            log::warn!("{e}");
        }
    }

    /// The document's bytes are not UTF-8: keep serving, report it as refused.
    fn not_text(&self, revision: i64) {
        let problem = format!(
            "{} (revision {revision}): the document is not UTF-8 text; nothing was applied",
            self.status.source.config_key()
        );
        log::warn!("{problem}");
        self.status.set_refused(Refusal {
            revision,
            problems: vec![problem],
        });
    }

    /// The document was deleted from etcd: keep serving, report it as refused.
    fn deleted(&self, revision: i64) {
        let problem = format!(
            "{}: the configuration was deleted from etcd; the node keeps serving revision {}",
            self.status.source.config_key(),
            self.status.applied_revision()
        );
        log::warn!("{problem}");
        self.status.set_refused(Refusal {
            revision,
            problems: vec![problem],
        });
    }

    /// Writes the node's status key, bound to `lease`.
    async fn publish(
        &self,
        client: &mut Client,
        key: &str,
        lease: i64,
    ) -> Result<(), SessionError> {
        let report = NodeReport {
            address: self
                .status
                .bootstrap
                .config_source
                .advertise_address
                .clone()
                .or_else(|| self.first_listener().map(|a| a.to_string()))
                .unwrap_or_default(),
            revision: self.status.applied_revision(),
            time: chrono::Utc::now().to_rfc3339(),
            refused: self.status.refusal().map(|refusal| RefusedRevision {
                revision: refusal.revision,
                problems: refusal.problems.clone(),
            }),
        };
        let value = serde_json::to_string(&report).map_err(|e| e.to_string())?;
        client
            .put(key, value, Some(PutOptions::new().with_lease(lease)))
            .await
            .map_err(|e| format!("cannot write {key}: {e}"))?;
        Ok(())
    }

    /// Moves this process's report from `node_key` to `draining_key`. The node key is
    /// deleted only while it is still bound to this process's lease: the new process may
    /// have written its own report there already.
    async fn hand_over(
        &self,
        client: &mut Client,
        node_key: &str,
        draining_key: &str,
        lease: i64,
    ) -> Result<(), SessionError> {
        let ours = Compare::lease(node_key, CompareOp::Equal, lease);
        client
            .txn(
                Txn::new()
                    .when([ours])
                    .and_then([TxnOp::delete(node_key, None)]),
            )
            .await
            .map_err(|e| format!("cannot hand {node_key} over: {e}"))?;
        self.publish(client, draining_key, lease).await?;
        log::info!("handing over: reporting as {draining_key} until this process stops");
        Ok(())
    }

    /// Reads the whole document and applies it; returns the revision to watch after.
    async fn sync(&self, client: &mut Client) -> Result<i64, SessionError> {
        let source = &self.status.source;
        let response = client
            .get(source.config_key(), None)
            .await
            .map_err(|e| format!("cannot read {}: {e}", source.config_key()))?;
        let read_at = response.header().map_or(0, |header| header.revision());
        if let Some(kv) = response.kvs().first().filter(|kv| !is_text(kv)) {
            if self
                .status
                .refusal()
                .is_none_or(|r| r.revision != kv.mod_revision())
            {
                self.not_text(kv.mod_revision());
            }
            return Ok(read_at);
        }
        match response.kvs().first().map(Document::of) {
            Some(document) => {
                if document.revision == self.status.applied_revision() {
                    // The one the node started on: cache it if that was not done yet.
                    self.cache(&document);
                }
                self.apply(&document);
            }
            None => self.deleted(read_at),
        }
        Ok(read_at)
    }

    /// One connection's life: see the module header. Returns only on failure.
    async fn session(&self) -> Result<(), SessionError> {
        let source = &self.status.source;
        let mut client = connect(source, &self.status.bootstrap).await?;
        let mut draining = self.state.is_handed_over();
        let mut node_key = self.report_key(draining);
        let lease = client
            .lease_grant(LEASE_TTL_SECONDS, None)
            .await
            .map_err(|e| format!("{source} is unreachable: {e}"))?
            .id();
        self.status.set_lease(&client, lease);
        let (mut keeper, mut keep_alives) = client
            .lease_keep_alive(lease)
            .await
            .map_err(|e| format!("cannot keep a lease alive on {source}: {e}"))?;
        let mut read_at = self.sync(&mut client).await?;
        self.publish(&mut client, &node_key, lease).await?;
        let watch_from = |revision: i64| WatchOptions::new().with_start_revision(revision + 1);
        let mut watch = client
            .watch(source.config_key(), Some(watch_from(read_at)))
            .await
            .map_err(|e| format!("cannot watch {}: {e}", source.config_key()))?;
        self.set_up(true);
        log::info!(
            "configuration source {source} up: serving revision {}, reporting as {node_key}",
            self.status.applied_revision()
        );
        let mut renew = tokio::time::interval(KEEP_ALIVE_EVERY);
        loop {
            tokio::select! {
                message = watch.message() => {
                    let response = message
                        .map_err(|e| format!("the watch on {source} failed: {e}"))?
                        .ok_or_else(|| format!("{source} closed the watch"))?;
                    if response.compact_revision() > 0 || response.canceled() {
                        // Revisions the node missed were compacted away: read it all again.
                        log::info!(
                            "watch on {} cancelled (compacted to {}): reading it again",
                            source.config_key(),
                            response.compact_revision()
                        );
                        return Err("the watch was compacted away".into());
                    }
                    let mut changed = false;
                    for event in response.events() {
                        let Some(kv) = event.kv() else { continue };
                        read_at = read_at.max(kv.mod_revision());
                        match event.event_type() {
                            EventType::Put if !is_text(kv) => {
                                self.not_text(kv.mod_revision());
                                changed = true;
                            }
                            EventType::Put => changed |= self.apply(&Document::of(kv)),
                            EventType::Delete => {
                                self.deleted(kv.mod_revision());
                                changed = true;
                            }
                        }
                    }
                    if changed {
                        self.publish(&mut client, &node_key, lease).await?;
                    }
                }
                _ = renew.tick() => {
                    keeper
                        .keep_alive()
                        .await
                        .map_err(|e| format!("cannot renew the lease on {source}: {e}"))?;
                }
                answer = keep_alives.message() => {
                    let answer = answer
                        .map_err(|e| format!("lease keep-alive on {source} failed: {e}"))?
                        .ok_or_else(|| format!("{source} closed the lease keep-alive"))?;
                    if answer.ttl() <= 0 {
                        return Err(format!("the lease of {node_key} expired"));
                    }
                }
                () = self.status.resync_requested() => {
                    read_at = read_at.max(self.sync(&mut client).await?);
                    self.publish(&mut client, &node_key, lease).await?;
                }
                () = self.state.handed_over(), if !draining => {
                    let draining_key = self.report_key(true);
                    self.hand_over(&mut client, &node_key, &draining_key, lease).await?;
                    node_key = draining_key;
                    draining = true;
                }
            }
        }
    }
}

#[async_trait]
impl BackgroundService for EtcdWatcher {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        // The lifecycle swaps the initial configuration in first; a revision applied
        // before that would be overwritten.
        self.state.activated().await;
        self.state
            .metrics
            .config_revision
            .set(self.status.applied_revision());
        let mut backoff = MIN_BACKOFF;
        loop {
            let ended = tokio::select! {
                _ = shutdown.changed() => return,
                ended = self.session() => ended,
            };
            let was_up = self.status.up();
            self.set_up(false);
            let reason = ended.err().unwrap_or_default();
            if was_up {
                backoff = MIN_BACKOFF;
                log::warn!(
                    "configuration source lost ({reason}); serving revision {} and retrying",
                    self.status.applied_revision()
                );
            } else {
                log::debug!("configuration source still down: {reason}");
            }
            tokio::select! {
                _ = shutdown.changed() => return,
                () = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }
}
