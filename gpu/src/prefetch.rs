//! Software prefetch: asking the CPU to start loading memory a few steps before it is used.
//!
//! A streaming view visits its keys' states one after another, each scattered over a dozen
//! heap blocks (times, values, frame groups, moments, min/max candidates). On a machine whose
//! memory answers a random load in ~250 ns, waiting for each block in turn cost the demo's card
//! view about 1 µs an event; loads requested a few keys ahead arrive while earlier keys compute.

use std::collections::VecDeque;

/// Cache lines of one block prefetched at most, from each end: a key's few events are all
/// prefetched; a hot key's long deque only where its windows move (its ends), which its own
/// previous events keep in cache anyway.
const MAX_LINES: usize = 4;

/// Bytes of a cache line.
const LINE: usize = 64;

/// Asks the CPU to load the cache line holding `at` (a hint: no effect on what any code reads).
#[inline(always)]
pub(crate) fn line<T>(at: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch never faults and reads nothing the program sees, whatever the address:
    // it only warms the cache.
    unsafe {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        _mm_prefetch::<_MM_HINT_T0>(at.cast::<i8>());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = at;
}

/// Prefetches `items`: every line of a short slice, the first and last [`MAX_LINES`] of a long
/// one.
#[inline]
pub(crate) fn slice<T>(items: &[T]) {
    let bytes = std::mem::size_of_val(items);
    if bytes == 0 {
        return;
    }
    let start = items.as_ptr().cast::<u8>();
    let lines = bytes.div_ceil(LINE);
    let front = lines.min(MAX_LINES);
    for i in 0..front {
        line(start.wrapping_add(i * LINE));
    }
    let last = start.wrapping_add(bytes - 1);
    for i in 0..(lines - front).min(MAX_LINES) {
        line(last.wrapping_sub(i * LINE));
    }
}

/// Prefetches a deque's items ([`slice`] of each of its two halves).
#[inline]
pub(crate) fn deque<T>(items: &VecDeque<T>) {
    let (front, back) = items.as_slices();
    slice(front);
    slice(back);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefetching_changes_nothing() {
        // Empty, short, long and wrapped blocks, and a dangling address: no fault, same data.
        let long: Vec<u64> = (0..10_000).collect();
        slice(&long);
        slice(&long[..3]);
        slice::<u64>(&[]);
        slice::<()>(&[(); 5]);
        let mut wrapped: VecDeque<u64> = VecDeque::with_capacity(8);
        wrapped.extend(0..6);
        wrapped.drain(..4);
        wrapped.extend(6..10);
        deque(&wrapped);
        line(usize::MAX as *const u8);
        line(std::ptr::null::<u8>());
        assert_eq!(long.iter().sum::<u64>(), 49_995_000);
        assert_eq!(wrapped, (4..10).collect::<VecDeque<u64>>());
    }
}
