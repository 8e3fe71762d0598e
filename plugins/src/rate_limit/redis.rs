//! The shared counter backend: one atomic Lua script per check on a Redis server (or a
//! Redis Cluster), so every gateway instance enforces one limit together.
//!
//! The connection lives on a runtime of its own (one background thread per configured
//! Redis), so it never depends on a Pingora runtime that may shut down first; each check
//! is handed to it and awaited with the configured `timeout`. The connection is
//! multiplexed: concurrent checks are pipelined on one socket. It is established in the
//! background and re-established by itself after Redis comes back.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, OnceLock};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{Script, ScriptInvocation};
use serde::Deserialize;
use tokio::runtime::Handle;
use tokio::sync::oneshot;

use crate::units;
use crate::{ConfigProblem, Retained};

/// A failure is logged at most once per this interval.
const LOG_INTERVAL: Duration = Duration::from_secs(10);
/// Pause between attempts to establish the first connection.
const CONNECT_RETRY: Duration = Duration::from_secs(1);

/// The top-level `redis:` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    /// `redis://[user:password@]host:port[/db]`, `rediss://` for TLS, or
    /// `redis+cluster://host:port[,host:port...]` for a Redis Cluster.
    pub url: String,
    /// Longest wait for one check's answer (default 50ms).
    #[serde(default = "RedisConfig::default_timeout")]
    pub timeout: units::Duration,
    /// What a check does when Redis does not answer in time.
    #[serde(default)]
    pub on_error: OnError,
}

impl RedisConfig {
    fn default_timeout() -> units::Duration {
        units::Duration(Duration::from_millis(50))
    }
}

/// `redis.on_error`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnError {
    /// Let the request through (fail open); the failure is counted.
    #[default]
    Allow,
    /// Refuse the request with 503 `RATE_LIMIT_BACKEND_DOWN` (fail closed).
    Deny,
}

/// How a check failed.
#[derive(Debug, Clone)]
pub struct BackendError(pub String);

/// The compiled `redis:` section, handed to plugins through the plugin environment.
pub struct RedisBackend {
    connection: Arc<RedisConnection>,
    timeout: Duration,
    /// What a check does when Redis fails.
    pub on_error: OnError,
}

impl RedisBackend {
    /// Checks the section and, when `background` allows, connects (in the background). The
    /// connection of the previous configuration is kept when the URL and timeout are
    /// unchanged.
    pub fn new(
        config: &RedisConfig,
        retained: &Retained,
        background: bool,
    ) -> Result<Self, ConfigProblem> {
        let link = Link::parse(&config.url).map_err(|message| ConfigProblem {
            path: "url".into(),
            message,
        })?;
        let timeout = config.timeout.0;
        if timeout.is_zero() {
            return Err(ConfigProblem {
                path: "timeout".into(),
                message: "must be greater than 0".into(),
            });
        }
        let connection = if background {
            let key = format!("{}|{timeout:?}", config.url);
            retained.get_or_insert_with(&key, || RedisConnection::start(link, timeout))
        } else {
            Arc::new(RedisConnection::idle())
        };
        Ok(Self {
            connection,
            timeout,
            on_error: config.on_error,
        })
    }

    /// Runs `script` on `key` with `args` and returns its integer results.
    pub async fn eval(
        &self,
        script: &'static Script,
        key: String,
        args: [String; 2],
    ) -> Result<Vec<i64>, BackendError> {
        let result = self.connection.eval(script, key, args, self.timeout).await;
        self.connection.note(&result);
        result
    }
}

/// Where the Redis is.
#[derive(Clone)]
enum Link {
    Single(redis::Client),
    Cluster(ClusterClient),
}

impl Link {
    fn parse(url: &str) -> Result<Self, String> {
        let cluster = url
            .strip_prefix("redis+cluster://")
            .map(|rest| ("redis", rest))
            .or_else(|| {
                url.strip_prefix("rediss+cluster://")
                    .map(|rest| ("rediss", rest))
            });
        match cluster {
            Some((scheme, nodes)) => {
                let nodes: Vec<String> = nodes
                    .split(',')
                    .map(|node| format!("{scheme}://{}", node.trim()))
                    .collect();
                ClusterClient::new(nodes)
                    .map(Link::Cluster)
                    .map_err(|e| format!("invalid Redis Cluster URL: {e}"))
            }
            None => redis::Client::open(url)
                .map(Link::Single)
                .map_err(|e| format!("invalid Redis URL: {e}")),
        }
    }

    async fn connect(&self, timeout: Duration) -> redis::RedisResult<Connection> {
        match self {
            Link::Single(client) => {
                let config = ConnectionManagerConfig::new()
                    .set_number_of_retries(1)
                    .set_max_delay(100)
                    .set_connection_timeout(timeout.max(Duration::from_millis(250)))
                    .set_response_timeout(timeout);
                ConnectionManager::new_with_config(client.clone(), config)
                    .await
                    .map(|conn| Connection::Single(Box::new(conn)))
            }
            Link::Cluster(client) => client.get_async_connection().await.map(Connection::Cluster),
        }
    }
}

/// An established (multiplexed, self-reconnecting) connection.
#[derive(Clone)]
enum Connection {
    Single(Box<ConnectionManager>),
    Cluster(ClusterConnection),
}

impl Connection {
    async fn invoke(&mut self, invocation: &ScriptInvocation<'_>) -> redis::RedisResult<Vec<i64>> {
        match self {
            Connection::Single(conn) => invocation.invoke_async(conn.as_mut()).await,
            Connection::Cluster(conn) => invocation.invoke_async(conn).await,
        }
    }
}

/// The connection and the runtime that owns it; the runtime's thread ends when this is
/// dropped (with the last configuration that uses it).
struct RedisConnection {
    established: Arc<OnceLock<Connection>>,
    runtime: Option<Handle>,
    _shutdown: Option<oneshot::Sender<()>>,
    started: Instant,
    last_logged_ms: AtomicU64,
    failing: AtomicBool,
}

impl RedisConnection {
    /// A connection that never connects (`portcullis check`).
    fn idle() -> Self {
        Self {
            established: Arc::default(),
            runtime: None,
            _shutdown: None,
            started: Instant::now(),
            last_logged_ms: AtomicU64::new(0),
            failing: AtomicBool::new(false),
        }
    }

    fn start(link: Link, timeout: Duration) -> Self {
        let mut connection = Self::idle();
        let (shutdown, stopped) = oneshot::channel::<()>();
        let (handle_tx, handle_rx) = std::sync::mpsc::channel();
        let established = Arc::clone(&connection.established);
        let spawned = std::thread::Builder::new()
            .name("portcullis-redis".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(e) => {
                        log::error!("cannot start the Redis rate-limit runtime: {e}");
                        return;
                    }
                };
                let _ = handle_tx.send(runtime.handle().clone());
                runtime.block_on(async move {
                    let connect = async {
                        let mut logged = false;
                        loop {
                            match link.connect(timeout).await {
                                Ok(conn) => {
                                    let _ = established.set(conn);
                                    log::info!("rate-limit backend redis connected");
                                    return;
                                }
                                Err(e) if !logged => {
                                    log::warn!(
                                        "rate-limit backend redis unreachable, retrying: {e}"
                                    );
                                    logged = true;
                                }
                                Err(_) => {}
                            }
                            tokio::time::sleep(CONNECT_RETRY).await;
                        }
                    };
                    let mut stopped = stopped;
                    let connected = tokio::select! {
                        () = connect => true,
                        _ = &mut stopped => false,
                    };
                    if connected {
                        let _ = stopped.await;
                    }
                });
            });
        match spawned {
            Ok(_) => {
                connection.runtime = handle_rx.recv().ok();
                connection._shutdown = Some(shutdown);
            }
            Err(e) => log::error!("cannot start the Redis rate-limit thread: {e}"),
        }
        connection
    }

    async fn eval(
        &self,
        script: &'static Script,
        key: String,
        args: [String; 2],
        timeout: Duration,
    ) -> Result<Vec<i64>, BackendError> {
        let (Some(runtime), Some(conn)) = (&self.runtime, self.established.get()) else {
            return Err(BackendError("not connected".into()));
        };
        let mut conn = conn.clone();
        let task = runtime.spawn(async move {
            let mut invocation = script.key(key);
            invocation.arg(&args[0]).arg(&args[1]);
            match tokio::time::timeout(timeout, conn.invoke(&invocation)).await {
                Ok(result) => result.map_err(|e| BackendError(e.to_string())),
                Err(_) => Err(BackendError(format!("no answer within {timeout:?}"))),
            }
        });
        task.await
            .unwrap_or_else(|e| Err(BackendError(format!("check abandoned: {e}"))))
    }

    /// Logs a failure at most once per [`LOG_INTERVAL`], and the recovery once.
    fn note(&self, result: &Result<Vec<i64>, BackendError>) {
        match result {
            Ok(_) => {
                if self.failing.load(Ordering::Relaxed)
                    && self.failing.swap(false, Ordering::Relaxed)
                {
                    log::info!("rate-limit backend redis answers again");
                }
            }
            Err(BackendError(e)) => {
                self.failing.store(true, Ordering::Relaxed);
                let now = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
                let last = self.last_logged_ms.load(Ordering::Relaxed);
                let due = last == 0 || now.saturating_sub(last) >= LOG_INTERVAL.as_millis() as u64;
                if due
                    && self
                        .last_logged_ms
                        .compare_exchange(last, now.max(1), Ordering::Relaxed, Ordering::Relaxed)
                        .is_ok()
                {
                    log::warn!(
                        "rate-limit backend redis failed (logged once per {LOG_INTERVAL:?}): {e}"
                    );
                }
            }
        }
    }
}

/// The scripts, loaded once per process (EVALSHA, falling back to EVAL on NOSCRIPT).
pub static TOKEN_BUCKET: LazyLock<Script> =
    LazyLock::new(|| Script::new(super::token_bucket::REDIS_SCRIPT));
/// See [`TOKEN_BUCKET`].
pub static SLIDING_WINDOW: LazyLock<Script> =
    LazyLock::new(|| Script::new(super::sliding_window::REDIS_SCRIPT));

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked_at_load() {
        assert!(Link::parse("redis://127.0.0.1:6379").is_ok());
        assert!(Link::parse("redis+cluster://10.0.0.1:7000,10.0.0.2:7000").is_ok());
        assert!(Link::parse("http://example.com").is_err());
    }
}
