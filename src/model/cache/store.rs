//! The in-memory cache store of one route: pingora-cache's `Storage` over sharded maps,
//! bounded by a pingora-lru eviction manager, and indexed by host and path for purges.
//!
//! An entry is complete or absent: a body becomes visible only once fully received
//! (no streaming partial writes), so requests coalesced behind the cache lock read it
//! after the writer finishes. Each primary key (route, host, path and query) owns a
//! *family* of variants, one per `Vary` selection, so a purge removes them all at once.

use std::any::Any;
use std::collections::HashMap;
use std::sync::{Mutex, OnceLock, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use http::header::{CONTENT_LENGTH, TRANSFER_ENCODING};
use pingora::cache::eviction::{lru, EvictionManager};
use pingora::cache::key::{CacheHashKey, CompactCacheKey, HashBinary};
use pingora::cache::lock::{CacheKeyLockImpl, CacheLock};
use pingora::cache::storage::{HandleHit, HandleMiss, MissFinishType};
use pingora::cache::trace::SpanHandle;
use pingora::cache::{
    CacheEntryKeyRef, CacheKey, CacheMeta, HitHandler, MissHandler, PurgeOutcome, PurgeTarget,
    PurgeType, Storage,
};
use pingora_error::{Error, ErrorType, Result};

/// Independent maps (and LRU shards), so concurrent requests rarely meet on one lock.
const SHARDS: usize = 16;

/// How long a request filling the cache may hold the lock that makes concurrent misses
/// for the same key wait; past it, waiting requests go to the upstream themselves.
const LOCK_AGE_TIMEOUT: Duration = Duration::from_secs(10);

type Variants = HashMap<Option<HashBinary>, Entry>;

/// A complete cached response. The metadata is kept as a `CacheMeta`, not serialized: a
/// hit clones it, where deserializing would zstd-decompress and re-parse the header
/// (~14% of a hit's instructions).
struct Entry {
    meta: CacheMeta,
    body: Bytes,
}

/// Every variant of one primary key, with the request coordinates purges match on.
struct Family {
    host: Box<str>,
    path: Box<str>,
    variants: Variants,
}

/// Below this `max_size` a route's LRU is one exact list; from it, `SHARDS` lists.
const SHARDED_EVICTION_FROM: usize = 16 * 1024 * 1024;

/// The LRU bounding a store. A sharded LRU takes less lock contention but is only
/// approximately least-recently-used: it evicts from the longer of two random shards,
/// which in a small cache (a few entries per shard) can be a recent entry.
enum Eviction {
    Exact(lru::Manager<1>),
    Sharded(Box<lru::Manager<SHARDS>>),
}

impl Eviction {
    fn new(max_size: usize) -> Self {
        if max_size < SHARDED_EVICTION_FROM {
            Self::Exact(lru::Manager::with_capacity(max_size, 1024))
        } else {
            Self::Sharded(Box::new(lru::Manager::with_capacity(max_size, 256)))
        }
    }

    fn manager(&self) -> &(dyn EvictionManager + Sync) {
        match self {
            Self::Exact(manager) => manager,
            Self::Sharded(manager) => manager.as_ref(),
        }
    }

    fn weight_limit(&self) -> usize {
        match self {
            Self::Exact(manager) => manager.weight_limit(),
            Self::Sharded(manager) => manager.weight_limit(),
        }
    }

    fn set_weight_limit(&self, limit: usize) {
        match self {
            Self::Exact(manager) => manager.set_weight_limit(limit),
            Self::Sharded(manager) => manager.set_weight_limit(limit),
        }
    }
}

/// One route's cached responses. Lives for the whole process: the cache survives reloads.
pub struct Store {
    shards: Box<[RwLock<HashMap<HashBinary, Family>>]>,
    eviction: Eviction,
}

impl Store {
    fn new(max_size: usize) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| RwLock::default()).collect(),
            eviction: Eviction::new(max_size),
        }
    }

    /// The store of route `route`, created on first use and kept across reloads; a new
    /// `max_size` applies to it (a smaller one evicts as new responses are admitted).
    pub fn for_route(route: &str, max_size: usize) -> &'static Store {
        let mut stores = registry();
        // Leaked once per route name: pingora-cache needs `'static` storage, and a
        // route's store must outlive every configuration that names the route.
        let store = *stores
            .entry(route.to_string())
            .or_insert_with(|| Box::leak(Box::new(Store::new(max_size))));
        if store.eviction.weight_limit() != max_size {
            store.eviction.set_weight_limit(max_size);
        }
        store
    }

    /// The eviction manager bounding this store.
    pub fn eviction(&'static self) -> &'static (dyn EvictionManager + Sync) {
        self.eviction.manager()
    }

    /// Removes every cached response whose host and path satisfy `matches`; returns how
    /// many responses (variants) went.
    pub fn purge_matching(&self, matches: impl Fn(&str, &str) -> bool) -> usize {
        let mut removed = Vec::new();
        for shard in self.shards.iter() {
            let mut families = write(shard);
            families.retain(|primary, family| {
                if !matches(&family.host, &family.path) {
                    return true;
                }
                removed.extend(family.variants.keys().map(|variance| CompactCacheKey {
                    primary: *primary,
                    variance: variance.map(Box::new),
                    user_tag: "".into(),
                }));
                false
            });
        }
        for key in &removed {
            self.eviction
                .manager()
                .remove(CacheEntryKeyRef::from_entry_id(key, None));
        }
        removed.len()
    }

    /// Bytes held (bodies and header fields), as the eviction manager counts them.
    pub fn size(&self) -> usize {
        self.eviction.manager().total_size()
    }

    /// Responses held (variants count one each).
    pub fn items(&self) -> usize {
        self.eviction.manager().total_items()
    }

    fn shard(&self, primary: &HashBinary) -> &RwLock<HashMap<HashBinary, Family>> {
        &self.shards[primary[0] as usize % SHARDS]
    }
}

/// Every route store of the process (for purges, which span routes).
pub fn all_stores() -> Vec<&'static Store> {
    registry().values().copied().collect()
}

/// The lock that coalesces concurrent misses for one key into one upstream request.
pub fn cache_lock() -> &'static CacheKeyLockImpl {
    static LOCK: OnceLock<&'static CacheKeyLockImpl> = OnceLock::new();
    *LOCK.get_or_init(|| Box::leak(Box::new(CacheLock::new(LOCK_AGE_TIMEOUT))))
}

/// Stores by route name; touched at configuration load and by purges, never per request.
fn registry() -> std::sync::MutexGuard<'static, HashMap<String, &'static Store>> {
    static STORES: OnceLock<Mutex<HashMap<String, &'static Store>>> = OnceLock::new();
    STORES
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    // A panic while holding the lock cannot leave a map half-updated (each update is one
    // insert or remove), so a poisoned lock is still usable.
    lock.read().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The host and path (without query) encoded in a primary key by [`super::cache_key`].
fn coordinates(key: &CacheKey) -> (Box<str>, Box<str>) {
    let primary = String::from_utf8_lossy(key.primary_key());
    let mut parts = primary.splitn(3, '\n');
    let _route = parts.next();
    let host = parts.next().unwrap_or("");
    let path_and_query = parts.next().unwrap_or("");
    let path = path_and_query
        .split_once('?')
        .map_or(path_and_query, |(path, _)| path);
    (host.into(), path.into())
}

#[async_trait]
impl Storage for Store {
    async fn lookup(
        &'static self,
        key: &CacheKey,
        _trace: &SpanHandle,
    ) -> Result<Option<(CacheMeta, HitHandler)>> {
        let primary = key.primary_bin();
        let (meta, body) = {
            let families = read(self.shard(&primary));
            let Some(entry) = families
                .get(&primary)
                .and_then(|family| family.variants.get(&key.variance_bin()))
            else {
                return Ok(None);
            };
            (entry.meta.clone(), entry.body.clone())
        };
        let end = body.len();
        Ok(Some((
            meta,
            Box::new(Hit {
                body,
                start: 0,
                end,
                done: false,
            }),
        )))
    }

    async fn get_miss_handler(
        &'static self,
        key: &CacheKey,
        meta: &CacheMeta,
        _trace: &SpanHandle,
    ) -> Result<MissHandler> {
        let (host, path) = coordinates(key);
        let header = meta.response_header();
        // An encoded (streamed) response arrives without a length; the stored copy gets
        // one back once the body is complete, so hits (and HEADs) carry Content-Length.
        let restore_length = !header.headers.contains_key(CONTENT_LENGTH)
            && !matches!(header.status.as_u16(), 100..=199 | 204 | 304);
        Ok(Box::new(Fill {
            restore_length,
            store: self,
            primary: key.primary_bin(),
            variance: key.variance_bin(),
            host,
            path,
            meta: meta.clone(),
            body: Vec::new(),
        }))
    }

    async fn purge(
        &'static self,
        target: PurgeTarget<'_>,
        _purge_type: PurgeType,
        _trace: &SpanHandle,
    ) -> Result<PurgeOutcome> {
        let key = target.key();
        let mut families = write(self.shard(&key.primary));
        let Some(family) = families.get_mut(&key.primary) else {
            return Ok(PurgeOutcome::NotFound);
        };
        let removed = family.variants.remove(&key.variance_bin()).is_some();
        if family.variants.is_empty() {
            families.remove(&key.primary);
        }
        Ok(if removed {
            PurgeOutcome::Purged(None)
        } else {
            PurgeOutcome::NotFound
        })
    }

    async fn update_meta(
        &'static self,
        key: &CacheKey,
        meta: &CacheMeta,
        _trace: &SpanHandle,
    ) -> Result<bool> {
        let primary = key.primary_bin();
        let mut families = write(self.shard(&primary));
        match families
            .get_mut(&primary)
            .and_then(|family| family.variants.get_mut(&key.variance_bin()))
        {
            Some(entry) => {
                entry.meta = meta.clone();
                Ok(true)
            }
            None => Ok(false),
        }
    }

    fn as_any(&self) -> &(dyn Any + Send + Sync + 'static) {
        self
    }
}

/// Reads one cached body (whole, or the range a `Range` request asked for).
struct Hit {
    body: Bytes,
    start: usize,
    end: usize,
    done: bool,
}

#[async_trait]
impl HandleHit for Hit {
    async fn read_body(&mut self) -> Result<Option<Bytes>> {
        if self.done {
            return Ok(None);
        }
        self.done = true;
        Ok(Some(self.body.slice(self.start..self.end)))
    }

    async fn finish(
        self: Box<Self>,
        _storage: &'static (dyn Storage + Sync),
        _key: &CacheKey,
        _trace: &SpanHandle,
    ) -> Result<()> {
        Ok(())
    }

    fn can_seek(&self) -> bool {
        true
    }

    fn seek(&mut self, start: usize, end: Option<usize>) -> Result<()> {
        if start >= self.body.len() {
            return Error::e_explain(ErrorType::InternalError, "seek past the cached body");
        }
        self.start = start;
        self.end = end.map_or(self.body.len(), |end| end.min(self.body.len()));
        self.done = false;
        Ok(())
    }

    fn get_eviction_weight(&self) -> usize {
        self.body.len()
    }

    fn as_any(&self) -> &(dyn Any + Send + Sync) {
        self
    }

    fn as_any_mut(&mut self) -> &mut (dyn Any + Send + Sync) {
        self
    }
}

/// Collects a response body; the entry appears in the store only when `finish` runs.
struct Fill {
    store: &'static Store,
    primary: HashBinary,
    variance: Option<HashBinary>,
    host: Box<str>,
    path: Box<str>,
    meta: CacheMeta,
    body: Vec<u8>,
    /// The stored header lacks Content-Length: `finish` puts the body's in.
    restore_length: bool,
}

/// What an entry's metadata weighs against `max_size`, besides its header fields: the
/// status line and the internal timestamps (about what they take serialized).
const META_OVERHEAD: usize = 64;

/// The bytes an entry's metadata holds: each header field as written on the wire.
fn meta_weight(meta: &CacheMeta) -> usize {
    let fields: usize = meta
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    META_OVERHEAD + fields
}

#[async_trait]
impl HandleMiss for Fill {
    async fn write_body(&mut self, data: Bytes, _eof: bool) -> Result<()> {
        self.body.extend_from_slice(&data);
        Ok(())
    }

    async fn finish(self: Box<Self>) -> Result<MissFinishType> {
        let mut fill = *self;
        if fill.restore_length {
            let header = fill.meta.response_header_mut();
            header.remove_header(&TRANSFER_ENCODING);
            header.insert_header(CONTENT_LENGTH, fill.body.len())?;
        }
        let size = fill.body.len() + meta_weight(&fill.meta);
        let mut families = write(fill.store.shard(&fill.primary));
        let family = families.entry(fill.primary).or_insert_with(|| Family {
            host: fill.host,
            path: fill.path,
            variants: HashMap::new(),
        });
        family.variants.insert(
            fill.variance,
            Entry {
                meta: fill.meta,
                body: Bytes::from(fill.body),
            },
        );
        Ok(MissFinishType::Created(size))
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use pingora::cache::trace::Span;
    use pingora_http::ResponseHeader;

    use super::*;

    fn meta() -> CacheMeta {
        let header = ResponseHeader::build(200, None).expect("valid status");
        let now = SystemTime::now();
        CacheMeta::new(now + Duration::from_secs(60), now, 0, 0, header)
    }

    async fn fill(store: &'static Store, key: &CacheKey, body: &'static str) {
        let span = Span::inactive();
        let mut fill = store
            .get_miss_handler(key, &meta(), &span.handle())
            .await
            .expect("miss handler");
        fill.write_body(Bytes::from_static(body.as_bytes()), true)
            .await
            .expect("write");
        fill.finish().await.expect("finish");
    }

    async fn body(store: &'static Store, key: &CacheKey) -> Option<Bytes> {
        let span = Span::inactive();
        let (_, mut hit) = store.lookup(key, &span.handle()).await.ok()??;
        hit.read_body().await.ok()?
    }

    fn key(primary: &str, variance: Option<u8>) -> CacheKey {
        let mut key = CacheKey::new(primary, "");
        if let Some(byte) = variance {
            key.set_variance_key([byte; 16]);
        }
        key
    }

    #[tokio::test]
    async fn a_body_is_visible_once_filled_and_purges_take_every_variant() {
        let store = Store::for_route("store-tests", 1024 * 1024);
        let plain = key("r\nexample.com\n/a?x=1", None);
        let variant = key("r\nexample.com\n/a?x=1", Some(7));
        let other = key("r\nexample.com\n/b", None);
        assert_eq!(body(store, &plain).await, None);

        fill(store, &plain, "plain").await;
        fill(store, &variant, "variant").await;
        fill(store, &other, "other").await;

        assert_eq!(body(store, &plain).await.as_deref(), Some(&b"plain"[..]));
        assert_eq!(
            body(store, &variant).await.as_deref(),
            Some(&b"variant"[..])
        );
        assert_eq!(
            store.purge_matching(|host, path| host == "example.com" && path == "/a"),
            2
        );
        assert_eq!(body(store, &plain).await, None);
        assert_eq!(body(store, &variant).await, None);
        assert_eq!(body(store, &other).await.as_deref(), Some(&b"other"[..]));
    }
}
