//! The online store: per view version, each entity's window state as of the last committed
//! epoch, written once per checkpoint epoch and read at request time. One interface
//! ([`OnlineStore`]), an embedded backend ([`EmbeddedOnline`], a redb file) by default,
//! Redis ([`RedisOnline`]) and Redis Cluster ([`RedisClusterOnline`]).
//!
//! The store holds bytes: the runtime encodes window state and decides what a key is. An
//! entity's state is a *head* and numbered *segments* ([`EntityState`]), so that a change writes
//! the head and new segments, not everything the entity holds. What the store guarantees is
//! the epoch contract: an epoch's writes to every view become visible together
//! (one transaction), and applying an epoch again (recovery redoing a commit) changes nothing.

mod embedded;
mod overlay;
mod redis;
mod redis_cluster;
pub mod versioned;

pub use self::redis::RedisOnline;
pub use embedded::EmbeddedOnline;
pub use redis_cluster::RedisClusterOnline;

/// Test helpers shared by the backends' tests.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;

    /// A write of run `run`, epoch `epoch` to table `v@1`: each put a key whose head is its
    /// value and with one segment, `7`, holding the value too.
    pub fn write(
        run: &str,
        epoch: u64,
        replace: bool,
        puts: &[(&str, &str)],
        deletes: &[&str],
    ) -> OnlineWrite {
        OnlineWrite {
            table: "v@1".into(),
            replace,
            stamp: OnlineStamp {
                run: run.into(),
                epoch,
                watermark: Some(epoch as i64 * 10),
                committed_unix_ms: 0,
                fingerprint: 7,
                keys: 0,
            },
            deletes: deletes.iter().map(|k| k.as_bytes().to_vec()).collect(),
            puts: (puts.iter())
                .map(|(k, v)| EntityWrite {
                    key: k.as_bytes().to_vec(),
                    head: v.as_bytes().to_vec(),
                    deletes: vec![6],
                    segments: vec![(7, v.as_bytes().to_vec())],
                })
                .collect(),
            keys_after: None,
        }
    }

    /// The heads of `keys` in table `v@1` of `store` and its epoch, checking that each
    /// entity's one segment matches its head.
    pub fn read(store: &dyn OnlineStore, keys: &[&str]) -> (u64, Vec<Option<String>>) {
        let keys: Vec<&[u8]> = keys.iter().map(|k| k.as_bytes()).collect();
        let (stamp, values) = store.get("v@1", &keys).unwrap().unwrap();
        let values = (values.into_iter())
            .map(|v| {
                v.map(|v| {
                    assert_eq!(v.segments, vec![(7, v.head.clone())]);
                    String::from_utf8(v.head).unwrap()
                })
            })
            .collect();
        (stamp.epoch, values)
    }
}

use crate::StoreError;
use serde::{Deserialize, Serialize};

/// What a view version's online state is as of: the run and epoch that last wrote it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OnlineStamp {
    /// The run that wrote it.
    pub run: String,
    /// Its last applied epoch.
    pub epoch: u64,
    /// The job's watermark at that epoch (µs since the epoch): every event before it is in the
    /// state and none at or after it, so reads at or after it are exact.
    pub watermark: Option<i64>,
    /// When the epoch was applied (ms since the Unix epoch).
    pub committed_unix_ms: u64,
    /// Fingerprint of the window plan whose state encoding the values use.
    pub fingerprint: u64,
    /// Keys stored.
    pub keys: u64,
}

/// One entity's stored state: its head and its segments, in id order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntityState {
    /// The head.
    pub head: Vec<u8>,
    /// Segment ids and bytes, by id.
    pub segments: Vec<(u64, Vec<u8>)>,
}

/// Which of an entity's segments a read wants, as its head tells
/// ([`OnlineStore::get_selected`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WantedSegments {
    /// Every segment.
    All,
    /// These segments (by id, ascending); none when empty.
    Only(Vec<u64>),
}

impl WantedSegments {
    /// Whether it wants any segment.
    pub fn any(&self) -> bool {
        !matches!(self, WantedSegments::Only(ids) if ids.is_empty())
    }

    /// Keeps of `state`'s segments only those wanted (a backend that had to read them all
    /// saves its caller decoding the rest).
    pub fn keep_in(&self, state: &mut EntityState) {
        if let WantedSegments::Only(ids) = self {
            state.segments.retain(|(id, _)| ids.contains(id));
        }
    }
}

/// One entity's writes of one epoch.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntityWrite {
    /// The encoded entity key.
    pub key: Vec<u8>,
    /// Its new head.
    pub head: Vec<u8>,
    /// Ids of its segments to delete (before `segments` are written).
    pub deletes: Vec<u64>,
    /// Its segments to write (replacing a segment with the same id).
    pub segments: Vec<(u64, Vec<u8>)>,
}

/// One view version's writes of one epoch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OnlineWrite {
    /// The table: `view@version`.
    pub table: String,
    /// Whether the table's earlier contents go first (the first epoch of a new run, which
    /// writes every key it has).
    pub replace: bool,
    /// The run, epoch, watermark and fingerprint to stamp (`keys` and the time are set when
    /// the write is applied).
    pub stamp: OnlineStamp,
    /// Keys whose state is gone: head and segments (deleted before `puts` are written).
    pub deletes: Vec<Vec<u8>>,
    /// Changed entities.
    pub puts: Vec<EntityWrite>,
    /// The table's key count after this write, when the writer knows it (a run's view counts
    /// its keys; the table holds the same ones): the embedded store then need not look up
    /// every written key to count the new ones. Not stored with staged writes.
    #[serde(skip)]
    pub keys_after: Option<u64>,
}

/// Table name of a view version.
pub fn table_name(view: &str, version: &str) -> String {
    format!("{view}@{version}")
}

/// An online store.
pub trait OnlineStore: Send + Sync {
    /// Applies one epoch's writes to every table in one transaction. A write whose table
    /// already holds that run's epoch (or a later one) is skipped, so applying an epoch again
    /// is harmless. Returns how many writes were applied.
    fn apply(&self, writes: &[OnlineWrite]) -> Result<usize, StoreError>;

    /// [`OnlineStore::apply`] for an epoch its writer can rebuild after a crash (its
    /// checkpoint holds the state): visible to reads at once like any epoch, but a backend may
    /// make it durable later, with a later epoch or [`OnlineStore::sync`], so that short
    /// checkpoint intervals do not pay a disk sync each. A crash may then take the store back
    /// to an earlier epoch, never to part of one.
    fn apply_recoverable(&self, writes: &[OnlineWrite]) -> Result<usize, StoreError> {
        self.apply(writes)
    }

    /// Makes every epoch applied so far durable (the writer's last commit).
    fn sync(&self) -> Result<(), StoreError> {
        Ok(())
    }

    /// Every table with its stamp.
    fn tables(&self) -> Result<Vec<(String, OnlineStamp)>, StoreError>;

    /// The stamp of `table` and the state of each of `keys` (`None`: no state), read from
    /// one consistent snapshot; `None` when the table does not exist.
    #[allow(clippy::type_complexity)]
    fn get(
        &self,
        table: &str,
        keys: &[&[u8]],
    ) -> Result<Option<(OnlineStamp, Vec<Option<EntityState>>)>, StoreError> {
        self.get_selected(table, keys, &|_| WantedSegments::All)
    }

    /// [`OnlineStore::get`], reading of each entity the segments `wanted` names for its head.
    /// A backend may read more of them (every segment), never fewer of those it holds: the
    /// embedded store and Redis read only those named (a hot entity's read then costs its
    /// head and a segment, not every event its windows hold); Redis Cluster reads every one
    /// (an entity is one hash of versions) and returns those named.
    #[allow(clippy::type_complexity)]
    fn get_selected(
        &self,
        table: &str,
        keys: &[&[u8]],
        wanted: &dyn Fn(&[u8]) -> WantedSegments,
    ) -> Result<Option<(OnlineStamp, Vec<Option<EntityState>>)>, StoreError>;

    /// Up to `limit` keys of `table` with their state, in key order, after `after` (from the
    /// first key when `None`), and the stamp they belong to: paging through a whole table.
    #[allow(clippy::type_complexity)]
    fn scan(
        &self,
        table: &str,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Option<(OnlineStamp, Vec<(Vec<u8>, EntityState)>)>, StoreError>;

    /// Overwrites one key's state, head and segments, without touching the stamp (repairs
    /// and tests of the consistency check).
    fn put_raw(&self, table: &str, key: &[u8], state: &EntityState) -> Result<(), StoreError>;

    /// Removes a table; `false` when it did not exist.
    fn drop_table(&self, table: &str) -> Result<bool, StoreError>;

    /// Where the store is, for messages (never with credentials).
    fn describe(&self) -> String;

    /// Whether reads are served from this process's memory and local files, never waiting on
    /// a network (a server may then run small reads on its own threads instead of handing
    /// them to a blocking pool).
    fn is_local(&self) -> bool {
        false
    }
}

/// Whether `write` must be applied over `current` (the table's stamp now): not when the table
/// already has that run's epoch or a later one.
pub fn is_new(current: Option<&OnlineStamp>, write: &OnlineStamp) -> bool {
    match current {
        Some(c) => c.run != write.run || c.epoch < write.epoch,
        None => true,
    }
}

/// Milliseconds since the Unix epoch.
pub(crate) fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamp(run: &str, epoch: u64) -> OnlineStamp {
        OnlineStamp {
            run: run.into(),
            epoch,
            watermark: None,
            committed_unix_ms: 0,
            fingerprint: 1,
            keys: 0,
        }
    }

    #[test]
    fn an_epoch_is_applied_once_per_run() {
        assert!(is_new(None, &stamp("a", 1)));
        assert!(is_new(Some(&stamp("a", 1)), &stamp("a", 2)));
        assert!(!is_new(Some(&stamp("a", 2)), &stamp("a", 2)));
        assert!(!is_new(Some(&stamp("a", 3)), &stamp("a", 2)));
        assert!(is_new(Some(&stamp("a", 9)), &stamp("b", 1)));
    }
}
