//! Checkpoints: consistent snapshots of a run (source positions, watermarks, buffered events,
//! window state) committed together with the outputs of the same epoch, so that a run killed
//! at any moment resumes with every feature row and dead letter exactly once.
//!
//! The protocol (see docs/architecture.md): at a barrier the coordinator captures source
//! progress, watermarks and the reorder buffer, each view answers with its window state and
//! its staged files, the dead letters of the epoch are synced; then the checkpoint file is
//! renamed into place (the commit point) and the epoch's files are published (roll-forward,
//! redone by recovery if the process dies half way).

pub mod chain;
pub mod commit;
pub mod dir;
pub mod envelope;
pub mod lock;
pub mod protocol;
pub mod state;
pub mod view_state;

pub use dir::CheckpointDir;
pub use protocol::{startup, CheckpointPolicy, CheckpointTrigger, Startup};
pub use state::{Checkpoint, ViewIdentity};
