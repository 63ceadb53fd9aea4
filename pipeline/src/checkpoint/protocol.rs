//! The decisions of the checkpoint protocol, free of I/O: when to take a checkpoint, whether
//! a run resumes or starts afresh, whether a checkpoint fits the pipeline as it is now, and
//! whether every participant of an epoch has answered its barrier.

use super::state::{Checkpoint, ViewIdentity};
use std::time::Duration;

/// When checkpoints are taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckpointPolicy {
    /// Wall-clock time between checkpoints.
    pub interval: Option<Duration>,
    /// Source records between checkpoints.
    pub every_events: Option<u64>,
}

/// Decides, as records flow, when the next barrier is due.
#[derive(Debug, Clone)]
pub struct CheckpointTrigger {
    policy: CheckpointPolicy,
    last: Duration,
    events: u64,
}

impl CheckpointTrigger {
    /// A trigger whose clock starts at `now`.
    pub fn new(policy: CheckpointPolicy, now: Duration) -> Self {
        CheckpointTrigger {
            policy,
            last: now,
            events: 0,
        }
    }

    /// Counts consumed source records.
    pub fn record(&mut self, events: u64) {
        self.events += events;
    }

    /// Whether a checkpoint is due at `now`.
    pub fn due(&self, now: Duration) -> bool {
        let by_time = self
            .policy
            .interval
            .is_some_and(|i| now.saturating_sub(self.last) >= i);
        (by_time || self.due_by_events()) && self.events > 0
    }

    /// Whether the count of records (`every_events`) makes a checkpoint due: such a
    /// checkpoint is taken at that record even while the previous one is still being
    /// written, so that the epochs of an input are the same in every run.
    pub fn due_by_events(&self) -> bool {
        self.policy.every_events.is_some_and(|n| self.events >= n)
    }

    /// A checkpoint was taken at `now`.
    pub fn taken(&mut self, now: Duration) {
        self.last = now;
        self.events = 0;
    }
}

/// How a run starts.
#[derive(Debug, Clone, PartialEq)]
pub enum Startup {
    /// From the beginning of the input; the first commit replaces the previous output.
    Fresh,
    /// From this checkpoint of an unfinished run.
    Resume(Box<Checkpoint>),
}

/// Decides how a run starts from the latest checkpoint (already rolled forward) and the
/// `--fresh` flag: an unfinished run is resumed unless the user asks to start over.
pub fn startup(latest: Option<Checkpoint>, fresh: bool) -> Startup {
    match latest {
        Some(c) if !c.complete && !fresh => Startup::Resume(Box::new(c)),
        _ => Startup::Fresh,
    }
}

/// What differs between the views a checkpoint was taken for and the views of the pipeline
/// now, one sentence per difference, naming the view; empty when the state fits.
pub fn view_changes(then: &[ViewIdentity], now: &[ViewIdentity]) -> Vec<String> {
    let mut changes = Vec::new();
    for old in then {
        let Some(new) = now.iter().find(|v| v.name == old.name) else {
            changes.push(format!("view `{}` was removed", old.name));
            continue;
        };
        let name = &old.name;
        if old.keys != new.keys {
            changes.push(format!(
                "view `{name}`: its key changed from ({}) to ({})",
                old.keys.join(", "),
                new.keys.join(", ")
            ));
        }
        if old.windows != new.windows {
            let gone: Vec<&String> = old
                .windows
                .iter()
                .filter(|w| !new.windows.contains(w))
                .collect();
            let added: Vec<&String> = new
                .windows
                .iter()
                .filter(|w| !old.windows.contains(w))
                .collect();
            changes.push(format!(
                "view `{name}`: its windows changed (removed {gone:?}, added {added:?})"
            ));
        }
        if old.columns != new.columns {
            changes.push(format!(
                "view `{name}`: its output columns changed from [{}] to [{}]",
                old.columns.join(", "),
                new.columns.join(", ")
            ));
        }
        if old.sql != new.sql && changes.iter().all(|c| !c.contains(&format!("`{name}`"))) {
            changes.push(format!("view `{name}`: its SQL text changed"));
        }
    }
    for new in now {
        if !then.iter().any(|v| v.name == new.name) {
            changes.push(format!("view `{}` was added", new.name));
        }
    }
    changes
}

/// The answers of one epoch's barrier, collected from every participant.
#[derive(Debug)]
pub struct EpochAcks<T> {
    epoch: u64,
    acks: Vec<Option<T>>,
}

/// An answer that does not fit the epoch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AckError {
    /// An answer for another epoch.
    #[error("participant {participant} answered epoch {got} during epoch {expected}")]
    WrongEpoch {
        /// Who answered.
        participant: usize,
        /// Epoch answered.
        got: u64,
        /// Epoch in progress.
        expected: u64,
    },
    /// A second answer, or one from a participant that does not exist.
    #[error("participant {0} answered twice or does not exist")]
    Unexpected(usize),
}

impl<T> EpochAcks<T> {
    /// Waits for `participants` answers to the barrier of `epoch`.
    pub fn new(epoch: u64, participants: usize) -> Self {
        EpochAcks {
            epoch,
            acks: (0..participants).map(|_| None).collect(),
        }
    }

    /// Records an answer.
    pub fn ack(&mut self, participant: usize, epoch: u64, value: T) -> Result<(), AckError> {
        if epoch != self.epoch {
            return Err(AckError::WrongEpoch {
                participant,
                got: epoch,
                expected: self.epoch,
            });
        }
        match self.acks.get_mut(participant) {
            Some(slot @ None) => {
                *slot = Some(value);
                Ok(())
            }
            _ => Err(AckError::Unexpected(participant)),
        }
    }

    /// Every answer, in participant order, once all have arrived; `None` before.
    pub fn complete(self) -> Result<Vec<T>, Self> {
        if self.acks.iter().all(Option::is_some) {
            Ok(self.acks.into_iter().flatten().collect())
        } else {
            Err(self)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trigger_by_time_or_events_but_never_empty() {
        let policy = CheckpointPolicy {
            interval: Some(Duration::from_secs(1)),
            every_events: Some(100),
        };
        let mut t = CheckpointTrigger::new(policy, Duration::ZERO);
        assert!(!t.due(Duration::from_secs(5)), "nothing consumed yet");
        t.record(10);
        assert!(!t.due(Duration::from_millis(500)));
        assert!(t.due(Duration::from_secs(1)));
        // Due by time only: such a checkpoint may wait for the one being written.
        assert!(!t.due_by_events());
        t.taken(Duration::from_secs(1));
        t.record(100);
        assert!(t.due(Duration::from_millis(1001)));
        assert!(t.due_by_events());
        let off = CheckpointPolicy {
            interval: None,
            every_events: None,
        };
        let mut t = CheckpointTrigger::new(off, Duration::ZERO);
        t.record(1_000_000);
        assert!(!t.due(Duration::from_secs(3600)));
    }

    fn identity(name: &str, windows: &[&str]) -> ViewIdentity {
        ViewIdentity {
            name: name.into(),
            sql: 1,
            keys: vec!["card_id".into()],
            windows: windows.iter().map(|w| w.to_string()).collect(),
            columns: vec!["card_id: Utf8".into()],
        }
    }

    #[test]
    fn view_changes_name_the_view_and_the_change() {
        let then = vec![identity("cards", &["count 10m"]), identity("gone", &[])];
        let mut now = vec![
            identity("cards", &["count 10m", "sum 1h"]),
            identity("new", &[]),
        ];
        let changes = view_changes(&then, &now);
        assert_eq!(changes.len(), 3, "{changes:?}");
        assert!(changes[0].contains("`cards`") && changes[0].contains("sum 1h"));
        assert!(changes[1].contains("`gone` was removed"));
        assert!(changes[2].contains("`new` was added"));
        now[0].windows = then[0].windows.clone();
        now[0].sql = 2;
        let changes = view_changes(&then[..1], &now[..1]);
        assert_eq!(
            changes,
            vec!["view `cards`: its SQL text changed".to_string()]
        );
        assert!(view_changes(&then, &then).is_empty());
    }

    #[test]
    fn acks_complete_only_with_every_participant_of_the_epoch() {
        let mut acks = EpochAcks::new(3, 2);
        assert_eq!(
            acks.ack(0, 2, "a"),
            Err(AckError::WrongEpoch {
                participant: 0,
                got: 2,
                expected: 3
            })
        );
        acks.ack(1, 3, "b").unwrap();
        assert_eq!(acks.ack(1, 3, "b"), Err(AckError::Unexpected(1)));
        assert_eq!(acks.ack(5, 3, "x"), Err(AckError::Unexpected(5)));
        let mut acks = acks.complete().expect_err("participant 0 is missing");
        acks.ack(0, 3, "a").unwrap();
        assert_eq!(acks.complete().unwrap(), vec!["a", "b"]);
    }
}
