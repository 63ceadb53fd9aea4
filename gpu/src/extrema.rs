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
    fn dominates(self, candidate: f64, incumbent: f64) -> bool {
        match self {
            Extreme::Min => candidate.total_cmp(&incumbent).is_le(),
            Extreme::Max => candidate.total_cmp(&incumbent).is_ge(),
        }
    }
}

/// Minimum or maximum over a window that slides forward.
///
/// A sliding window keeps a monotonic deque of `(sequence number, value)`: amortised O(1) per
/// event, and it only holds values that can still become the extreme. An unbounded window only
/// needs the running extreme.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum WindowExtreme {
    /// Extreme of a sliding window.
    Sliding {
        /// Which extreme.
        extreme: Extreme,
        /// Candidates, values monotonic from front (current extreme) to back.
        candidates: VecDeque<(u64, f64)>,
    },
    /// Extreme of everything seen.
    Running {
        /// Which extreme.
        extreme: Extreme,
        /// Current extreme, `None` before the first value.
        value: Option<f64>,
    },
}

impl WindowExtreme {
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

    /// Adds the value of the event with sequence number `seq`. Every NaN counts as the largest
    /// value (as in PostgreSQL and DataFusion), whatever its sign bit.
    #[inline]
    pub fn add(&mut self, seq: u64, x: f64) {
        let x = if x.is_nan() { f64::NAN } else { x };
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

    /// The current extreme, `None` when the window holds no value.
    #[inline]
    pub fn value(&self) -> Option<f64> {
        match self {
            WindowExtreme::Sliding { candidates, .. } => candidates.front().map(|&(_, v)| v),
            WindowExtreme::Running { value, .. } => *value,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sliding_max_matches_brute_force() {
        let xs: Vec<f64> = (0..300).map(|i| ((i * 7919) % 113) as f64).collect();
        let mut w = WindowExtreme::new(Extreme::Max, true);
        for (i, &x) in xs.iter().enumerate() {
            w.add(i as u64, x);
            let start = i.saturating_sub(9);
            w.evict_before(start as u64);
            let expected = xs[start..=i].iter().cloned().fold(f64::MIN, f64::max);
            assert_eq!(w.value(), Some(expected));
        }
    }

    #[test]
    fn running_min() {
        let mut w = WindowExtreme::new(Extreme::Min, false);
        assert_eq!(w.value(), None);
        for (i, x) in [5.0, 3.0, 4.0].into_iter().enumerate() {
            w.add(i as u64, x);
        }
        assert_eq!(w.value(), Some(3.0));
    }
}
