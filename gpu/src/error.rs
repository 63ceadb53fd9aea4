//! Kernel errors.

/// Errors from window kernels. They signal a broken contract between the runtime and the
/// kernels (the runtime guarantees event-time order per key), never bad user data.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    /// Events of one key arrived out of event-time order.
    #[error("event time {time} for a key came after {last} had been applied: window kernels need increasing event time per key, with tied events adjacent in one call (the reorder buffer must release events in order)")]
    OutOfOrder {
        /// Time of the offending event (microseconds).
        time: i64,
        /// Latest time already applied for the key.
        last: i64,
    },
    /// A point-in-time read asked for a time before events already in a key's state.
    #[error("cannot read windows ending at {at}: the key's state already holds an event at {last} (a read from state is only exact at or after the newest event in it)")]
    ReadBeforeState {
        /// The requested time (microseconds).
        at: i64,
        /// The newest event time in the state.
        last: i64,
    },
    /// Windows ending at a read's time lose events of some keys that were read with only
    /// some of their segments ([`crate::ReadState`]).
    #[error("windows ending at the read time lose events of {} key(s) whose segments were not all read: read those states whole", rows.len())]
    UnreadEvents {
        /// The rows of the states to read whole.
        rows: Vec<usize>,
    },
    /// Input columns do not match the plan.
    #[error("window input mismatch: {0}")]
    InputMismatch(String),
    /// The GPU backend is unavailable or failed (no driver, no GPU, a CUDA error).
    #[error("GPU: {0}")]
    Device(String),
    /// A snapshot could not be encoded or decoded.
    #[error("window state snapshot: {0}")]
    Snapshot(String),
}
