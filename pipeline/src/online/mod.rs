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
pub mod verify;

use crate::compile::CompiledPipeline;
use crate::config::LoadedConfig;
use crate::error::JobError;
use quiver_gpu::{KeyWindowState, PartsError};
use quiver_store::online::{table_name, EmbeddedOnline, EntityState, OnlineStore, RedisOnline};
use std::path::Path;
use std::sync::Arc;

/// Decodes a key's window state as the store keeps it (a head and segments).
pub fn decode_state(state: &EntityState) -> Result<KeyWindowState, PartsError> {
    let segments: Vec<(u64, &[u8])> = (state.segments.iter())
        .map(|(id, s)| (*id, &s[..]))
        .collect();
    Ok(KeyWindowState::from_parts(&state.head, &segments)?.0)
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

/// Opens the online store of `loaded`: its Redis server when `online.redis` is set, else the
/// embedded file `file` if given, else `online.path`, else `online.redb` in `output_dir`.
pub fn open_configured(
    loaded: &LoadedConfig,
    file: Option<&Path>,
    output_dir: &Path,
) -> Result<SharedOnline, JobError> {
    let online = &loaded.config.online;
    match (&online.redis, file) {
        (Some(url), None) => {
            let url = quiver_connectors::env::expand_env(url)
                .map_err(|e| JobError::Other(format!("online.redis: {e}")))?;
            let store = RedisOnline::open(&url, &online.redis_prefix, online.redis_ca.as_deref())?;
            Ok(SharedOnline(Arc::new(store)))
        }
        (_, Some(file)) => open_store(file),
        (None, None) => open_store(
            &online
                .path
                .clone()
                .unwrap_or_else(|| output_dir.join("online.redb")),
        ),
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
