//! One shard of a job (`quiver run --shard I/N`): what changes when several active instances
//! share a job's key space (see [`crate::shard_instance`], which starts these).
//!
//! A shard job reads every source partition, decides lateness exactly as an unsharded job
//! would, and keeps, per view, only the events whose key it owns ([`KeyShard`], applied by the
//! views themselves). Everything else a job owns is its own: checkpoints, staging, outputs and
//! dead letters under `<output>/shard-I-of-N/`, the consumer group it commits offsets to, the
//! transactional id of its output topics. Records that are not tied to a key (undecodable
//! messages, transform failures, missing event times) are dead letters of shard 0 only; a late
//! event is a dead letter of each shard that owns its key in some view, naming those views when
//! not all of them.

use crate::compile::CompiledPipeline;
use crate::config::PipelineConfig;
use crate::error::JobError;
use arrow::array::AsArray;
use arrow::datatypes::UInt64Type;
use arrow::record_batch::RecordBatch;
use quiver_sql::lineage::OFFSET_COLUMN;
use quiver_sql::{FeatureView, KeyShard};
use std::collections::HashMap;

/// Why `--serve` is refused for one shard (a reader needs every shard's keys).
pub const SHARD_DOES_NOT_SERVE: &str = "a shard does not serve: serve a sharded job from its instances (`quiver run --serve` with `online.redis` or `redis_cluster`) or with `quiver serve`";

/// Gives a shard its own consumer group (`<group>.shard-I-of-N`, for lag tools: each shard
/// reads every partition) and its own transactional id for output topics (one writer per id).
pub fn shard_config(config: &mut PipelineConfig, shard: KeyShard) {
    let suffix = shard.dir_name();
    if let Some(kafka) = config.source.kafka.as_mut() {
        kafka.group_id = Some(format!("{}.{suffix}", kafka.group(&config.name)));
    }
    if let Some(out) = config.output.kafka.as_mut() {
        let id =
            (out.transactional_id.clone()).unwrap_or_else(|| format!("quiver-{}", config.name));
        out.transactional_id = Some(format!("{id}.{suffix}"));
    }
}

/// Which dead letters a shard writes.
pub struct ShardRouting {
    shard: KeyShard,
    /// The views, compiled once more (their operators own the first copies), to find the keys
    /// of late events.
    views: Vec<FeatureView>,
}

/// A late row this shard writes a dead letter for, and what to add to its detail.
pub struct OwnedLate {
    /// Row of the late batch.
    pub row: usize,
    /// `Some` when the row's keys in other views belong to other shards: the views it was
    /// dropped from here.
    pub views: Option<Vec<String>>,
}

impl ShardRouting {
    /// The routing of `shard` in `pipeline`.
    pub async fn new(pipeline: &CompiledPipeline, shard: KeyShard) -> Result<Self, JobError> {
        let views = CompiledPipeline::compile(pipeline.loaded.clone())
            .await?
            .views;
        Ok(ShardRouting { shard, views })
    }

    /// The shard.
    pub fn shard(&self) -> KeyShard {
        self.shard
    }

    /// Whether this shard writes dead letters that have no key (shard 0 does).
    pub fn writes_unkeyed(&self) -> bool {
        self.shard.index() == 0
    }

    /// The rows of `late` (late events of one partition, feature-stream rows with their hidden
    /// offsets) whose dead letters this shard writes: those whose key this shard owns in at
    /// least one view, and those no view keeps when this is shard 0.
    pub async fn owned_late(&self, late: &RecordBatch) -> Result<Vec<OwnedLate>, JobError> {
        let offsets = hidden_offsets(late)?;
        let row_of: HashMap<u64, usize> =
            offsets.iter().enumerate().map(|(i, &o)| (o, i)).collect();
        // Per row: the views keeping it, and those of them whose key is this shard's.
        let mut keeping = vec![0usize; late.num_rows()];
        let mut here: Vec<Vec<String>> = vec![Vec::new(); late.num_rows()];
        for view in &self.views {
            let (kept, shards) = view.key_shards(late.clone(), self.shard.count()).await?;
            for (offset, shard) in hidden_offsets(&kept)?.into_iter().zip(shards) {
                let Some(&row) = row_of.get(&offset) else {
                    continue;
                };
                keeping[row] += 1;
                if shard == self.shard.index() {
                    here[row].push(view.name().to_string());
                }
            }
        }
        let mut out = Vec::new();
        for (row, views) in here.into_iter().enumerate() {
            if keeping[row] == 0 {
                if self.writes_unkeyed() {
                    out.push(OwnedLate { row, views: None });
                }
            } else if views.len() == keeping[row] {
                out.push(OwnedLate { row, views: None });
            } else if !views.is_empty() {
                out.push(OwnedLate {
                    row,
                    views: Some(views),
                });
            }
        }
        Ok(out)
    }
}

/// The hidden offset column of a feature-stream batch.
fn hidden_offsets(batch: &RecordBatch) -> Result<Vec<u64>, JobError> {
    let column = (batch.column_by_name(OFFSET_COLUMN))
        .and_then(|c| c.as_primitive_opt::<UInt64Type>())
        .ok_or_else(|| {
            JobError::Other(format!("late events lack their `{OFFSET_COLUMN}` column"))
        })?;
    Ok((0..column.len()).map(|i| column.value(i)).collect())
}
