//! Event-time watermark and the late-event rule.

/// Tracks the largest event time seen; the watermark trails it by `max_lateness`.
///
/// An event is late when its time is older than the watermark at its arrival (the watermark
/// before the event itself is seen). Results are exact for any arrival order whose disorder is
/// at most `max_lateness`: such an arrival order produces no late events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Watermark {
    max_lateness: i64,
    max_seen: Option<i64>,
}

impl Watermark {
    /// A watermark trailing by `max_lateness_micros`.
    pub fn new(max_lateness_micros: i64) -> Self {
        Watermark {
            max_lateness: max_lateness_micros.max(0),
            max_seen: None,
        }
    }

    /// The current watermark (`i64::MIN` before any event).
    pub fn current(&self) -> i64 {
        self.max_seen
            .map_or(i64::MIN, |m| m.saturating_sub(self.max_lateness))
    }

    /// Largest event time seen.
    pub fn max_seen(&self) -> Option<i64> {
        self.max_seen
    }

    /// Observes events in arrival order; returns for each whether it is on time (`true`) or late.
    pub fn observe(&mut self, times: &[i64]) -> Vec<bool> {
        times
            .iter()
            .map(|&t| {
                let on_time = t >= self.current();
                if on_time {
                    self.max_seen = Some(self.max_seen.map_or(t, |m| m.max(t)));
                }
                on_time
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disorder_within_bound_is_on_time() {
        let mut w = Watermark::new(10);
        assert_eq!(
            w.observe(&[100, 95, 90, 120, 110, 109]),
            vec![true, true, true, true, true, false]
        );
        assert_eq!(w.current(), 110);
    }

    #[test]
    fn zero_lateness_accepts_ties() {
        let mut w = Watermark::new(0);
        assert_eq!(w.observe(&[5, 5, 4, 6]), vec![true, true, false, true]);
    }
}
