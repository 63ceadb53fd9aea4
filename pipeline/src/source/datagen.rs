//! The generator as a source: one partition, deterministic, so a resumed run regenerates and
//! skips what was consumed.

use crate::error::JobError;
use crate::source::connector::{ReaderMessage, ReaderSender, SourceConnector};
use crate::source::PartitionProgress;
use quiver_connectors::{Datagen, DatagenConfig, PartitionItem, DATAGEN_PARTITION};

/// The generator: one partition named `datagen`.
pub struct DatagenConnector {
    config: DatagenConfig,
}

impl DatagenConnector {
    /// A generator with `config` (validated).
    pub fn new(config: DatagenConfig) -> Result<Self, JobError> {
        config.validate()?;
        Ok(DatagenConnector { config })
    }
}

impl SourceConnector for DatagenConnector {
    fn partition_names(&self) -> Vec<String> {
        vec![DATAGEN_PARTITION.to_string()]
    }

    fn fingerprint(&self) -> String {
        serde_json::json!({ "datagen": &self.config }).to_string()
    }

    fn expected_events(&self) -> Option<u64> {
        Some(self.config.events)
    }

    fn spawn_reader(&self, _partition: usize, progress: PartitionProgress, tx: ReaderSender) {
        let config = self.config.clone();
        tokio::task::spawn_blocking(move || generate(config, progress.position, tx));
    }
}

/// Runs the generator (deterministic: a resumed run regenerates and skips what was consumed).
fn generate(config: DatagenConfig, position: Option<u64>, tx: ReaderSender) {
    let generator = match Datagen::new(config) {
        Ok(g) => g,
        Err(e) => {
            let _ = tx.blocking_send(Err(e.into()));
            return;
        }
    };
    for batch in generator {
        if let Some(item) = PartitionItem::rows(batch).after(position) {
            if tx.blocking_send(Ok(ReaderMessage::Item(item))).is_err() {
                return;
            }
        }
    }
    let _ = tx.blocking_send(Ok(ReaderMessage::Done));
}
