//! Compensated (Neumaier) summation that also supports removing values.
//!
//! Sliding windows add and remove values for as long as a key lives; a plain `f64` running sum
//! drifts with every removal. Carrying the rounding error separately keeps the window sum within
//! a few ulps of the exact sum of the values currently inside it.

use serde::{Deserialize, Serialize};

/// A running sum with an error-compensation term.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct CompensatedSum {
    sum: f64,
    compensation: f64,
}

impl CompensatedSum {
    /// Adds `x` to the sum.
    #[inline]
    pub fn add(&mut self, x: f64) {
        let t = self.sum + x;
        if self.sum.abs() >= x.abs() {
            self.compensation += (self.sum - t) + x;
        } else {
            self.compensation += (x - t) + self.sum;
        }
        self.sum = t;
    }

    /// Removes a value previously added.
    #[inline]
    pub fn remove(&mut self, x: f64) {
        self.add(-x);
    }

    /// The running sum and its compensation term, as kept.
    pub(crate) fn parts(&self) -> (f64, f64) {
        (self.sum, self.compensation)
    }

    /// A sum from its [`CompensatedSum::parts`].
    pub(crate) fn from_parts(sum: f64, compensation: f64) -> Self {
        CompensatedSum { sum, compensation }
    }

    /// The compensated value of the sum.
    #[inline]
    pub fn value(&self) -> f64 {
        self.sum + self.compensation
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removal_does_not_drift() {
        let mut s = CompensatedSum::default();
        let mut naive = 0.0f64;
        for i in 0..100_000 {
            let x = 0.1 * (i % 7) as f64 + 1e9 * ((i % 2) as f64);
            s.add(x);
            naive += x;
            if i >= 10 {
                let y = 0.1 * ((i - 10) % 7) as f64 + 1e9 * (((i - 10) % 2) as f64);
                s.remove(y);
                naive -= y;
            }
        }
        // The last 10 values are exactly representable sums of small terms and 5e9.
        let exact: f64 = (99_990..100_000)
            .map(|i| 0.1 * (i % 7) as f64 + 1e9 * ((i % 2) as f64))
            .sum();
        assert!(
            (s.value() - exact).abs() <= 1e-6,
            "{} vs {}",
            s.value(),
            exact
        );
        assert!((naive - exact).abs() > (s.value() - exact).abs());
    }
}
