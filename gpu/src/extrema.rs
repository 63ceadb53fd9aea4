//! Window minimum and maximum.

use serde::{Deserialize, Serialize};
use std::collections::VecDeque;

/// Which extreme to track.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Extreme {
    /// The smallest value.
    Min,
    /// The largest value.
    Max,
}

impl Extreme {
    /// Whether `candidate` makes `incumbent` obsolete (it is at least as extreme).
    #[inline]
    fn dominates<K: Ord>(self, candidate: K, incumbent: K) -> bool {
        match self {
            Extreme::Min => candidate <= incumbent,
            Extreme::Max => candidate >= incumbent,
        }
    }
}

/// A float as an integer with the same order as IEEE totalOrder (Rust's `f64::total_cmp`),
/// every NaN first made the canonical positive NaN, so NaN is the largest value whatever its
/// sign bit (as in PostgreSQL and DataFusion). Exact inputs are tracked as themselves.
#[inline]
pub fn float_key(x: f64) -> i128 {
    let x = if x.is_nan() { f64::NAN } else { x };
    let bits = x.to_bits() as i64;
    (bits ^ (((bits >> 63) as u64) >> 1) as i64) as i128
}

/// The float of a [`float_key`].
#[inline]
pub fn key_float(key: i128) -> f64 {
    let key = key as i64;
    f64::from_bits((key ^ (((key >> 63) as u64) >> 1) as i64) as u64)
}

/// Minimum or maximum over a window that slides forward, of values given as ordered integer
/// keys ([`float_key`] for floats, the values themselves for exact inputs).
///
/// A sliding window keeps a monotonic deque of `(sequence number, key)`: amortised O(1) per
/// event, and it only holds values that can still become the extreme. An unbounded window only
/// needs the running extreme.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
pub enum WindowExtreme<K> {
    /// Extreme of a sliding window.
    Sliding {
        /// Which extreme.
        extreme: Extreme,
        /// Candidates, keys monotonic from front (current extreme) to back.
        candidates: VecDeque<(u64, K)>,
    },
    /// Extreme of everything seen.
    Running {
        /// Which extreme.
        extreme: Extreme,
        /// Current extreme, `None` before the first value.
        value: Option<K>,
    },
}

impl<K: Clone> Clone for WindowExtreme<K> {
    fn clone(&self) -> Self {
        match self {
            WindowExtreme::Sliding {
                extreme,
                candidates,
            } => WindowExtreme::Sliding {
                extreme: *extreme,
                candidates: candidates.clone(),
            },
            WindowExtreme::Running { extreme, value } => WindowExtreme::Running {
                extreme: *extreme,
                value: value.clone(),
            },
        }
    }

    /// Copies `source` into the candidates' memory (an online read copies the trackers of
    /// every entity it moves to the read time into the same buffers).
    fn clone_from(&mut self, source: &Self) {
        match (self, source) {
            (
                WindowExtreme::Sliding {
                    extreme,
                    candidates,
                },
                WindowExtreme::Sliding {
                    extreme: from,
                    candidates: from_candidates,
                },
            ) => {
                *extreme = *from;
                candidates.clone_from(from_candidates);
            }
            (this, source) => *this = source.clone(),
        }
    }
}

impl<K: Copy + Ord> WindowExtreme<K> {
    /// A new tracker for a sliding (`sliding = true`) or unbounded window.
    pub fn new(extreme: Extreme, sliding: bool) -> Self {
        if sliding {
            WindowExtreme::Sliding {
                extreme,
                candidates: VecDeque::new(),
            }
        } else {
            WindowExtreme::Running {
                extreme,
                value: None,
            }
        }
    }

    /// Adds the key of the event with sequence number `seq`.
    #[inline]
    pub fn add(&mut self, seq: u64, x: K) {
        match self {
            WindowExtreme::Sliding {
                extreme,
                candidates,
            } => {
                while let Some(&(_, back)) = candidates.back() {
                    if extreme.dominates(x, back) {
                        candidates.pop_back();
                    } else {
                        break;
                    }
                }
                candidates.push_back((seq, x));
            }
            WindowExtreme::Running { extreme, value } => {
                *value = Some(match *value {
                    Some(v) if !extreme.dominates(x, v) => v,
                    _ => x,
                });
            }
        }
    }

    /// Drops candidates of events with sequence numbers below `start` (they left the window).
    #[inline]
    pub fn evict_before(&mut self, start: u64) {
        if let WindowExtreme::Sliding { candidates, .. } = self {
            while candidates.front().is_some_and(|&(seq, _)| seq < start) {
                candidates.pop_front();
            }
        }
    }

    /// Asks the CPU to load the candidates ([`crate::prefetch`]).
    #[inline]
    pub(crate) fn prefetch(&self) {
        if let WindowExtreme::Sliding { candidates, .. } = self {
            crate::prefetch::deque(candidates);
        }
    }

    /// Forgets every value (keeping the memory for the next window).
    pub fn clear(&mut self) {
        match self {
            WindowExtreme::Sliding { candidates, .. } => candidates.clear(),
            WindowExtreme::Running { value, .. } => *value = None,
        }
    }

    /// The current extreme's key, `None` when the window holds no value.
    #[inline]
    pub fn value(&self) -> Option<K> {
        match self {
            WindowExtreme::Sliding { candidates, .. } => candidates.front().map(|&(_, v)| v),
            WindowExtreme::Running { value, .. } => *value,
        }
    }
}

/// A min/max tracker with keys as narrow as its input allows: `i64` for floats (their
/// [`float_key`]s fit) and integers, `i128` for decimals. Half the memory per candidate for
/// the common inputs.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
pub enum Tracker {
    /// Keys that fit `i64`.
    Narrow(WindowExtreme<i64>),
    /// 128-bit keys.
    Wide(WindowExtreme<i128>),
}

impl Clone for Tracker {
    fn clone(&self) -> Self {
        match self {
            Tracker::Narrow(w) => Tracker::Narrow(w.clone()),
            Tracker::Wide(w) => Tracker::Wide(w.clone()),
        }
    }

    /// Copies `source` into this tracker's memory where both are of one width.
    fn clone_from(&mut self, source: &Self) {
        match (self, source) {
            (Tracker::Narrow(w), Tracker::Narrow(from)) => w.clone_from(from),
            (Tracker::Wide(w), Tracker::Wide(from)) => w.clone_from(from),
            (this, source) => *this = source.clone(),
        }
    }
}

impl Tracker {
    /// A tracker of `extreme` over a sliding or unbounded window, `wide` for 128-bit keys.
    pub fn new(extreme: Extreme, sliding: bool, wide: bool) -> Self {
        if wide {
            Tracker::Wide(WindowExtreme::new(extreme, sliding))
        } else {
            Tracker::Narrow(WindowExtreme::new(extreme, sliding))
        }
    }

    /// Adds the key of event `seq` (it fits the tracker's width).
    #[inline]
    pub fn add(&mut self, seq: u64, key: i128) {
        match self {
            Tracker::Narrow(w) => w.add(seq, key as i64),
            Tracker::Wide(w) => w.add(seq, key),
        }
    }

    /// Drops candidates of events before `start`.
    #[inline]
    pub fn evict_before(&mut self, start: u64) {
        match self {
            Tracker::Narrow(w) => w.evict_before(start),
            Tracker::Wide(w) => w.evict_before(start),
        }
    }

    /// Asks the CPU to load the candidates ([`crate::prefetch`]).
    #[inline]
    pub(crate) fn prefetch(&self) {
        match self {
            Tracker::Narrow(w) => w.prefetch(),
            Tracker::Wide(w) => w.prefetch(),
        }
    }

    /// Forgets every value (keeping the memory for the next window).
    pub fn clear(&mut self) {
        match self {
            Tracker::Narrow(w) => w.clear(),
            Tracker::Wide(w) => w.clear(),
        }
    }

    /// The current extreme's key.
    #[inline]
    pub fn value(&self) -> Option<i128> {
        match self {
            Tracker::Narrow(w) => w.value().map(i128::from),
            Tracker::Wide(w) => w.value(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sliding_max_matches_brute_force() {
        let xs: Vec<f64> = (0..300).map(|i| ((i * 7919) % 113) as f64 - 50.0).collect();
        let mut w = Tracker::new(Extreme::Max, true, false);
        for (i, &x) in xs.iter().enumerate() {
            w.add(i as u64, float_key(x));
            let start = i.saturating_sub(9);
            w.evict_before(start as u64);
            let expected = xs[start..=i].iter().cloned().fold(f64::MIN, f64::max);
            assert_eq!(w.value().map(key_float), Some(expected));
        }
    }

    #[test]
    fn running_min() {
        let mut w = WindowExtreme::<i64>::new(Extreme::Min, false);
        assert_eq!(w.value(), None);
        for (i, x) in [5, 3, 4].into_iter().enumerate() {
            w.add(i as u64, x);
        }
        assert_eq!(w.value(), Some(3));
    }

    #[test]
    fn float_keys_follow_total_order_with_nan_largest() {
        let xs = [
            f64::NEG_INFINITY,
            -1e300,
            -1.5,
            -0.0,
            0.0,
            f64::MIN_POSITIVE,
            2.0,
            f64::INFINITY,
        ];
        for pair in xs.windows(2) {
            assert!(float_key(pair[0]) < float_key(pair[1]), "{pair:?}");
        }
        assert!(float_key(-f64::NAN) > float_key(f64::INFINITY));
        for x in xs {
            assert_eq!(key_float(float_key(x)).to_bits(), x.to_bits());
        }
        assert!(key_float(float_key(-f64::NAN)).is_nan());
    }
}
