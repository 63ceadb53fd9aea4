//! What a checkpoint holds: everything a restarted run needs to continue exactly where the
//! committed epoch ended, consistent at one barrier.

use crate::source::PartitionProgress;
use crate::watermark::WatermarkState;
use quiver_store::StagedFile;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// The definition of a view as far as its state is concerned. Two identities that differ mean
/// the state of one cannot serve the other.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ViewIdentity {
    /// View name.
    pub name: String,
    /// Fingerprint of the view's SQL text as written.
    pub sql: u64,
    /// Entity key expressions.
    pub keys: Vec<String>,
    /// The window aggregates, one description per feature (aggregate, input, frame).
    pub windows: Vec<String>,
    /// Output columns with their types.
    pub columns: Vec<String>,
}

impl ViewIdentity {
    /// The plan fingerprint that view-state envelopes and online tables carry: the identity
    /// and the state format version (key state encoded by another format is another plan's).
    pub fn fingerprint(&self) -> u64 {
        let text = serde_json::to_string(self).unwrap_or_default();
        let format = super::envelope::FORMAT_VERSION;
        super::envelope::fingerprint(format!("{text}/format {format}").as_bytes())
    }
}

/// One view's part of a checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ViewCheckpoint {
    /// The definition the state belongs to.
    pub identity: ViewIdentity,
    /// Window state in its own envelope (kind view state, the identity's fingerprint): see
    /// [`super::view_state::KeyStates`].
    #[serde(with = "serde_bytes")]
    pub state: Vec<u8>,
    /// Whether `state` holds only what changed since the previous epoch's checkpoint (which
    /// recovery then reads too, back to a full one).
    pub incremental: bool,
    /// Feature rows committed so far in this run.
    pub rows: u64,
}

/// The dead letters of one epoch: appended to the dead-letter file when the epoch commits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetterCommit {
    /// The dead-letter file readers see.
    pub path: PathBuf,
    /// The epoch's dead letters, synced, if it had any.
    pub staged: Option<PathBuf>,
    /// Length of the dead-letter file before this epoch (0 on a run's first commit: a new
    /// run replaces the previous run's dead letters).
    pub len_before: u64,
    /// Its length with this epoch's dead letters.
    pub len_after: u64,
}

/// The effects of one epoch on the outputs, redone idempotently by recovery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitRecord {
    /// Feature-row root directory.
    pub root: PathBuf,
    /// Views under `root`.
    pub views: Vec<String>,
    /// Feature-row files to publish.
    pub files: Vec<StagedFile>,
    /// Dead letters to append.
    pub dead_letters: DeadLetterCommit,
    /// Whether this commit replaces a previous run's output (the first commit of a run).
    pub replaces_previous: bool,
    /// Delta commits of the epoch into the feature store (`quiver run --store`).
    pub tables: Vec<TableCommit>,
    /// The object store (its URL) the feature store is on, when it is on one: then the
    /// committed paths of `files` and the tables' directories are relative to it.
    pub store: Option<String>,
    /// The epoch's messages to Kafka topics (`output.kafka`).
    pub kafka: Option<crate::kafka_output::KafkaCommit>,
    /// The epoch's writes to the online store.
    pub online: Option<crate::online::epoch::OnlineCommit>,
}

/// One Delta table's commit of an epoch: files (already among the published ones) added under a
/// `txn` action (application, epoch), so redoing it after a crash adds nothing twice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableCommit {
    /// The table's directory.
    pub table: PathBuf,
    /// The epoch's files in the table, by their committed paths.
    pub files: Vec<PathBuf>,
    /// The writing application (`quiver-run/<run>`).
    pub app: String,
    /// The epoch.
    pub epoch: u64,
    /// What the commit records in `commitInfo.quiver` (JSON): positions, watermark, version.
    pub info: String,
    /// The event-time column, whose newest value in the epoch's files the commit records.
    pub event_time: String,
}

/// The rows reordered but not yet released to the views, as Arrow IPC.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReorderState {
    /// An Arrow IPC stream of the buffered rows (empty when none).
    #[serde(with = "serde_bytes")]
    pub ipc: Vec<u8>,
    /// Event time of each buffered row.
    pub times: Vec<i64>,
}

/// Totals of the run so far, so that a resumed run reports the whole run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    /// Source records consumed.
    pub events: u64,
    /// Events that reached the views.
    pub accepted: u64,
    /// Dead letters by reason.
    pub dead_letters: BTreeMap<String, u64>,
    /// Files fully read.
    pub files_done: usize,
}

/// A committed checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Epoch number (1 for a run's first checkpoint).
    pub epoch: u64,
    /// Identifier of the run (names its output files).
    pub run: String,
    /// Whether the source ended: the run is done and the next one starts afresh.
    pub complete: bool,
    /// When it was written (milliseconds since the Unix epoch).
    pub written_unix_ms: u64,
    /// Pipeline name.
    pub pipeline: String,
    /// What identifies the input.
    pub source: String,
    /// Progress per source partition.
    pub partitions: Vec<PartitionProgress>,
    /// Watermarks per partition and of the job.
    pub watermarks: WatermarkState,
    /// Events waiting for the watermark.
    pub reorder: ReorderState,
    /// Per view state.
    pub views: Vec<ViewCheckpoint>,
    /// Totals so far.
    pub counters: Counters,
    /// The epoch's output effects.
    pub commit: CommitRecord,
}

impl Checkpoint {
    /// Whether some view's state is incremental: the checkpoints before this one are needed.
    pub fn is_incremental(&self) -> bool {
        self.views.iter().any(|v| v.incremental)
    }
}
