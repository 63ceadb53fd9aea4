//! Quiver feature kernels.
//!
//! This crate holds the math of windowed feature aggregates: per-key sliding window state that
//! is updated incrementally, one event at a time, in event-time order. The CPU backend here is
//! the reference implementation and always available; a CUDA backend (cudarc) will implement the
//! same [`KeyedWindows`] contract for batched, segmented evaluation on a GPU.
//!
//! Semantics (DESIGN.md section 3.1): for an event of key `k` at time `t`, a `RANGE` window of
//! width `w` covers every event of `k` with event time in `[t - w, t]`, ties at `t` included;
//! `UNBOUNDED PRECEDING` covers every event of `k` up to and including `t`. Null inputs are
//! ignored as SQL aggregates ignore them.

pub mod agg;
pub mod compensated;
pub mod error;
pub mod extrema;
pub mod key_state;
pub mod keyed;
pub mod moments;
pub mod output;
pub mod plan;

pub use agg::AggKind;
pub use error::KernelError;
pub use key_state::KeyWindowState;
pub use keyed::{InputColumn, KeyedWindows, WindowSnapshot, WindowSnapshotRef};
pub use output::FeatureOutput;
pub use plan::{Frame, WindowPlan, WindowSpec};
