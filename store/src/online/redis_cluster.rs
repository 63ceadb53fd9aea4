//! The online store in a Redis Cluster. A cluster cannot run one transaction over keys in
//! different slots, and an epoch changes entities in every slot, so entities are kept as
//! versions ([`super::versioned`]): an epoch writes version W beside the committed C, then
//! commits by setting the stamps (one hash, so every view of the epoch at once); readers take
//! the stamp, then resolve each entity as of its C. Layout, under a prefix (default `quiver`):
//!
//! - `<prefix>:stamps`: a hash, table (`view@version`) → JSON stamp with the table's committed
//!   sequence number `seq`;
//! - `<prefix>:keyset:<table>`: a set of the table's entities (hex of the encoded key);
//! - `<prefix>:entity:<table>:{<entity hex>}`: one entity's versioned hash (hash tag: the
//!   entity).
//!
//! An epoch takes three round trips: the changed entities' field names, their writes, the
//! stamps; a read two: the stamp, the entities. An entity that is gone is dropped from the
//! key set after the commit and its hash expires [`GONE_TTL`] later; a read that took longer
//! than [`READ_GUARD`] between its stamp and its entities reads again, so it never misses an
//! entity its stamp still had.

use super::redis::{from_value, hex, scan_page, tls_certificates, without_password, Reconnecting};
use super::versioned::{plan, resolve, whole, Change, Resolved, FLOOR};
use super::{is_new, unix_ms, EntityState, OnlineStamp, OnlineStore, OnlineWrite, WantedSegments};
use crate::StoreError;
use redis::cluster::{cluster_pipe, ClusterClient, ClusterConnection, ClusterPipeline};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::time::{Duration, Instant};

/// How long a gone entity's hash stays after the epoch that removed it committed.
pub const GONE_TTL: Duration = Duration::from_secs(60);

/// The longest a read may take between its stamp and its entities before it reads again.
pub const READ_GUARD: Duration = Duration::from_secs(20);

/// Reads again at most this many times when pruning or slowness overtook them (a reader two
/// epochs behind; epochs come every few milliseconds at the most).
const READ_ATTEMPTS: usize = 100;

/// A table's stamp as the cluster keeps it: with its committed sequence number.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ClusterStamp {
    #[serde(flatten)]
    stamp: OnlineStamp,
    /// The committed sequence number (versions above it are not visible).
    seq: u64,
}

/// An online store in a Redis Cluster.
pub struct RedisClusterOnline {
    client: ClusterClient,
    /// One connection (to every node).
    connection: Reconnecting<ClusterConnection>,
    prefix: String,
}

impl RedisClusterOnline {
    /// Connects to the cluster that the seed `nodes` (`redis://host:port`, `rediss://` for
    /// TLS, trusting the system's roots or the PEM certificate `ca`) belong to, and checks
    /// that it answers.
    pub fn open(
        nodes: &[String],
        prefix: &str,
        ca: Option<&std::path::Path>,
    ) -> Result<Self, StoreError> {
        let shown = (nodes.iter())
            .map(|n| without_password(n))
            .collect::<Vec<_>>()
            .join(",");
        let fail = |message: String| StoreError::Online {
            store: shown.clone(),
            message,
        };
        if nodes.is_empty() {
            return Err(fail("no cluster nodes are given".into()));
        }
        let mut builder =
            redis::cluster::ClusterClientBuilder::new(nodes.iter().map(String::as_str))
                .connection_timeout(Duration::from_secs(5))
                .response_timeout(Duration::from_secs(10));
        if let Some(ca) = ca {
            builder = builder.certs(tls_certificates(ca).map_err(fail)?);
        }
        let client = builder.build().map_err(|e| fail(e.to_string()))?;
        let store = RedisClusterOnline {
            client,
            connection: Reconnecting::new(shown),
            prefix: prefix.to_string(),
        };
        store.with(|c| {
            redis::cmd("HLEN")
                .arg(store.stamps())
                .query::<u64>(c)
                .map(|_| ())
        })?;
        Ok(store)
    }

    fn fail(&self, e: impl std::fmt::Display) -> StoreError {
        self.connection.fail(e)
    }

    /// Runs `f` on the connection ([`Reconnecting::with`]).
    fn with<T>(
        &self,
        f: impl FnOnce(&mut ClusterConnection) -> redis::RedisResult<T>,
    ) -> Result<T, StoreError> {
        self.connection.with(|| self.client.get_connection(), f)
    }

    /// Runs a pipeline (its commands may go to several nodes; not a transaction).
    fn run<T: redis::FromRedisValue>(&self, pipe: &ClusterPipeline) -> Result<T, StoreError> {
        self.with(|c| pipe.query(c))
    }

    fn stamps(&self) -> String {
        format!("{}:stamps", self.prefix)
    }

    fn keyset(&self, table: &str) -> String {
        format!("{}:keyset:{table}", self.prefix)
    }

    fn entity(&self, table: &str, entity_hex: &str) -> String {
        format!("{}:entity:{table}:{{{entity_hex}}}", self.prefix)
    }

    /// The stamp of `table`, if it has one.
    fn stamp(&self, table: &str) -> Result<Option<ClusterStamp>, StoreError> {
        let bytes: Option<Vec<u8>> =
            self.with(|c| redis::cmd("HGET").arg(self.stamps()).arg(table).query(c))?;
        bytes.map(|b| self.stamp_of(&b)).transpose()
    }

    fn stamp_of(&self, bytes: &[u8]) -> Result<ClusterStamp, StoreError> {
        serde_json::from_slice(bytes).map_err(|e| self.fail(format!("unreadable stamp: {e}")))
    }

    /// The table's sorted entities (hex).
    fn entities(&self, table: &str) -> Result<Vec<String>, StoreError> {
        let mut members: Vec<String> =
            self.with(|c| redis::cmd("SMEMBERS").arg(self.keyset(table)).query(c))?;
        members.sort();
        Ok(members)
    }

    /// Writes version `seq` of the entities `changes` of `table` (not yet visible), after
    /// reading their field names and floors; returns the entities that are gone.
    fn write_versions(
        &self,
        table: &str,
        seq: u64,
        changes: &[(String, Change<'_>)],
    ) -> Result<Vec<String>, StoreError> {
        if changes.is_empty() {
            return Ok(Vec::new());
        }
        let mut read = cluster_pipe();
        for (entity, _) in changes {
            let key = self.entity(table, entity);
            read.cmd("HKEYS").arg(&key).cmd("HGET").arg(&key).arg(FLOOR);
        }
        let replies: Vec<redis::Value> = self.run(&read)?;
        let mut replies = replies.into_iter();
        let mut write = cluster_pipe();
        let added: Vec<&String> = (changes.iter())
            .filter(|(_, c)| matches!(c, Change::Put { .. }))
            .map(|(e, _)| e)
            .collect();
        if !added.is_empty() {
            write
                .cmd("SADD")
                .arg(self.keyset(table))
                .arg(&added)
                .ignore();
        }
        let mut gone = Vec::new();
        for (entity, change) in changes {
            let (names, floor) = (replies.next(), replies.next());
            let names: Vec<Vec<u8>> = (names.map(from_value).transpose())
                .map_err(|e| self.fail(e))?
                .unwrap_or_default();
            let floor: Option<String> = (floor.map(from_value).transpose())
                .map_err(|e| self.fail(e))?
                .flatten();
            let floor = floor.and_then(|f| f.parse().ok()).unwrap_or(0);
            let plan = plan(&names, floor, seq, *change);
            let key = self.entity(table, entity);
            if !plan.remove.is_empty() {
                write.cmd("HDEL").arg(&key).arg(&plan.remove).ignore();
            }
            write.cmd("HSET").arg(&key).arg(&plan.set).ignore();
            match change {
                Change::Put { .. } => {
                    write.cmd("PERSIST").arg(&key).ignore();
                }
                Change::Gone => gone.push(entity.clone()),
            }
        }
        self.run::<()>(&write)?;
        Ok(gone)
    }
}

impl OnlineStore for RedisClusterOnline {
    fn apply(&self, writes: &[OnlineWrite]) -> Result<usize, StoreError> {
        let mut commits: Vec<(String, Vec<u8>)> = Vec::new();
        let mut gone: Vec<(String, Vec<String>)> = Vec::new();
        for write in writes {
            let current = self.stamp(&write.table)?;
            if !is_new(current.as_ref().map(|c| &c.stamp), &write.stamp) {
                continue;
            }
            let seq = current.map_or(0, |c| c.seq) + 1;
            let put_entities: Vec<String> = write.puts.iter().map(|p| hex(&p.key)).collect();
            let written: HashSet<&String> = put_entities.iter().collect();
            let mut changes: Vec<(String, Change<'_>)> = Vec::new();
            if write.replace {
                for entity in self.entities(&write.table)? {
                    if !written.contains(&entity) {
                        changes.push((entity, Change::Gone));
                    }
                }
            }
            // Deletes come before puts: a key deleted and written again in one epoch has only
            // what it is written with.
            let mut renewed = HashSet::new();
            for key in &write.deletes {
                let entity = hex(key);
                if written.contains(&entity) {
                    renewed.insert(entity);
                } else {
                    changes.push((entity, Change::Gone));
                }
            }
            for (put, entity) in write.puts.iter().zip(&put_entities) {
                let change = Change::Put {
                    write: put,
                    replace: write.replace || renewed.contains(entity),
                };
                changes.push((entity.clone(), change));
            }
            let removed = self.write_versions(&write.table, seq, &changes)?;
            gone.push((write.table.clone(), removed));
            let stamp = ClusterStamp {
                stamp: OnlineStamp {
                    // Counted when read (SCARD).
                    keys: 0,
                    committed_unix_ms: unix_ms(),
                    ..write.stamp.clone()
                },
                seq,
            };
            let bytes = serde_json::to_vec(&stamp).map_err(|e| self.fail(e))?;
            commits.push((write.table.clone(), bytes));
        }
        if commits.is_empty() {
            return Ok(0);
        }
        // The commit: every table's new stamp in one command.
        self.with(|c| {
            redis::cmd("HSET")
                .arg(self.stamps())
                .arg(&commits)
                .query::<()>(c)
        })?;
        // Gone entities leave the key set and expire once no reader can need them.
        let mut cleanup = cluster_pipe();
        for (table, entities) in &gone {
            if entities.is_empty() {
                continue;
            }
            cleanup
                .cmd("SREM")
                .arg(self.keyset(table))
                .arg(entities)
                .ignore();
            for entity in entities {
                cleanup
                    .cmd("EXPIRE")
                    .arg(self.entity(table, entity))
                    .arg(GONE_TTL.as_secs())
                    .ignore();
            }
        }
        if !gone.iter().all(|(_, e)| e.is_empty()) {
            self.run::<()>(&cleanup)?;
        }
        Ok(commits.len())
    }

    fn tables(&self) -> Result<Vec<(String, OnlineStamp)>, StoreError> {
        let all: Vec<(String, Vec<u8>)> =
            self.with(|c| redis::cmd("HGETALL").arg(self.stamps()).query(c))?;
        let mut out = Vec::with_capacity(all.len());
        for (table, bytes) in all {
            let keys: u64 = self.with(|c| redis::cmd("SCARD").arg(self.keyset(&table)).query(c))?;
            let stamp = self.stamp_of(&bytes)?.stamp;
            out.push((table, OnlineStamp { keys, ..stamp }));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// Reads every entity's whole hash (its segments with it), and returns of each the
    /// segments `wanted` names.
    fn get_selected(
        &self,
        table: &str,
        keys: &[&[u8]],
        wanted: &dyn Fn(&[u8]) -> WantedSegments,
    ) -> Result<Option<(OnlineStamp, Vec<Option<EntityState>>)>, StoreError> {
        let entities: Vec<String> = keys.iter().map(|k| hex(k)).collect();
        for _ in 0..READ_ATTEMPTS {
            let started = Instant::now();
            let Some(stamp) = self.stamp(table)? else {
                return Ok(None);
            };
            let mut read = cluster_pipe();
            read.cmd("SCARD").arg(self.keyset(table));
            for entity in &entities {
                read.cmd("HGETALL").arg(self.entity(table, entity));
            }
            let replies: Vec<redis::Value> = self.run(&read)?;
            if started.elapsed() > READ_GUARD {
                continue;
            }
            let mut replies = replies.into_iter();
            let count: u64 = (replies.next().map(from_value).transpose())
                .map_err(|e| self.fail(e))?
                .unwrap_or(0);
            let mut values = Vec::with_capacity(entities.len());
            let mut stale = false;
            for reply in replies {
                let fields: Vec<(Vec<u8>, Vec<u8>)> =
                    from_value(reply).map_err(|e| self.fail(e))?;
                match resolve(&fields, stamp.seq) {
                    Resolved::Absent => values.push(None),
                    Resolved::Present(mut state) => {
                        wanted(&state.head).keep_in(&mut state);
                        values.push(Some(state));
                    }
                    Resolved::Stale => stale = true,
                }
            }
            if stale {
                continue;
            }
            let stamp = OnlineStamp {
                keys: count,
                ..stamp.stamp
            };
            return Ok(Some((stamp, values)));
        }
        Err(self.fail(format!(
            "`{table}` changed faster than {READ_ATTEMPTS} reads could follow"
        )))
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
        let seq = self.stamp(table)?.map_or(0, |s| s.seq);
        let entity = hex(key);
        let key = self.entity(table, &entity);
        let mut pipe = cluster_pipe();
        pipe.cmd("DEL").arg(&key).ignore();
        pipe.cmd("HSET").arg(&key).arg(whole(state, seq)).ignore();
        pipe.cmd("SADD")
            .arg(self.keyset(table))
            .arg(&entity)
            .ignore();
        self.run(&pipe)
    }

    fn drop_table(&self, table: &str) -> Result<bool, StoreError> {
        // The stamp first: from then on readers find no table.
        let removed: u64 =
            self.with(|c| redis::cmd("HDEL").arg(self.stamps()).arg(table).query(c))?;
        let entities = self.entities(table)?;
        let mut pipe = cluster_pipe();
        for entity in &entities {
            pipe.cmd("DEL").arg(self.entity(table, entity)).ignore();
        }
        pipe.cmd("DEL").arg(self.keyset(table)).ignore();
        self.run::<()>(&pipe)?;
        Ok(removed > 0)
    }

    fn describe(&self) -> String {
        format!("redis cluster {}", self.connection.shown())
    }
}
