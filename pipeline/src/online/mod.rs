//! The online store from the runtime's side: what `quiver run` writes at each checkpoint
//! epoch ([`epoch`]) and how a request reads features at a time T from it ([`read`]).
//!
//! Each view version keeps, per entity, its window state (the events still inside its range
//! windows and its running lifetime aggregates) as of the last committed epoch; a read moves a
//! copy of that state to T and reads every window ending at T. So values decay as T moves on
//! with no new events, exactly as SQL's `RANGE` frames over `[T - w, T]` would give.

pub mod epoch;
pub mod read;
pub mod retention;
pub mod shard_files;
pub mod shard_tables;
pub mod state_cache;
mod values_json;
pub mod verify;

use crate::compile::CompiledPipeline;
use crate::config::LoadedConfig;
use crate::error::JobError;
use quiver_gpu::{PartsError, ReadState, WindowPlan};
use quiver_store::online::{
    table_name, EmbeddedOnline, EntityState, OnlineStore, RedisClusterOnline, RedisOnline,
};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Decodes a key's window state as the store keeps it, for reads with `plan`: its head and
/// the segments read of it (all, or those reads up to a time need).
pub fn decode_state(plan: &WindowPlan, state: &EntityState) -> Result<ReadState, PartsError> {
    let segments: Vec<(u64, &[u8])> = (state.segments.iter())
        .map(|(id, s)| (*id, &s[..]))
        .collect();
    ReadState::from_parts(plan, &state.head, &segments)
}

/// Per view of `pipeline`, in view order: its version and its online table (`view@version`).
pub fn view_tables(pipeline: &CompiledPipeline) -> Result<Vec<(String, String)>, JobError> {
    (0..pipeline.views.len())
        .map(|i| {
            let definition = crate::registry::ViewDefinition::of(pipeline, i)?;
            let table = table_name(&definition.view, &definition.version);
            Ok((definition.version, table))
        })
        .collect()
}

/// Opens the embedded online store at `path` (created if missing).
fn open_store(path: &Path) -> Result<SharedOnline, JobError> {
    let store = EmbeddedOnline::open(path)?;
    Ok(SharedOnline(Arc::new(store)))
}

/// The Redis server of `loaded`'s `online.redis`, or its Redis Cluster of
/// `online.redis_cluster`, if it names one.
fn open_redis(loaded: &LoadedConfig) -> Result<Option<SharedOnline>, JobError> {
    let online = &loaded.config.online;
    let expand = |what: &str, url: &str| {
        quiver_connectors::env::expand_env(url)
            .map_err(|e| JobError::Other(format!("online.{what}: {e}")))
    };
    let ca = online.redis_ca.as_deref();
    if let Some(url) = &online.redis {
        let url = expand("redis", url)?;
        let store = RedisOnline::open(&url, &online.redis_prefix, ca)?;
        return Ok(Some(SharedOnline(Arc::new(store))));
    }
    if online.redis_cluster.is_empty() {
        return Ok(None);
    }
    let nodes = (online.redis_cluster.iter())
        .map(|n| expand("redis_cluster", n))
        .collect::<Result<Vec<_>, _>>()?;
    let store = RedisClusterOnline::open(&nodes, &online.redis_prefix, ca)?;
    Ok(Some(SharedOnline(Arc::new(store))))
}

/// The embedded store file of `loaded`: `file` if given, else `online.path`, else
/// `online.redb` in `output_dir` (the job's output directory, not a shard's).
fn embedded_path(loaded: &LoadedConfig, file: Option<&Path>, output_dir: &Path) -> PathBuf {
    match file {
        Some(file) => file.to_path_buf(),
        None => {
            (loaded.config.online.path.clone()).unwrap_or_else(|| output_dir.join("online.redb"))
        }
    }
}

/// Opens the online store of `loaded` to read it: its Redis server (or cluster) when
/// `online.redis` (`online.redis_cluster`) is set,
/// else the embedded file `file` if given, else `online.path`, else `online.redb` in
/// `output_dir`. For a sharded job's embedded store (the config has `shards`, or the file is
/// missing and shard files are beside it) every shard's file, read as one store.
pub fn open_configured(
    loaded: &LoadedConfig,
    file: Option<&Path>,
    output_dir: &Path,
) -> Result<SharedOnline, JobError> {
    if file.is_none() {
        if let Some(redis) = open_redis(loaded)? {
            return Ok(redis);
        }
    }
    let path = embedded_path(loaded, file, output_dir);
    let configured = (loaded.config.source.kafka.as_ref()).and_then(|k| k.shards);
    let shards = match configured {
        Some(count) => Some(shard_tables::shard_files(&path, count)),
        None if !path.exists() => shard_tables::existing_shard_files(&path),
        None => None,
    };
    match shards {
        Some(files) => Ok(SharedOnline(Arc::new(shard_files::ShardFiles::open(
            &files,
        )?))),
        None => open_store(&path),
    }
}

/// Opens the online store a run of `loaded` writes: the job's Redis server, else its embedded
/// file (in `output_dir`, the job's output directory, unless `online.path` says otherwise),
/// or for shard `shard` the shard's own file beside it ([`shard_tables::shard_file`]).
pub fn open_for_run(
    loaded: &LoadedConfig,
    output_dir: &Path,
    shard: Option<quiver_sql::KeyShard>,
) -> Result<SharedOnline, JobError> {
    if let Some(redis) = open_redis(loaded)? {
        return Ok(redis);
    }
    let path = embedded_path(loaded, None, output_dir);
    match shard {
        Some(shard) => open_store(&shard_tables::shard_file(&path, shard)),
        None => open_store(&path),
    }
}

/// An open online store shared by the parts of one process (a run and the server next to it).
#[derive(Clone)]
pub struct SharedOnline(pub Arc<dyn OnlineStore>);

impl std::fmt::Debug for SharedOnline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "OnlineStore({})", self.0.describe())
    }
}
