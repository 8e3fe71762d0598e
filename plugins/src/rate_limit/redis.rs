//! The shared counter backend: one atomic Lua script per check on a Redis server (or a
//! Redis Cluster), so every gateway instance enforces one limit together.
//!
//! Each worker thread has its own connection, made on first use on that thread's runtime
//! (driver task and reconnects included), so a check never hands work to another thread
//! and a connection never outlives the runtime it depends on. Each connection is
//! multiplexed: the concurrent checks of a thread are pipelined on one socket. A lost
//! connection is re-made by itself (at most one attempt per second per thread while Redis
//! is down), so limits are enforced again as soon as Redis is back.

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Weak};
use std::time::{Duration, Instant};

use futures_util::future::{BoxFuture, FutureExt, Shared};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{Script, ScriptInvocation};
use serde::Deserialize;

use crate::units;
use crate::{Problem, Retained};

/// A failure is logged at most once per this interval.
const LOG_INTERVAL: Duration = Duration::from_secs(10);
/// Pause between attempts to connect, per worker thread.
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
    ) -> Result<Self, Problem> {
        let link = Link::parse(&config.url).map_err(|message| Problem::new("url", message))?;
        // A check waits this long on the request path: a minute is already an outage.
        let timeout =
            config
                .timeout
                .within("timeout", Duration::from_millis(1), Duration::from_secs(60))?;
        let connection = if background {
            let key = format!("{}|{timeout:?}", config.url);
            retained.get_or_insert_with(&key, || RedisConnection::new(link, timeout, true))
        } else {
            Arc::new(RedisConnection::new(link, timeout, false))
        };
        Ok(Self {
            connection,
            on_error: config.on_error,
        })
    }

    /// Runs `script` on `keys` with `args` and returns its integer results.
    pub async fn eval(
        &self,
        script: &'static Script,
        keys: &[String],
        args: &[String],
    ) -> Result<Vec<i64>, BackendError> {
        let result = self.connection.eval(script, keys, args).await;
        self.connection.note(&result);
        result
    }

    /// Whether this is a Redis Cluster, whose keys live on different nodes: one script can
    /// only touch the keys of one slot.
    pub fn is_cluster(&self) -> bool {
        matches!(self.connection.link, Link::Cluster(_))
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

/// The connections to one configured Redis: one per worker thread, made on first use on
/// that thread's runtime (so its driver task and reconnects run there, and go with it),
/// cached in a thread-local. No check ever crosses threads.
struct RedisConnection {
    id: u64,
    link: Link,
    timeout: Duration,
    /// False for `portcullis check`: never connect.
    enabled: bool,
    started: Instant,
    last_logged_ms: AtomicU64,
    failing: AtomicBool,
}

type Connecting = Shared<BoxFuture<'static, Result<Connection, String>>>;

/// A worker thread's connection to one backend.
enum ThreadSlot {
    Connecting(Connecting),
    Connected(Connection),
    /// The last attempt failed; the next is not made before this instant.
    Failed(Instant),
}

struct ThreadConnection {
    backend: u64,
    alive: Weak<RedisConnection>,
    slot: ThreadSlot,
}

thread_local! {
    static CONNECTIONS: RefCell<Vec<ThreadConnection>> = const { RefCell::new(Vec::new()) };
}

impl RedisConnection {
    fn new(link: Link, timeout: Duration, enabled: bool) -> Self {
        static NEXT_ID: AtomicU64 = AtomicU64::new(1);
        Self {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            link,
            timeout,
            enabled,
            started: Instant::now(),
            last_logged_ms: AtomicU64::new(0),
            failing: AtomicBool::new(false),
        }
    }

    /// This thread's connection, or the attempt to make it.
    fn thread_connection(self: &Arc<Self>) -> Result<Result<Connection, Connecting>, BackendError> {
        CONNECTIONS.with(|cell| {
            let mut connections = cell.borrow_mut();
            if let Some(entry) = connections.iter().find(|entry| entry.backend == self.id) {
                return match &entry.slot {
                    ThreadSlot::Connected(conn) => Ok(Ok(conn.clone())),
                    ThreadSlot::Connecting(attempt) => Ok(Err(attempt.clone())),
                    ThreadSlot::Failed(until) if Instant::now() < *until => {
                        Err(BackendError("not connected (retrying)".into()))
                    }
                    ThreadSlot::Failed(_) => Ok(Err(self.attempt(&mut connections))),
                };
            }
            // Forget the connections of configurations gone since.
            connections.retain(|entry| entry.alive.strong_count() > 0);
            Ok(Err(self.attempt(&mut connections)))
        })
    }

    fn attempt(self: &Arc<Self>, connections: &mut Vec<ThreadConnection>) -> Connecting {
        let link = self.link.clone();
        let timeout = self.timeout;
        let attempt: Connecting = async move {
            let patience = timeout.max(Duration::from_millis(250));
            match tokio::time::timeout(patience, link.connect(timeout)).await {
                Ok(Ok(conn)) => Ok(conn),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err(format!("no connection within {patience:?}")),
            }
        }
        .boxed()
        .shared();
        let slot = ThreadSlot::Connecting(attempt.clone());
        match connections
            .iter_mut()
            .find(|entry| entry.backend == self.id)
        {
            Some(entry) => entry.slot = slot,
            None => connections.push(ThreadConnection {
                backend: self.id,
                alive: Arc::downgrade(self),
                slot,
            }),
        }
        attempt
    }

    fn settle(&self, slot: ThreadSlot) {
        CONNECTIONS.with(|cell| {
            if let Some(entry) = cell
                .borrow_mut()
                .iter_mut()
                .find(|entry| entry.backend == self.id)
            {
                if matches!(entry.slot, ThreadSlot::Connecting(_)) {
                    entry.slot = slot;
                }
            }
        });
    }

    async fn eval(
        self: &Arc<Self>,
        script: &'static Script,
        keys: &[String],
        args: &[String],
    ) -> Result<Vec<i64>, BackendError> {
        if !self.enabled {
            return Err(BackendError("not connected".into()));
        }
        let mut conn = match self.thread_connection()? {
            Ok(conn) => conn,
            Err(attempt) => match attempt.await {
                Ok(conn) => {
                    self.settle(ThreadSlot::Connected(conn.clone()));
                    conn
                }
                Err(e) => {
                    self.settle(ThreadSlot::Failed(Instant::now() + CONNECT_RETRY));
                    return Err(BackendError(e));
                }
            },
        };
        let mut invocation = script.prepare_invoke();
        for key in keys {
            invocation.key(key);
        }
        for arg in args {
            invocation.arg(arg);
        }
        match tokio::time::timeout(self.timeout, conn.invoke(&invocation)).await {
            Ok(result) => result.map_err(|e| BackendError(e.to_string())),
            Err(_) => Err(BackendError(format!("no answer within {:?}", self.timeout))),
        }
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

/// Checks every key of one request, then counts in all of them or in none (so a request
/// refused by one rule is not counted by another). KEYS: one counter per rule; ARGV: three
/// per key, `b`, cost, capacity (token bucket) or `w`, limit, window (sliding window).
/// Returns five integers per key (see the algorithms' functions). Loaded once per process
/// (EVALSHA, falling back to EVAL on NOSCRIPT).
pub static CHECK: LazyLock<Script> = LazyLock::new(|| {
    with_functions(
        r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local replies, writes, all = {}, {}, true
for i, key in ipairs(KEYS) do
  local kind, a, b = ARGV[3 * i - 2], tonumber(ARGV[3 * i - 1]), tonumber(ARGV[3 * i])
  local reply, write
  if kind == 'b' then reply, write = bucket(key, now, a, b) else reply, write = window(key, now, a, b) end
  for _, n in ipairs(reply) do replies[#replies + 1] = n end
  if write then writes[#writes + 1] = write else all = false end
end
if all then for _, write in ipairs(writes) do write() end end
return replies
"#,
    )
});

/// Gives back what [`CHECK`] counted. KEYS: the counters; ARGV: two per key, `b`, cost
/// or `w`, the window index the check replied.
pub static REFUND: LazyLock<Script> = LazyLock::new(|| {
    with_functions(
        r#"
for i, key in ipairs(KEYS) do
  local kind, a = ARGV[2 * i - 1], tonumber(ARGV[2 * i])
  if kind == 'b' then bucket_refund(key, a) else window_refund(key, a) end
end
return {}
"#,
    )
});

/// A script whose `body` calls the algorithms' Lua functions.
fn with_functions(body: &str) -> Script {
    Script::new(&format!(
        "{}{}{body}",
        super::token_bucket::REDIS_FUNCTIONS,
        super::sliding_window::REDIS_FUNCTIONS,
    ))
}

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
