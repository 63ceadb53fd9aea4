//! The seam between the runtime and a kind of input: a [`SourceConnector`] names its partitions
//! and reads each one, in offset order, on its own task. Files, the generator and Kafka
//! implement it.

use crate::error::JobError;
use crate::source::PartitionProgress;
use quiver_connectors::PartitionItem;
use tokio::sync::mpsc;

/// What a partition reader sends.
pub enum ReaderMessage {
    /// The partition was opened; its size in bytes (files: checked against a checkpoint's).
    Opened(u64),
    /// Records in offset order.
    Item(PartitionItem),
    /// The partition ended.
    Done,
    /// A live partition was read to its current end; more may come.
    CaughtUp,
}

/// Where a partition reader sends its records (a small bounded channel: back-pressure).
pub type ReaderSender = mpsc::Sender<Result<ReaderMessage, JobError>>;

/// A kind of input: its partitions and how each is read.
pub trait SourceConnector: Send + Sync {
    /// The partitions' names, in partition order (stable across runs of the same input).
    fn partition_names(&self) -> Vec<String>;

    /// What identifies this input: a resumed run must read the same one.
    fn fingerprint(&self) -> String;

    /// Records known in advance (for the progress bar), if any.
    fn expected_events(&self) -> Option<u64> {
        None
    }

    /// Partitions read at the same time; further ones open, in order, as earlier ones end.
    fn max_open(&self) -> usize {
        1
    }

    /// Whether partitions are live and can go idle (files and the generator never do).
    fn is_live(&self) -> bool {
        false
    }

    /// Whether the end of every partition is the end of the input, so that every buffered
    /// event is final then (files, the generator, a Kafka source with `stop_at_end`); else
    /// the ends only mean caught up, and a later run continues.
    fn end_is_final(&self) -> bool {
        true
    }

    /// Whether partitions are files (the progress bar counts files done).
    fn counts_files(&self) -> bool {
        false
    }

    /// Starts reading `partition` after `progress.position`, sending to `tx` until it ends or
    /// the receiver is gone.
    fn spawn_reader(&self, partition: usize, progress: PartitionProgress, tx: ReaderSender);

    /// Each partition's end offset (what the next record will get), for consumer lag; `None`
    /// for inputs without one (files, the generator), per partition `None` where unknown.
    fn end_offsets(&self) -> Option<Vec<Option<u64>>> {
        None
    }

    /// [`SourceConnector::end_offsets`] as the source last heard them, without asking anyone
    /// (recorded with every checkpoint).
    fn cached_end_offsets(&self) -> Option<Vec<Option<u64>>> {
        None
    }

    /// Puts the partitions in the order of `names` (a checkpoint's order, with partitions that
    /// are new since then after them); `false` when some of `names` are gone. Only live
    /// sources, whose partitions can be added, support it.
    fn arrange(&self, _names: &[String]) -> bool {
        false
    }

    /// A checkpoint holding `partitions` is durable (Kafka commits the offsets to its
    /// consumer group, for lag tooling); `last` when the run is about to stop.
    fn committed(&self, _partitions: &[PartitionProgress], _last: bool) {}
}
