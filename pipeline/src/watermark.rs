//! Event-time watermarks per source partition, the job watermark, and the late-event rule.
//!
//! Each partition's watermark trails the largest event time it has delivered by
//! `max_lateness`. The job watermark is the minimum over the partitions that are open and not
//! idle, and never moves back. An event is late when its time is older than the job watermark
//! at its arrival. Results are exact for any arrival order in which every partition's own
//! disorder is at most `max_lateness`: such an order produces no late events, however far the
//! partitions are apart in time.
//!
//! Everything here is pure: wall-clock time comes in as an argument, so idleness is tested
//! without sleeping.

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Where a partition is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PartitionStatus {
    /// Not read yet (files beyond the open-file limit); does not hold the watermark back.
    Pending,
    /// Being read.
    Open,
    /// Fully read; does not hold the watermark back.
    Finished,
}

/// Watermark state of one partition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PartitionClock {
    /// Lifecycle.
    pub status: PartitionStatus,
    /// Largest on-time event time delivered.
    pub max_seen: Option<i64>,
    /// Whether the partition can go idle (live sources; files and the generator never do:
    /// they always have data until they finish).
    pub live: bool,
    /// Wall-clock time of the partition's last data (monotonic, from the caller).
    #[serde(skip)]
    last_data: Option<Duration>,
    /// Whether the partition is idle and ignored by the job watermark.
    #[serde(skip)]
    idle: bool,
}

/// The watermarks of all partitions of a source and of the job.
#[derive(Debug, Clone, PartialEq)]
pub struct Watermarks {
    lateness: i64,
    idle_timeout: Option<Duration>,
    clocks: Vec<PartitionClock>,
    job: i64,
}

/// What a checkpoint keeps of [`Watermarks`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WatermarkState {
    /// Per partition.
    pub clocks: Vec<PartitionClock>,
    /// The job watermark.
    pub job: i64,
}

impl Watermarks {
    /// Watermarks for `partitions` partitions, all pending, trailing by `max_lateness_micros`;
    /// live partitions without data for `idle_timeout` stop holding the job watermark back.
    pub fn new(
        max_lateness_micros: i64,
        partitions: usize,
        live: bool,
        idle_timeout: Option<Duration>,
    ) -> Self {
        let clock = PartitionClock {
            status: PartitionStatus::Pending,
            max_seen: None,
            live,
            last_data: None,
            idle: false,
        };
        Watermarks {
            lateness: max_lateness_micros.max(0),
            idle_timeout,
            clocks: vec![clock; partitions],
            job: i64::MIN,
        }
    }

    /// Starts the job watermark at `floor`: earlier events are late (a store run continuing
    /// a table whose events end just before it).
    pub fn with_floor(mut self, floor: i64) -> Self {
        self.job = self.job.max(floor);
        self
    }

    /// The job watermark (`i64::MIN` before any event).
    pub fn current(&self) -> i64 {
        self.job
    }

    /// Largest event time seen over all partitions.
    pub fn max_seen(&self) -> Option<i64> {
        self.clocks.iter().filter_map(|c| c.max_seen).max()
    }

    /// A partition's own watermark.
    pub fn partition(&self, partition: usize) -> i64 {
        self.clocks
            .get(partition)
            .and_then(|c| c.max_seen)
            .map_or(i64::MIN, |m| m.saturating_sub(self.lateness))
    }

    /// Whether a live partition is idle (no data for the idle timeout; it does not hold the
    /// job watermark back).
    pub fn is_idle(&self, partition: usize) -> bool {
        self.clocks.get(partition).is_some_and(|c| c.idle)
    }

    /// Status of a partition.
    pub fn status(&self, partition: usize) -> Option<PartitionStatus> {
        self.clocks.get(partition).map(|c| c.status)
    }

    /// Starts reading a partition at wall-clock time `now`.
    pub fn open(&mut self, partition: usize, now: Duration) {
        if let Some(c) = self.clocks.get_mut(partition) {
            c.status = PartitionStatus::Open;
            c.last_data = Some(now);
            c.idle = false;
        }
        self.recompute();
    }

    /// A partition ended.
    pub fn finish(&mut self, partition: usize) {
        if let Some(c) = self.clocks.get_mut(partition) {
            c.status = PartitionStatus::Finished;
        }
        self.recompute();
    }

    /// Observes events of `partition` in arrival order at wall-clock time `now`; returns for
    /// each whether it is on time (`true`) or late.
    pub fn observe(&mut self, partition: usize, times: &[i64], now: Duration) -> Vec<bool> {
        let Some(clock) = self.clocks.get_mut(partition) else {
            return vec![false; times.len()];
        };
        clock.last_data = Some(now);
        let was_idle = std::mem::replace(&mut clock.idle, false);
        let lateness = self.lateness;
        let mut on_time = Vec::with_capacity(times.len());
        let mut job = self.job;
        for &t in times {
            let ok = t >= job;
            on_time.push(ok);
            if !ok {
                continue;
            }
            let clock = &mut self.clocks[partition];
            if clock.max_seen.is_none_or(|m| t > m) {
                clock.max_seen = Some(t);
                // Only a rise of this partition's watermark can raise the job's.
                if t.saturating_sub(lateness) > job {
                    self.recompute();
                    job = self.job;
                }
            }
        }
        if was_idle {
            self.recompute();
        }
        on_time
    }

    /// Marks live partitions without data for longer than the idle timeout as idle; returns
    /// whether the job watermark moved.
    pub fn check_idle(&mut self, now: Duration) -> bool {
        let Some(timeout) = self.idle_timeout else {
            return false;
        };
        let mut changed = false;
        for c in &mut self.clocks {
            let quiet = c
                .last_data
                .is_some_and(|t| now.saturating_sub(t) >= timeout);
            if c.live && c.status == PartitionStatus::Open && quiet && !c.idle {
                c.idle = true;
                changed = true;
            }
        }
        let before = self.job;
        if changed {
            self.recompute();
        }
        self.job != before
    }

    /// The open partition to read next: the one with the lowest watermark (ties: the first),
    /// so that partitions advance together and little has to wait in the reorder buffer.
    pub fn next_to_read(&self) -> Option<usize> {
        self.clocks
            .iter()
            .enumerate()
            .filter(|(_, c)| c.status == PartitionStatus::Open)
            .min_by_key(|(i, _)| (self.partition(*i), *i))
            .map(|(i, _)| i)
    }

    fn recompute(&mut self) {
        let holding = self
            .clocks
            .iter()
            .enumerate()
            .filter(|(_, c)| c.status == PartitionStatus::Open && !c.idle)
            .map(|(i, _)| self.partition(i))
            .min();
        if let Some(w) = holding {
            self.job = self.job.max(w);
        }
    }

    /// The state to checkpoint.
    pub fn snapshot(&self) -> WatermarkState {
        WatermarkState {
            clocks: self.clocks.clone(),
            job: self.job,
        }
    }

    /// Restores checkpointed state at wall-clock time `now` (idleness starts afresh).
    /// Partitions beyond the checkpoint's (a topic that grew) start pending.
    pub fn restore(&mut self, state: WatermarkState, now: Duration) {
        let count = self.clocks.len();
        let mut clocks = state.clocks;
        if let Some(template) = self.clocks.first().cloned() {
            while clocks.len() < count {
                clocks.push(template.clone());
            }
        }
        self.clocks = clocks;
        for c in &mut self.clocks {
            c.last_data = Some(now);
        }
        self.job = state.job;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: Duration = Duration::ZERO;

    fn one(lateness: i64) -> Watermarks {
        let mut w = Watermarks::new(lateness, 1, false, None);
        w.open(0, NOW);
        w
    }

    #[test]
    fn disorder_within_bound_is_on_time() {
        let mut w = one(10);
        assert_eq!(
            w.observe(0, &[100, 95, 90, 120, 110, 109], NOW),
            vec![true, true, true, true, true, false]
        );
        assert_eq!(w.current(), 110);
    }

    #[test]
    fn zero_lateness_accepts_ties() {
        let mut w = one(0);
        assert_eq!(
            w.observe(0, &[5, 5, 4, 6], NOW),
            vec![true, true, false, true]
        );
    }

    #[test]
    fn the_slowest_open_partition_holds_the_job_watermark() {
        let mut w = Watermarks::new(0, 3, false, None);
        w.open(0, NOW);
        w.open(1, NOW);
        assert_eq!(w.observe(0, &[1000, 1001], NOW), vec![true, true]);
        assert_eq!(w.current(), i64::MIN, "partition 1 has no data yet");
        assert_eq!(w.next_to_read(), Some(1));
        assert_eq!(w.observe(1, &[50, 60], NOW), vec![true, true]);
        assert_eq!(w.current(), 60);
        // Partition 1 is far behind partition 0, but its own order is what counts.
        assert_eq!(w.observe(1, &[70, 59], NOW), vec![true, false]);
        w.finish(1);
        assert_eq!(w.current(), 1001);
        // A partition opened later is judged against the job watermark.
        w.open(2, NOW);
        assert_eq!(w.observe(2, &[10, 2000], NOW), vec![false, true]);
        assert_eq!(w.current(), 1001, "the job watermark never moves back");
        w.finish(0);
        assert_eq!(w.current(), 2000);
        assert_eq!(w.next_to_read(), Some(2));
    }

    #[test]
    fn an_idle_live_partition_stops_holding_the_watermark_until_it_speaks() {
        let timeout = Duration::from_secs(5);
        let mut w = Watermarks::new(0, 2, true, Some(timeout));
        w.open(0, NOW);
        w.open(1, NOW);
        w.observe(1, &[10], NOW);
        w.observe(0, &[500], Duration::from_secs(1));
        assert_eq!(w.current(), 10);
        assert!(!w.check_idle(Duration::from_secs(4)));
        w.observe(0, &[600], Duration::from_secs(5));
        assert!(
            w.check_idle(Duration::from_secs(6)),
            "partition 1 went idle"
        );
        assert_eq!(w.current(), 600);
        // It speaks again: its old events are late now, new ones hold the watermark again.
        assert_eq!(
            w.observe(1, &[20, 700], Duration::from_secs(7)),
            vec![false, true]
        );
        w.observe(0, &[900], Duration::from_secs(7));
        assert_eq!(w.current(), 700);
    }

    #[test]
    fn partitions_added_since_the_snapshot_start_pending() {
        let mut w = Watermarks::new(0, 1, true, None);
        w.open(0, NOW);
        w.observe(0, &[100], NOW);
        let mut grown = Watermarks::new(0, 2, true, None);
        grown.restore(w.snapshot(), NOW);
        assert_eq!(grown.status(0), Some(PartitionStatus::Open));
        assert_eq!(grown.status(1), Some(PartitionStatus::Pending));
        assert_eq!(grown.current(), 100);
    }

    #[test]
    fn snapshot_round_trips() {
        let mut w = Watermarks::new(5, 2, false, None);
        w.open(0, NOW);
        w.observe(0, &[100], NOW);
        let state = w.snapshot();
        let mut r = Watermarks::new(5, 2, false, None);
        r.restore(state, NOW);
        assert_eq!(r.current(), w.current());
        assert_eq!(r.status(0), Some(PartitionStatus::Open));
        assert_eq!(r.observe(0, &[94, 96], NOW), vec![false, true]);
    }
}
