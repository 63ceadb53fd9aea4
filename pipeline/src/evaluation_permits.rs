//! Permits to evaluate key partitions (backfill's, and training sets'): a few at once, and
//! together within a memory budget.
//!
//! Each partition evaluated (in backfill, or evaluated and waiting for its turn to be sent)
//! holds one of `concurrency` permits, and its estimated evaluation memory in bytes of the
//! budget. Counting partitions alone had to assume that every one of them is as large as the
//! largest allowed, so a hot key's partition over half the budget was cut by time (spilled
//! and evaluated by the streaming windows) although, beside the ordinary partitions actually
//! running, it fits. Weighing them lets such a partition be evaluated whole while smaller ones
//! share what it leaves; one larger than the whole budget (a very hot key) runs alone.

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
}

/// One partition's permit, held while it is evaluated (in backfill, until its rows are sent
/// on).
pub struct EvaluationPermit {
    _partition: OwnedSemaphorePermit,
    _bytes: OwnedSemaphorePermit,
}

impl EvaluationPermits {
    /// Permits for `concurrency` partitions at once, together weighing at most `budget`
    /// bytes.
    pub fn new(concurrency: usize, budget: usize) -> Self {
        let units = (budget / UNIT_BYTES).clamp(1, u32::MAX as usize) as u32;
        Self {
            partitions: Arc::new(Semaphore::new(concurrency.max(1))),
            bytes: Arc::new(Semaphore::new(units as usize)),
            units,
        }
    }

    /// The units a partition of `bytes` holds: at least one, at most the whole budget (a
    /// partition is never refused, only made to wait for the others).
    fn units_for(&self, bytes: usize) -> u32 {
        (bytes.div_ceil(UNIT_BYTES)).clamp(1, self.units as usize) as u32
    }

    /// A permit for a partition weighing `bytes`, if one is free now.
    pub fn try_acquire(&self, bytes: usize) -> Option<EvaluationPermit> {
        let partition = Arc::clone(&self.partitions).try_acquire_owned().ok()?;
        let bytes = Arc::clone(&self.bytes)
            .try_acquire_many_owned(self.units_for(bytes))
            .ok()?;
        Some(EvaluationPermit {
            _partition: partition,
            _bytes: bytes,
        })
    }

    /// A permit for a partition weighing `bytes`, waiting until the partitions holding
    /// permits let go of enough of them.
    pub async fn acquire(&self, bytes: usize) -> Result<EvaluationPermit, JobError> {
        let stopped = |_| JobError::Other("evaluations of key partitions stopped".into());
        let partition = (Arc::clone(&self.partitions).acquire_owned().await).map_err(stopped)?;
        let bytes = (Arc::clone(&self.bytes).acquire_many_owned(self.units_for(bytes)))
            .await
            .map_err(stopped)?;
        Ok(EvaluationPermit {
            _partition: partition,
            _bytes: bytes,
        })
    }

    /// [`EvaluationPermits::acquire`] on a thread of its own (not a runtime's), blocking it
    /// while it waits.
    pub fn acquire_blocking(&self, bytes: usize) -> Result<EvaluationPermit, JobError> {
        futures::executor::block_on(self.acquire(bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn partitions_are_counted_and_weighed() {
        let permits = EvaluationPermits::new(2, 100 * UNIT_BYTES);
        let units = |n: usize| n * UNIT_BYTES;
        // A large partition and a small one fit together; a third waits for the count.
        let large = permits.try_acquire(units(70)).expect("the large one");
        let small = permits
            .try_acquire(units(1))
            .expect("a small one beside it");
        assert!(
            permits.try_acquire(units(1)).is_none(),
            "two at once at most"
        );
        drop(small);
        // Two large ones do not fit together.
        assert!(permits.try_acquire(units(70)).is_none(), "over the budget");
        // A refused try holds nothing back: a small one still fits.
        let small = permits.try_acquire(units(29)).expect("what is left");
        drop((large, small));
        // A partition larger than the whole budget gets all of it, alone.
        let huge = permits.acquire(units(1000)).await.unwrap();
        assert!(
            permits.try_acquire(units(1)).is_none(),
            "the huge one holds the budget"
        );
        drop(huge);
        assert!(permits.try_acquire(units(100)).is_some());
    }

    #[tokio::test]
    async fn a_waiting_partition_gets_its_permit_when_others_let_go() {
        let permits = EvaluationPermits::new(2, 10 * UNIT_BYTES);
        let held = permits.try_acquire(8 * UNIT_BYTES).unwrap();
        let waiting = {
            let permits = permits.clone();
            tokio::spawn(async move { permits.acquire(5 * UNIT_BYTES).await.map(|_| ()) })
        };
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "it waits for the budget");
        drop(held);
        waiting.await.unwrap().unwrap();
    }

    #[test]
    fn threads_block_until_the_budget_is_free() {
        let permits = EvaluationPermits::new(4, 10 * UNIT_BYTES);
        let held = permits.acquire_blocking(8 * UNIT_BYTES).unwrap();
        let (admitted, waiting) = std::sync::mpsc::channel();
        let thread = {
            let permits = permits.clone();
            std::thread::spawn(move || {
                let permit = permits.acquire_blocking(5 * UNIT_BYTES).unwrap();
                admitted.send(()).unwrap();
                drop(permit);
            })
        };
        let timeout = std::time::Duration::from_millis(50);
        assert!(
            waiting.recv_timeout(timeout).is_err(),
            "it waits for the budget"
        );
        drop(held);
        waiting.recv().unwrap();
        thread.join().unwrap();
    }
}
