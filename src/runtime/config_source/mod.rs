//! The configuration from etcd (`--config-source etcd://...`): one YAML document at
//! `PREFIX/config`, read at start, then watched; every revision goes through the reload
//! path (parse → compile → swap). Each node reports what it applied under
//! `PREFIX/nodes/<id>`, and keeps the last applied document in a local cache to start
//! from when etcd is down.
//!
//! - [`etcd`]: the watcher, a background service (reconnects with backoff, re-reads the
//!   document after an outage or a compaction).
//! - [`node_status`]: the JSON a node publishes under its lease-bound key.
//! - [`cache`]: the local copy of the last applied document.

pub mod cache;
pub mod etcd;
pub mod node_status;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use etcd_client::{Client, ConnectOptions, OpenSslClientConfig};
use tokio::sync::Notify;

use crate::config::source::{Bootstrap, EtcdSource};

/// The configuration document as stored in etcd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Document {
    /// The YAML text, exactly as stored.
    pub text: String,
    /// The etcd revision that last modified it (`mod_revision`).
    pub revision: i64,
}

impl Document {
    /// The document in `kv`. Bytes that are not UTF-8 are kept as U+FFFD, which the
    /// configuration parser refuses (see [`Document::is_text`]).
    pub fn of(kv: &etcd_client::KeyValue) -> Document {
        Document {
            text: String::from_utf8_lossy(kv.value()).into_owned(),
            revision: kv.mod_revision(),
        }
    }
}

/// Whether `kv`'s value is UTF-8 text (a document written past `config push` may not be).
pub fn is_text(kv: &etcd_client::KeyValue) -> bool {
    std::str::from_utf8(kv.value()).is_ok()
}

/// A revision the node refused, kept until a later one applies.
#[derive(Debug, Clone)]
pub struct Refusal {
    /// The refused revision.
    pub revision: i64,
    /// Every problem, one `FILE: path: message` each.
    pub problems: Vec<String>,
}

/// What a node knows about its configuration source, shared by the watcher, the admin
/// endpoints and the metrics.
pub struct SourceStatus {
    /// Where the configuration comes from.
    pub source: EtcdSource,
    /// The bootstrap settings (credentials, TLS, cache file, node id).
    pub bootstrap: Bootstrap,
    /// The bootstrap file, when one was given (handed on to an upgraded process).
    pub bootstrap_path: Option<PathBuf>,
    applied: AtomicI64,
    up: AtomicBool,
    refusal: ArcSwapOption<Refusal>,
    resync: Notify,
    /// The connection and lease of the watcher's current session, revoked on the way out.
    lease: std::sync::Mutex<Option<(Client, i64)>>,
}

impl SourceStatus {
    /// The status of a node that starts on `revision` of `source`, read from etcd
    /// (`up`) or from the cache.
    pub fn new(
        source: EtcdSource,
        bootstrap: Bootstrap,
        bootstrap_path: Option<PathBuf>,
        revision: i64,
    ) -> Self {
        Self {
            source,
            bootstrap,
            bootstrap_path,
            applied: AtomicI64::new(revision),
            up: AtomicBool::new(false),
            refusal: ArcSwapOption::empty(),
            resync: Notify::new(),
            lease: std::sync::Mutex::new(None),
        }
    }

    /// The etcd revision of the document in force.
    pub fn applied_revision(&self) -> i64 {
        self.applied.load(Ordering::Acquire)
    }

    /// Whether the node is connected to etcd and watching.
    pub fn up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    /// The last refused revision, unless a later one applied since.
    pub fn refusal(&self) -> Option<Arc<Refusal>> {
        self.refusal.load_full()
    }

    /// Asks the watcher to read the whole document again (SIGHUP, `POST /reload`).
    pub fn resync(&self) {
        self.resync.notify_one();
    }

    /// The command-line arguments that start a process on this same source.
    pub fn run_arguments(&self) -> Vec<std::ffi::OsString> {
        let mut args = vec!["--config-source".into(), self.source.to_string().into()];
        if let Some(path) = &self.bootstrap_path {
            args.push("-c".into());
            args.push(path.clone().into_os_string());
        }
        args
    }

    /// Revokes the lease of the node's status key, so the key goes now rather than when
    /// the lease runs out (10 s after the process): `config push --wait` no longer waits
    /// for a process that is on its way out. Bounded by `timeout`; best effort.
    pub async fn release(&self, timeout: Duration) {
        let held = self
            .lease
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        let Some((mut client, lease)) = held else {
            return;
        };
        match tokio::time::timeout(timeout, client.lease_revoke(lease)).await {
            Ok(Ok(_)) => log::debug!("revoked the lease of this node's status key"),
            Ok(Err(e)) => log::debug!("cannot revoke the status key's lease: {e}"),
            Err(_) => log::debug!("revoking the status key's lease timed out"),
        }
    }

    fn set_lease(&self, client: &Client, lease: i64) {
        *self
            .lease
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some((client.clone(), lease));
    }

    fn set_applied(&self, revision: i64) {
        self.applied.store(revision, Ordering::Release);
        self.refusal.store(None);
    }

    fn set_refused(&self, refusal: Refusal) {
        self.refusal.store(Some(Arc::new(refusal)));
    }

    fn set_up(&self, up: bool) {
        self.up.store(up, Ordering::Release);
    }

    async fn resync_requested(&self) {
        self.resync.notified().await;
    }
}

/// Connects to the endpoints of `source` with the bootstrap's credentials and TLS. The
/// connection is lazy; the first request tells whether etcd answers.
pub async fn connect(source: &EtcdSource, bootstrap: &Bootstrap) -> Result<Client, String> {
    let settings = &bootstrap.config_source;
    let dial = bootstrap.dial_timeout();
    let mut options = ConnectOptions::new()
        .with_connect_timeout(dial)
        // A partitioned etcd shows as a failed HTTP/2 ping, not only as a closed socket.
        .with_keep_alive(Duration::from_secs(2), dial.min(Duration::from_secs(3)))
        .with_keep_alive_while_idle(true);
    if let (Some(user), Some(password)) = (&settings.username, &settings.password) {
        options = options.with_user(user.clone(), password.clone());
    }
    let scheme = match &settings.tls {
        Some(tls) => {
            let read = |path: &Option<String>| -> Result<Vec<u8>, String> {
                match path {
                    Some(path) => std::fs::read(path)
                        .map_err(|e| format!("config_source.tls: cannot read {path}: {e}")),
                    None => Ok(Vec::new()),
                }
            };
            let (ca, cert, key) = (
                read(&tls.ca_file)?,
                read(&tls.cert_file)?,
                read(&tls.key_file)?,
            );
            options = options.with_openssl_tls(
                OpenSslClientConfig::default()
                    .ca_cert_pem(&ca)
                    .client_cert_pem_and_key(&cert, &key),
            );
            "https"
        }
        None => "http",
    };
    let endpoints: Vec<String> = source
        .endpoints
        .iter()
        .map(|endpoint| format!("{scheme}://{endpoint}"))
        .collect();
    Client::connect(endpoints, Some(options))
        .await
        .map_err(|e| format!("cannot connect to {source}: {e}"))
}

/// Reads the document at `PREFIX/config` (`None` when the key does not exist), and the
/// store's revision at the time of the read.
pub async fn read_document(
    client: &mut Client,
    source: &EtcdSource,
) -> Result<(Option<Document>, i64), etcd_client::Error> {
    let response = client.get(source.config_key(), None).await?;
    let read_at = response.header().map_or(0, |header| header.revision());
    let document = response.kvs().first().map(Document::of);
    Ok((document, read_at))
}

/// Where a node starts from, and whether that was etcd or the cache.
pub struct Start {
    /// The document to start on.
    pub document: Document,
    /// Whether it came from the cache because etcd could not be read.
    pub from_cache: bool,
}

/// The document a node starts on: read from etcd within the dial timeout, or, when etcd
/// cannot be reached, the cache file's; an error says why neither is there.
pub fn initial_document(source: &EtcdSource, bootstrap: &Bootstrap) -> Result<Start, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start a runtime to read etcd: {e}"))?;
    // Connect and read within twice the dial timeout: once to connect, once to answer.
    let deadline = bootstrap.dial_timeout() * 2;
    let read = runtime.block_on(async {
        let mut client = connect(source, bootstrap).await?;
        let key = source.config_key();
        match tokio::time::timeout(deadline, client.get(key.as_str(), None)).await {
            Ok(Ok(response)) => match response.kvs().first() {
                Some(kv) if !is_text(kv) => Err(format!("{key} in {source} is not UTF-8 text")),
                kv => Ok(kv.map(Document::of)),
            },
            Ok(Err(e)) => Err(format!(
                "cannot read {} from {source}: {e}",
                source.config_key()
            )),
            Err(_) => Err(format!("{source} did not answer within {deadline:?}")),
        }
    });
    let cache_file = bootstrap.config_source.cache_file.as_deref();
    match read {
        Ok(Some(document)) => Ok(Start {
            document,
            from_cache: false,
        }),
        Ok(None) => Err(format!(
            "{source} has no configuration at {}: write one with `portcullis config push -c FILE --config-source {source}`",
            source.config_key()
        )),
        Err(unreachable) => match cache_file {
            None => Err(format!(
                "{unreachable}; and no config_source.cache_file is set to start from"
            )),
            Some(path) => match cache::read(std::path::Path::new(path)) {
                Ok(Some(document)) => Ok(Start {
                    document,
                    from_cache: true,
                }),
                Ok(None) => Err(format!(
                    "{unreachable}; and the cache file {path} does not exist yet (no configuration was ever applied here)"
                )),
                Err(e) => Err(format!("{unreachable}; and {e}")),
            },
        },
    }
}
