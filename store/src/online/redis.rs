//! The online store in Redis (what feature-store users already run). Layout, under a prefix
//! (default `quiver`):
//!
//! - `<prefix>:stamps`: a hash, table (`view@version`) → JSON stamp;
//! - `<prefix>:keyset:<table>`: a set of the table's entities (hex of the encoded key);
//! - `<prefix>:state:<table>:{<entity hex>}`: one entity's head;
//! - `<prefix>:segments:<table>:{<entity hex>}`: a hash of its segments, id (decimal) → bytes.
//!
//! The hash tag is the entity, so in a Redis Cluster every view's state of one entity sits in
//! one slot.
//!
//! An epoch is one `MULTI`/`EXEC` transaction, and a read one `MULTI`/`EXEC` of the stamp and
//! the heads, then, for the heads that need their segments (a key whose events are in
//! segments), a second of the stamp and those segments, read again if the stamp changed in
//! between: on a single Redis server, readers see whole epochs. (A cluster cannot run
//! transactions across slots: [`super::RedisClusterOnline`] keeps versions instead.)
//! `rediss://` URLs connect with TLS.

use super::{is_new, unix_ms, EntityState, OnlineStamp, OnlineStore, OnlineWrite, WantedSegments};
use crate::StoreError;
use std::sync::Mutex;

/// An online store in a Redis server.
pub struct RedisOnline {
    client: redis::Client,
    connection: Reconnecting<redis::Connection>,
    prefix: String,
}

/// Tries of [`RedisOnline::read_selected`] before a read takes every segment in one step.
const SELECTIVE_READ_ATTEMPTS: usize = 3;

/// A table's stamp and key count, and per entity its head.
type Heads = (Option<Vec<u8>>, u64, Vec<Option<Vec<u8>>>);

/// What a read gives: [`Heads`], and per entity its segments.
type Read = (Heads, Vec<Vec<(u64, Vec<u8>)>>);

/// A Redis backend's connections: opened as concurrent callers need them (a reader waits for
/// no other reader's round trip), kept for reuse while they work; and where they go (without
/// credentials) for messages.
pub(super) struct Reconnecting<C> {
    idle: Mutex<Vec<C>>,
    shown: String,
}

/// Idle connections kept for reuse at most; a burst of more concurrent callers opens more, and
/// those beyond this are closed when their call ends.
const IDLE_CONNECTIONS: usize = 16;

impl<C> Reconnecting<C> {
    /// Not connected yet, to the store shown as `shown`.
    pub(super) fn new(shown: String) -> Self {
        Reconnecting {
            idle: Mutex::new(Vec::new()),
            shown,
        }
    }

    /// Where it goes, for messages.
    pub(super) fn shown(&self) -> &str {
        &self.shown
    }

    /// A failure of this store.
    pub(super) fn fail(&self, e: impl std::fmt::Display) -> StoreError {
        StoreError::Online {
            store: self.shown.clone(),
            message: e.to_string(),
        }
    }

    /// Runs `f` on an idle connection, or on a new one opened with `connect`; the connection
    /// goes back to the idle ones if `f` succeeds. A failure drops it and every idle one (they
    /// likely lost the same server), so the next call connects afresh, as after a restart.
    pub(super) fn with<T>(
        &self,
        connect: impl FnOnce() -> redis::RedisResult<C>,
        f: impl FnOnce(&mut C) -> redis::RedisResult<T>,
    ) -> Result<T, StoreError> {
        let idle = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let mut connection = match idle {
            Some(connection) => connection,
            None => connect().map_err(|e| self.fail(e))?,
        };
        let result = f(&mut connection).map_err(|e| {
            self.idle.lock().unwrap_or_else(|e| e.into_inner()).clear();
            self.fail(e)
        })?;
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < IDLE_CONNECTIONS {
            idle.push(connection);
        }
        Ok(result)
    }
}

/// A reply as `T`.
pub(super) fn from_value<T: redis::FromRedisValue>(
    value: redis::Value,
) -> Result<T, redis::ParsingError> {
    redis::from_redis_value(value)
}

/// Lower-case hex of `bytes` (an entity's key in key names). It was a `String` per byte,
/// 13% of a server's CPU under 100-entity reads from Redis.
pub(super) fn hex(bytes: &[u8]) -> String {
    hex::encode(bytes)
}

/// The bytes of hex `text` (`None` if it is not hex).
pub(super) fn unhex(text: &str) -> Option<Vec<u8>> {
    hex::decode(text).ok()
}

/// `url` without a password (`redis://user:secret@host` → `redis://user:***@host`).
pub(super) fn without_password(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let credentials = &url[scheme + 3..at];
            let user = credentials.split(':').next().unwrap_or("");
            format!("{}{user}:***{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_string(),
    }
}

/// The certificates to trust for TLS: the PEM file `ca`.
pub(super) fn tls_certificates(ca: &std::path::Path) -> Result<redis::TlsCertificates, String> {
    let pem =
        std::fs::read(ca).map_err(|e| format!("cannot read the CA `{}`: {e}", ca.display()))?;
    Ok(redis::TlsCertificates {
        client_tls: None,
        root_cert: Some(pem),
    })
}

/// A page of [`OnlineStore::scan`] of `table` in a Redis `store` whose sorted entities (hex)
/// are `entities`: those after `after`, up to `limit`, read with [`OnlineStore::get`] (one
/// consistent read); an entity gone between the listing and the read is left out.
#[allow(clippy::type_complexity)]
pub(super) fn scan_page(
    store: &dyn OnlineStore,
    entities: Vec<String>,
    table: &str,
    after: Option<&[u8]>,
    limit: usize,
) -> Result<Option<(OnlineStamp, Vec<(Vec<u8>, EntityState)>)>, StoreError> {
    let after = after.map(hex);
    let keys: Vec<Vec<u8>> = (entities.into_iter())
        .filter(|e| after.as_ref().is_none_or(|a| e > a))
        .take(limit)
        .map(|e| {
            unhex(&e).ok_or_else(|| StoreError::Online {
                store: store.describe(),
                message: format!("entity `{e}` is not hex"),
            })
        })
        .collect::<Result<_, _>>()?;
    let refs: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
    let Some((stamp, values)) = store.get(table, &refs)? else {
        return Ok(None);
    };
    let page = (keys.into_iter().zip(values))
        .filter_map(|(k, v)| v.map(|v| (k, v)))
        .collect();
    Ok(Some((stamp, page)))
}

impl RedisOnline {
    /// Connects to the Redis server at `url` (`redis://host:port[/db]`, `rediss://` for TLS,
    /// trusting the system's roots or the PEM certificate `ca`) and checks that it answers.
    pub fn open(url: &str, prefix: &str, ca: Option<&std::path::Path>) -> Result<Self, StoreError> {
        let shown = without_password(url);
        let fail = |message: String| StoreError::Online {
            store: shown.clone(),
            message,
        };
        let client = match ca {
            Some(ca) => redis::Client::build_with_tls(url, tls_certificates(ca).map_err(fail)?),
            None => redis::Client::open(url),
        }
        .map_err(|e| fail(e.to_string()))?;
        let store = RedisOnline {
            client,
            connection: Reconnecting::new(shown),
            prefix: prefix.to_string(),
        };
        store.with(|c| redis::cmd("PING").query::<String>(c).map(|_| ()))?;
        Ok(store)
    }

    fn fail(&self, e: impl std::fmt::Display) -> StoreError {
        self.connection.fail(e)
    }

    /// Runs `f` on the connection ([`Reconnecting::with`]).
    fn with<T>(
        &self,
        f: impl FnOnce(&mut redis::Connection) -> redis::RedisResult<T>,
    ) -> Result<T, StoreError> {
        let connect =
            || (self.client).get_connection_with_timeout(std::time::Duration::from_secs(5));
        self.connection.with(connect, f)
    }

    fn stamps(&self) -> String {
        format!("{}:stamps", self.prefix)
    }

    fn keyset(&self, table: &str) -> String {
        format!("{}:keyset:{table}", self.prefix)
    }

    fn state(&self, table: &str, entity_hex: &str) -> String {
        format!("{}:state:{table}:{{{entity_hex}}}", self.prefix)
    }

    fn segments(&self, table: &str, entity_hex: &str) -> String {
        format!("{}:segments:{table}:{{{entity_hex}}}", self.prefix)
    }

    /// A read of `entities` in `table` that reads the segments `wanted` names for each head:
    /// one transaction of the stamp, the key count and the heads, then, if some head wants
    /// segments, a second of the stamp and those segments (`HGETALL` of all, `HMGET` of
    /// some). `None` when an epoch was written between the two (the stamps differ): the
    /// caller reads again.
    fn read_selected(
        &self,
        table: &str,
        entities: &[String],
        wanted: &dyn Fn(&[u8]) -> WantedSegments,
    ) -> Result<Option<Read>, StoreError> {
        let pipe = self.heads_transaction(table, entities);
        let replies: Vec<redis::Value> = self.with(|c| pipe.query(c))?;
        let mut replies = replies.into_iter();
        let (stamp, count, heads) = self.take_heads(&mut replies, entities)?;
        let needed: Vec<(usize, WantedSegments)> = (heads.iter().enumerate())
            .filter_map(|(i, head)| Some((i, wanted(head.as_deref()?))))
            .filter(|(_, wants)| wants.any())
            .collect();
        let mut segments = vec![Vec::new(); heads.len()];
        if !needed.is_empty() {
            let mut pipe = redis::pipe();
            pipe.atomic();
            pipe.cmd("HGET").arg(self.stamps()).arg(table);
            for (i, wants) in &needed {
                let key = self.segments(table, &entities[*i]);
                match wants {
                    WantedSegments::All => pipe.cmd("HGETALL").arg(key),
                    WantedSegments::Only(ids) => pipe.cmd("HMGET").arg(key).arg(&ids[..]),
                };
            }
            let replies: Vec<redis::Value> = self.with(|c| pipe.query(c))?;
            let mut replies = replies.into_iter();
            let again: Option<Vec<u8>> = self.take(&mut replies, "the stamp")?;
            if again != stamp {
                return Ok(None);
            }
            for (i, wants) in needed {
                segments[i] = match wants {
                    WantedSegments::All => self.take(&mut replies, "segments")?,
                    WantedSegments::Only(ids) => {
                        let found: Vec<Option<Vec<u8>>> = self.take(&mut replies, "segments")?;
                        (ids.into_iter().zip(found))
                            .filter_map(|(id, bytes)| Some((id, bytes?)))
                            .collect()
                    }
                };
            }
        }
        Ok(Some(((stamp, count, heads), segments)))
    }

    /// A read of `entities` in `table` as one `MULTI`/`EXEC` of the stamp, the key count, the
    /// heads and every entity's segments: for reads that want every segment, and when epochs
    /// keep coming between the two steps of [`RedisOnline::read_selected`].
    fn read_all(&self, table: &str, entities: &[String]) -> Result<Read, StoreError> {
        let mut pipe = self.heads_transaction(table, entities);
        for entity in entities {
            pipe.cmd("HGETALL").arg(self.segments(table, entity));
        }
        let replies: Vec<redis::Value> = self.with(|c| pipe.query(c))?;
        let mut replies = replies.into_iter();
        let (stamp, count, heads) = self.take_heads(&mut replies, entities)?;
        let segments = (0..heads.len())
            .map(|_| self.take(&mut replies, "segments"))
            .collect::<Result<_, _>>()?;
        Ok(((stamp, count, heads), segments))
    }

    /// A read's stamp and entity states, per entity its head with its segments in id order;
    /// `None` when the table has no stamp (it does not exist).
    #[allow(clippy::type_complexity)]
    fn entity_states(
        &self,
        ((stamp, count, heads), segments): Read,
    ) -> Result<Option<(OnlineStamp, Vec<Option<EntityState>>)>, StoreError> {
        let values = (heads.into_iter().zip(segments))
            .map(|(head, mut segments)| {
                head.map(|head| {
                    segments.sort_by_key(|(id, _)| *id);
                    EntityState { head, segments }
                })
            })
            .collect();
        let Some(stamp) = stamp else {
            return Ok(None);
        };
        Ok(Some((self.stamp_of(&stamp, count)?, values)))
    }

    /// A transaction reading `table`'s stamp, its key count and the heads of `entities`.
    fn heads_transaction(&self, table: &str, entities: &[String]) -> redis::Pipeline {
        let mut pipe = redis::pipe();
        pipe.atomic();
        pipe.cmd("HGET").arg(self.stamps()).arg(table);
        pipe.cmd("SCARD").arg(self.keyset(table));
        if !entities.is_empty() {
            let names: Vec<String> = (entities.iter()).map(|e| self.state(table, e)).collect();
            pipe.cmd("MGET").arg(names);
        }
        pipe
    }

    /// The replies to [`RedisOnline::heads_transaction`]: the stamp, the key count and the
    /// heads.
    fn take_heads(
        &self,
        replies: &mut impl Iterator<Item = redis::Value>,
        entities: &[String],
    ) -> Result<Heads, StoreError> {
        let stamp = self.take(replies, "the stamp")?;
        let count = self.take(replies, "the key count")?;
        let heads = match entities.is_empty() {
            true => Vec::new(),
            false => self.take(replies, "the heads")?,
        };
        Ok((stamp, count, heads))
    }

    /// The next of a transaction's `replies`, as a `T` (`what` it is, for messages).
    fn take<T: redis::FromRedisValue>(
        &self,
        replies: &mut impl Iterator<Item = redis::Value>,
        what: &str,
    ) -> Result<T, StoreError> {
        let reply = (replies.next()).ok_or_else(|| self.fail(format!("no reply for {what}")))?;
        from_value(reply).map_err(|e| self.fail(e))
    }

    /// Queues deleting `entity`'s head and segments in `table`.
    fn queue_forget(&self, pipe: &mut redis::Pipeline, table: &str, entity: &str) {
        pipe.cmd("DEL")
            .arg(self.state(table, entity))
            .arg(self.segments(table, entity))
            .ignore();
    }

    /// Queues writing `entity`'s head and `segments` in `table`, after deleting its segments
    /// `deletes` (`None`: every segment it had), and adding it to the table's entities.
    fn queue_put(
        &self,
        pipe: &mut redis::Pipeline,
        table: &str,
        entity: &str,
        head: &[u8],
        deletes: Option<&[u64]>,
        segments: &[(u64, Vec<u8>)],
    ) {
        pipe.cmd("SET")
            .arg(self.state(table, entity))
            .arg(head)
            .ignore();
        let key = self.segments(table, entity);
        match deletes {
            Some([]) => {}
            Some(ids) => {
                pipe.cmd("HDEL").arg(&key).arg(ids).ignore();
            }
            None => {
                pipe.cmd("DEL").arg(&key).ignore();
            }
        }
        if !segments.is_empty() {
            let fields: Vec<(u64, &[u8])> = segments.iter().map(|(id, b)| (*id, &b[..])).collect();
            pipe.cmd("HSET").arg(&key).arg(fields).ignore();
        }
        pipe.cmd("SADD")
            .arg(self.keyset(table))
            .arg(entity)
            .ignore();
    }

    fn stamp_of(&self, bytes: &[u8], keys: u64) -> Result<OnlineStamp, StoreError> {
        let stamp: OnlineStamp = serde_json::from_slice(bytes)
            .map_err(|e| self.fail(format!("unreadable stamp: {e}")))?;
        Ok(OnlineStamp { keys, ..stamp })
    }

    /// The table's sorted entities (hex).
    fn entities(&self, table: &str) -> Result<Vec<String>, StoreError> {
        let mut members: Vec<String> =
            self.with(|c| redis::cmd("SMEMBERS").arg(self.keyset(table)).query(c))?;
        members.sort();
        Ok(members)
    }
}

impl OnlineStore for RedisOnline {
    fn apply(&self, writes: &[OnlineWrite]) -> Result<usize, StoreError> {
        let mut pipe = redis::pipe();
        pipe.atomic();
        let mut applied = 0;
        for write in writes {
            let current: Option<Vec<u8>> = self.with(|c| {
                redis::cmd("HGET")
                    .arg(self.stamps())
                    .arg(&write.table)
                    .query(c)
            })?;
            let current = current.map(|b| self.stamp_of(&b, 0)).transpose()?;
            if !is_new(current.as_ref(), &write.stamp) {
                continue;
            }
            let keyset = self.keyset(&write.table);
            if write.replace {
                for entity in self.entities(&write.table)? {
                    self.queue_forget(&mut pipe, &write.table, &entity);
                }
                pipe.cmd("DEL").arg(&keyset).ignore();
            }
            for key in &write.deletes {
                let entity = hex(key);
                self.queue_forget(&mut pipe, &write.table, &entity);
                pipe.cmd("SREM").arg(&keyset).arg(&entity).ignore();
            }
            for put in &write.puts {
                let (head, deletes) = (&put.head, Some(&put.deletes[..]));
                let entity = hex(&put.key);
                self.queue_put(
                    &mut pipe,
                    &write.table,
                    &entity,
                    head,
                    deletes,
                    &put.segments,
                );
            }
            let stamp = OnlineStamp {
                // Counted when read (SCARD).
                keys: 0,
                committed_unix_ms: unix_ms(),
                ..write.stamp.clone()
            };
            let bytes = serde_json::to_vec(&stamp).map_err(|e| self.fail(e))?;
            pipe.cmd("HSET")
                .arg(self.stamps())
                .arg(&write.table)
                .arg(bytes)
                .ignore();
            applied += 1;
        }
        if applied > 0 {
            self.with(|c| pipe.query::<()>(c))?;
        }
        Ok(applied)
    }

    fn tables(&self) -> Result<Vec<(String, OnlineStamp)>, StoreError> {
        let all: Vec<(String, Vec<u8>)> =
            self.with(|c| redis::cmd("HGETALL").arg(self.stamps()).query(c))?;
        let mut out = Vec::with_capacity(all.len());
        for (table, bytes) in all {
            let keys: u64 = self.with(|c| redis::cmd("SCARD").arg(self.keyset(&table)).query(c))?;
            out.push((table.clone(), self.stamp_of(&bytes, keys)?));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// Every segment is wanted: one transaction reads them with the heads (the two steps of
    /// [`OnlineStore::get_selected`] would only add a round trip, and a retry when an epoch
    /// lands between them; scans page through this).
    fn get(
        &self,
        table: &str,
        keys: &[&[u8]],
    ) -> Result<Option<(OnlineStamp, Vec<Option<EntityState>>)>, StoreError> {
        let entities: Vec<String> = keys.iter().map(|k| hex(k)).collect();
        self.entity_states(self.read_all(table, &entities)?)
    }

    fn get_selected(
        &self,
        table: &str,
        keys: &[&[u8]],
        wanted: &dyn Fn(&[u8]) -> WantedSegments,
    ) -> Result<Option<(OnlineStamp, Vec<Option<EntityState>>)>, StoreError> {
        let entities: Vec<String> = keys.iter().map(|k| hex(k)).collect();
        let mut read = None;
        for _ in 0..SELECTIVE_READ_ATTEMPTS {
            read = self.read_selected(table, &entities, wanted)?;
            if read.is_some() {
                break;
            }
        }
        match read {
            Some(read) => self.entity_states(read),
            None => self.entity_states(self.read_all(table, &entities)?),
        }
    }

    fn scan(
        &self,
        table: &str,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Option<(OnlineStamp, Vec<(Vec<u8>, EntityState)>)>, StoreError> {
        scan_page(self, self.entities(table)?, table, after, limit)
    }

    fn put_raw(&self, table: &str, key: &[u8], state: &EntityState) -> Result<(), StoreError> {
        let mut pipe = redis::pipe();
        pipe.atomic();
        self.queue_put(
            &mut pipe,
            table,
            &hex(key),
            &state.head,
            None,
            &state.segments,
        );
        self.with(|c| pipe.query::<()>(c))
    }

    fn drop_table(&self, table: &str) -> Result<bool, StoreError> {
        let entities = self.entities(table)?;
        let mut pipe = redis::pipe();
        pipe.atomic();
        for entity in &entities {
            self.queue_forget(&mut pipe, table, entity);
        }
        pipe.cmd("DEL").arg(self.keyset(table)).ignore();
        pipe.cmd("HDEL").arg(self.stamps()).arg(table);
        let (removed,): (u64,) = self.with(|c| pipe.query(c))?;
        Ok(removed > 0)
    }

    fn describe(&self) -> String {
        self.connection.shown().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_through_hex_and_passwords_stay_hidden() {
        assert_eq!(unhex(&hex(&[0, 1, 254, 255])), Some(vec![0, 1, 254, 255]));
        assert_eq!(unhex("abc"), None);
        assert_eq!(
            without_password("redis://default:s3cret@10.0.0.1:6379/0"),
            "redis://default:***@10.0.0.1:6379/0"
        );
        assert_eq!(
            without_password("redis://127.0.0.1:6379"),
            "redis://127.0.0.1:6379"
        );
    }

    #[test]
    fn concurrent_callers_get_connections_of_their_own_and_a_failure_drops_the_idle_ones() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::Barrier;
        let pool = Reconnecting::<usize>::new("test".into());
        let opened = AtomicUsize::new(0);
        let connect = || Ok::<_, redis::RedisError>(opened.fetch_add(1, Ordering::SeqCst));
        // Two callers inside their calls at once: each has its own connection.
        let both_inside = Barrier::new(2);
        let used: Vec<usize> = std::thread::scope(|s| {
            let calls: Vec<_> = (0..2)
                .map(|_| {
                    s.spawn(|| {
                        pool.with(connect, |c| {
                            both_inside.wait();
                            Ok(*c)
                        })
                    })
                })
                .collect();
            calls
                .into_iter()
                .map(|c| c.join().unwrap().unwrap())
                .collect()
        });
        assert_ne!(used[0], used[1]);
        assert_eq!(opened.load(Ordering::SeqCst), 2);
        // Later calls reuse them.
        for _ in 0..5 {
            pool.with(connect, |_| Ok(())).unwrap();
        }
        assert_eq!(opened.load(Ordering::SeqCst), 2);
        // A failure drops its connection and the idle one: the next call connects afresh.
        let failed = pool.with(connect, |_| -> redis::RedisResult<()> {
            Err(redis::RedisError::from((
                redis::ErrorKind::Io,
                "connection reset",
            )))
        });
        assert!(failed.unwrap_err().to_string().contains("connection reset"));
        assert_eq!(pool.with(connect, |c| Ok(*c)).unwrap(), 2);
        assert_eq!(opened.load(Ordering::SeqCst), 3);
    }
}
