//! Live figures of a running job, shared with a server in the same process: what `quiver run
//! --serve` shows on `/metrics` besides the online store.

use serde::Serialize;
use std::sync::Mutex;

/// The figures at one moment.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RunFigures {
    /// Source records read.
    pub events: u64,
    /// Events accepted (not dead letters).
    pub accepted: u64,
    /// Dead letters, all reasons.
    pub dead_letters: u64,
    /// The job watermark (µs), once there is one.
    pub watermark_us: Option<i64>,
    /// Checkpoints committed by this process.
    pub checkpoints: u64,
    /// The last checkpoint's time from barrier to durable and published, seconds.
    pub last_checkpoint_s: Option<f64>,
    /// Feature rows committed per view.
    pub view_rows: Vec<(String, u64)>,
}

/// Figures a run updates and a server reads.
#[derive(Debug, Default)]
pub struct RunGauges {
    figures: Mutex<RunFigures>,
}

impl RunGauges {
    /// Changes the figures.
    pub fn update(&self, change: impl FnOnce(&mut RunFigures)) {
        change(&mut self.figures.lock().unwrap_or_else(|e| e.into_inner()));
    }

    /// The figures now.
    pub fn get(&self) -> RunFigures {
        self.figures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}
