//! Where to cut a key partition too large to evaluate at once (a hot key's) by event time into
//! slices of about equal rows: quantiles of a sample of its times, taken as its rows are read,
//! with every row of one time in one slice. Backfill's and training sets' hot partitions are
//! cut this way.

/// Times kept for the cuts, at most about this many (8 bytes each), however large the
/// partition: quantiles of 64k samples place a cut within about 1% of the rows.
const SAMPLED_TIMES: usize = 1 << 16;

/// A sample of a partition's times, every `stride`-th row's.
pub(crate) struct TimeCuts {
    stride: usize,
    seen: usize,
    sampled: Vec<i64>,
}

impl TimeCuts {
    /// A sample of a partition of `rows` rows, read in order.
    pub fn sampling(rows: usize) -> Self {
        let stride = rows.div_ceil(SAMPLED_TIMES).max(1);
        TimeCuts {
            stride,
            seen: 0,
            sampled: Vec::with_capacity(rows / stride + 1),
        }
    }

    /// The next `rows` rows, row `r`'s time being `time(r)`.
    pub fn add(&mut self, rows: usize, time: impl Fn(usize) -> i64) {
        let first = (self.stride - self.seen % self.stride) % self.stride;
        self.sampled
            .extend((first..rows).step_by(self.stride).map(time));
        self.seen += rows;
    }

    /// Where to cut into about `slices` slices (fewer when times repeat): the ascending lower
    /// bounds of slices 1 and after, for [`slice_of`].
    pub fn bounds(mut self, slices: usize) -> Vec<i64> {
        if self.sampled.is_empty() {
            return Vec::new();
        }
        self.sampled.sort_unstable();
        let slices = slices.max(1);
        let n = self.sampled.len();
        let mut bounds: Vec<i64> = (1..slices).map(|i| self.sampled[i * n / slices]).collect();
        bounds.dedup();
        bounds
    }
}

/// The slice of a row of time `t`, given the slices' lower `bounds`: all rows of one time share
/// a slice (which may then hold more).
pub(crate) fn slice_of(bounds: &[i64], t: i64) -> u16 {
    bounds.partition_point(|&b| b <= t) as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cuts(times: &[i64], slices: usize) -> Vec<i64> {
        let mut cuts = TimeCuts::sampling(times.len());
        cuts.add(times.len(), |r| times[r]);
        cuts.bounds(slices)
    }

    #[test]
    fn bounds_cut_equal_counts_and_keep_a_time_together() {
        let times: Vec<i64> = (0..100).map(|i| i / 2).collect(); // each time twice
        let bounds = cuts(&times, 4);
        assert_eq!(bounds, vec![12, 25, 37]);
        let mut sizes = [0; 4];
        for &t in &times {
            sizes[slice_of(&bounds, t) as usize] += 1;
        }
        assert_eq!(sizes, [24, 26, 24, 26]);
        // One time for everything: one slice holds it all, whatever was asked.
        let bounds = cuts(&[7; 50], 5);
        assert_eq!(bounds, vec![7]);
        assert!((0..50).all(|_| slice_of(&bounds, 7) == 1));
        assert!(cuts(&[], 1).is_empty());
    }

    #[test]
    fn a_large_partition_is_cut_from_a_sample_read_in_pieces() {
        // 1M rows of times in shuffled order, each time three times, read in uneven pieces.
        let rows = 1_000_000i64;
        let times: Vec<i64> = (0..rows).map(|i| (i * 7919) % rows / 3).collect();
        let mut cuts = TimeCuts::sampling(times.len());
        let mut read = 0;
        for piece in [1, 4095, 333_333, 1, 500_000, 162_570] {
            cuts.add(piece, |r| times[read + r]);
            read += piece;
        }
        assert_eq!(read, times.len());
        assert!(cuts.sampled.len() <= SAMPLED_TIMES + 1);
        let bounds = cuts.bounds(8);
        assert_eq!(bounds.len(), 7);
        let mut sizes = [0i64; 8];
        for &t in &times {
            sizes[slice_of(&bounds, t) as usize] += 1;
        }
        // Within 2% of an eighth each.
        for size in sizes {
            assert!((size - rows / 8).abs() < rows / 8 / 50, "{sizes:?}");
        }
    }
}
