//! A small deterministic pseudo-random sequence for the crate's unit tests.

/// Xorshift64 from `state` (not zero).
pub(crate) fn xorshift(mut state: u64) -> impl FnMut() -> u64 {
    move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    }
}
