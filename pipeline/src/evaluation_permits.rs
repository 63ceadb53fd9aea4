//! Permits to evaluate backfill's key partitions: a few at once, and together within the
//! memory budget.
//!
//! Each partition evaluated (or evaluated and waiting for its turn to be sent) holds one of
//! `concurrency` permits, and bytes of the budget in proportion to its rows: its estimated
//! evaluation memory. Counting partitions alone had to assume that every one of them is as
//! large as the largest allowed, so a hot key's partition over half the budget was cut by
//! time (spilled and evaluated by the streaming windows) although, beside the ordinary
//! partitions actually running, it fits. Weighing them lets such a partition be evaluated
//! whole while smaller ones share what it leaves.

use crate::error::JobError;
use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The budget is counted in units of this many bytes (a semaphore takes at most `u32::MAX`
/// permits at once).
const UNIT_BYTES: usize = 64 << 10;

/// Permits for evaluating partitions: at most `concurrency` at once, their estimated memory
/// within a budget.
#[derive(Clone)]
pub struct EvaluationPermits {
    partitions: Arc<Semaphore>,
    bytes: Arc<Semaphore>,
    /// Units of the whole budget.
    units: u32,
    /// A partition's estimated evaluation memory per row.
    row_bytes: usize,
}

/// One partition's permit, held until its rows are sent on.
pub struct EvaluationPermit {
    _partition: OwnedSemaphorePermit,
    _bytes: OwnedSemaphorePermit,
}

impl EvaluationPermits {
    /// Permits for `concurrency` partitions at once, together weighing at most `budget`
    /// bytes, a partition `row_bytes` a row.
    pub fn new(concurrency: usize, budget: usize, row_bytes: usize) -> Self {
        let units = (budget / UNIT_BYTES).clamp(1, u32::MAX as usize) as u32;
        Self {
            partitions: Arc::new(Semaphore::new(concurrency.max(1))),
            bytes: Arc::new(Semaphore::new(units as usize)),
            units,
            row_bytes,
        }
    }

    /// The units a partition of `rows` holds: at least one, at most the whole budget (a
    /// partition is never refused, only made to wait for the others).
    fn units_for(&self, rows: usize) -> u32 {
        let bytes = rows.saturating_mul(self.row_bytes);
        (bytes.div_ceil(UNIT_BYTES)).clamp(1, self.units as usize) as u32
    }

    /// A permit for a partition of `rows`, if one is free now.
    pub fn try_acquire(&self, rows: usize) -> Option<EvaluationPermit> {
        let partition = Arc::clone(&self.partitions).try_acquire_owned().ok()?;
        let bytes = Arc::clone(&self.bytes)
            .try_acquire_many_owned(self.units_for(rows))
            .ok()?;
        Some(EvaluationPermit {
            _partition: partition,
            _bytes: bytes,
        })
    }

    /// A permit for a partition of `rows`, waiting until the partitions holding permits let
    /// go of enough of them.
    pub async fn acquire(&self, rows: usize) -> Result<EvaluationPermit, JobError> {
        let stopped = |_| JobError::Other("backfill's evaluations stopped".into());
        let partition = (Arc::clone(&self.partitions).acquire_owned().await).map_err(stopped)?;
        let bytes = (Arc::clone(&self.bytes).acquire_many_owned(self.units_for(rows)))
            .await
            .map_err(stopped)?;
        Ok(EvaluationPermit {
            _partition: partition,
            _bytes: bytes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn partitions_are_counted_and_weighed() {
        // A row weighs one unit here.
        let permits = EvaluationPermits::new(2, 100 * UNIT_BYTES, UNIT_BYTES);
        // A large partition and a small one fit together; a third waits for the count.
        let large = permits.try_acquire(70).expect("the large one");
        let small = permits.try_acquire(1).expect("a small one beside it");
        assert!(permits.try_acquire(1).is_none(), "two at once at most");
        drop(small);
        // Two large ones do not fit together.
        assert!(permits.try_acquire(70).is_none(), "over the budget");
        // A refused try holds nothing back: a small one still fits.
        let small = permits.try_acquire(29).expect("what is left");
        drop((large, small));
        // A partition larger than the whole budget gets all of it, alone.
        let huge = permits.acquire(1000).await.unwrap();
        assert!(
            permits.try_acquire(1).is_none(),
            "the huge one holds the budget"
        );
        drop(huge);
        assert!(permits.try_acquire(100).is_some());
    }

    #[tokio::test]
    async fn a_waiting_partition_gets_its_permit_when_others_let_go() {
        let permits = EvaluationPermits::new(2, 10 * UNIT_BYTES, UNIT_BYTES);
        let held = permits.try_acquire(8).unwrap();
        let waiting = {
            let permits = permits.clone();
            tokio::spawn(async move { permits.acquire(5).await.map(|_| ()) })
        };
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "it waits for the budget");
        drop(held);
        waiting.await.unwrap().unwrap();
    }
}
