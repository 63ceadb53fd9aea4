//! Backfill's input batches held in memory while every view splits them by its key: each
//! batch is let go as soon as the last view has split it, so the input's memory is reused for
//! the views' partitions as they fill instead of being held beside all of them.

use arrow::record_batch::RecordBatch;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// Input batches shared by a number of readers, each reading every batch once.
pub struct SharedInput {
    batches: Vec<Mutex<Option<RecordBatch>>>,
    /// Per batch, the readers that have not yet let it go.
    readers_left: Vec<AtomicUsize>,
}

impl SharedInput {
    /// `batches` for `readers` readers.
    pub fn new(batches: Vec<RecordBatch>, readers: usize) -> Self {
        let readers_left = batches.iter().map(|_| AtomicUsize::new(readers)).collect();
        SharedInput {
            batches: batches.into_iter().map(|b| Mutex::new(Some(b))).collect(),
            readers_left,
        }
    }

    /// The number of batches.
    pub fn len(&self) -> usize {
        self.batches.len()
    }

    /// Whether there are no batches.
    pub fn is_empty(&self) -> bool {
        self.batches.is_empty()
    }

    /// Batch `i`, for a reader that has not let it go yet; `None` once every reader has.
    pub fn get(&self, i: usize) -> Option<RecordBatch> {
        let held = self.batches[i].lock().unwrap_or_else(|e| e.into_inner());
        held.clone()
    }

    /// One reader is done with batch `i` (it must drop its copy too): the last one lets the
    /// batch go.
    pub fn let_go(&self, i: usize) {
        if self.readers_left[i].fetch_sub(1, Ordering::AcqRel) == 1 {
            let mut held = self.batches[i].lock().unwrap_or_else(|e| e.into_inner());
            held.take();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::Int64Array;
    use std::sync::Arc;

    fn batch(v: i64) -> RecordBatch {
        RecordBatch::try_from_iter([("x", Arc::new(Int64Array::from(vec![v])) as _)]).unwrap()
    }

    #[test]
    fn a_batch_goes_when_the_last_reader_lets_it_go() {
        let input = SharedInput::new(vec![batch(1), batch(2)], 2);
        assert_eq!(input.len(), 2);
        assert!(!input.is_empty());
        assert_eq!(input.get(0).unwrap(), batch(1));
        input.let_go(0);
        assert_eq!(input.get(0).unwrap(), batch(1), "one reader still needs it");
        input.let_go(0);
        assert!(input.get(0).is_none());
        assert_eq!(input.get(1).unwrap(), batch(2), "the other batch stays");
    }

    #[test]
    fn readers_on_threads_let_every_batch_go_once() {
        let input = Arc::new(SharedInput::new((0..100).map(batch).collect(), 3));
        let readers: Vec<_> = (0..3)
            .map(|_| {
                let input = Arc::clone(&input);
                std::thread::spawn(move || {
                    (0..input.len())
                        .map(|i| {
                            let rows = input.get(i).expect("not let go by all").num_rows();
                            input.let_go(i);
                            rows
                        })
                        .sum::<usize>()
                })
            })
            .collect();
        for reader in readers {
            assert_eq!(reader.join().unwrap(), 100);
        }
        assert!((0..100).all(|i| input.get(i).is_none()));
    }
}
