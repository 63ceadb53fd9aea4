//! Running moments of a window: count, sum and the spread around a shift value.

use crate::compensated::CompensatedSum;
use crate::double_double::{two_sum, DoubleDouble};
use serde::{Deserialize, Serialize};

mod wire;

/// How much of [`Moments`] an aggregate needs: counts need only the count, sums and means
/// also the sum, variances also the spread. Updating only what is read saves most of the
/// floating-point work for count and sum features.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum MomentLevel {
    /// The number of values.
    Count,
    /// Count and sum.
    Sum,
    /// Count, sum and the shifted sums for variance.
    Spread,
}

/// Beyond this ratio of the sum of squares around the shift to the spread, the moments are
/// rebuilt around the window's mean. The shifted sums are double-double, so the spread's
/// relative error is about this ratio times 2^-104 (~5e-32): ~5e-20 here. What the rebuild
/// still guards against is a window that kept a shift many orders of magnitude away.
const RESHIFT_RATIO: f64 = 1e12;

/// A plain-`f64` spread above this fraction of the sum of squares means the exact one is above
/// `1 / RESHIFT_RATIO` of it: twice that, far beyond the f64 computation's error.
const DRIFT_SURELY_NOT: f64 = 2.0 / RESHIFT_RATIO;

/// A spread at most this fraction of the sum of squares is rounding noise of the double-double
/// sums (their error is about 2^-104 of it): it is reported as 0.
pub const SPREAD_NOISE: f64 = 1.0 / (1u128 << 96) as f64;

/// Count, sum and shifted sums of squares of the non-null values in a window.
///
/// Variance is computed from double-double sums of `x - shift` (each difference exact) and of
/// its square, where `shift` is the first finite value that entered an empty window (re-centred
/// on the mean when it drifts far, see [`Moments::drifted`]). The spread `Σd² - (Σd)²/n` is then
/// formed in double-double too, so two amounts a cent apart after a week of far larger ones
/// still have the exact variance to the last bit of an `f64`, and a window of identical amounts
/// (a card-testing burst) has variance exactly 0.
///
/// Non-finite values (NaN, ±infinity) are counted, not summed: while one is inside the window
/// the results are what IEEE arithmetic over the window's values gives (NaN with a NaN or with
/// both infinities, ±infinity with one sign of infinity, NaN for the spread), and as soon as it
/// leaves the window the finite sums, which it never touched, are exact again.
///
/// Stored as the count and the fields that are not zero (`wire`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Moments {
    n: u64,
    nan: u64,
    pos_inf: u64,
    neg_inf: u64,
    shift: f64,
    sum: CompensatedSum,
    shifted_sum: DoubleDouble,
    shifted_squares: DoubleDouble,
    /// Exact sum of exact (integer, decimal) inputs; wrapping, so it is exact modulo 2^128
    /// whatever the order of additions and removals.
    exact_sum: i128,
}

impl Moments {
    /// Finite values in the window.
    fn finite(&self) -> u64 {
        self.n - self.nan - self.pos_inf - self.neg_inf
    }

    /// Counts a non-finite value entering or leaving the window.
    fn count_non_finite(&mut self, x: f64, entering: bool) {
        let counter = if x.is_nan() {
            &mut self.nan
        } else if x > 0.0 {
            &mut self.pos_inf
        } else {
            &mut self.neg_inf
        };
        *counter = if entering {
            *counter + 1
        } else {
            counter.saturating_sub(1)
        };
    }

    /// Adds a value entering the window, maintaining the quantities of `level`.
    #[inline]
    pub fn add(&mut self, x: f64, level: MomentLevel) {
        if !x.is_finite() {
            self.n += 1;
            self.count_non_finite(x, true);
            return;
        }
        if self.finite() == 0 {
            // A fresh start of the finite sums: shift by the first finite value.
            self.shift = x;
            self.sum = CompensatedSum::default();
            self.shifted_sum = DoubleDouble::ZERO;
            self.shifted_squares = DoubleDouble::ZERO;
        }
        self.n += 1;
        if level >= MomentLevel::Sum {
            self.sum.add(x);
        }
        if level == MomentLevel::Spread {
            let d = two_sum(x, -self.shift);
            self.shifted_sum = self.shifted_sum + d;
            self.shifted_squares = self.shifted_squares + d * d;
        }
    }

    /// Removes a value leaving the window (it must have been added with the same `level`).
    #[inline]
    pub fn remove(&mut self, x: f64, level: MomentLevel) {
        if self.n == 0 {
            return;
        }
        self.n -= 1;
        if !x.is_finite() {
            self.count_non_finite(x, false);
            return;
        }
        if self.finite() == 0 {
            let (nan, pos_inf, neg_inf, n) = (self.nan, self.pos_inf, self.neg_inf, self.n);
            *self = Moments {
                n,
                nan,
                pos_inf,
                neg_inf,
                exact_sum: self.exact_sum,
                ..Moments::default()
            };
            return;
        }
        if level >= MomentLevel::Sum {
            self.sum.remove(x);
        }
        if level == MomentLevel::Spread {
            let d = two_sum(x, -self.shift);
            self.shifted_sum = self.shifted_sum - d;
            self.shifted_squares = self.shifted_squares - d * d;
        }
    }

    /// Whether the shift has drifted so far from the values in the window that the spread
    /// lost precision: the sum of squares around the shift then dwarfs the spread itself
    /// (e.g. a key's first, huge amount, used as the shift, has left a window of small ones).
    /// Only meaningful for moments kept at [`MomentLevel::Spread`].
    pub fn drifted(&self) -> bool {
        if self.finite() < 2 {
            return false;
        }
        // The spread in plain f64 differs from the exact one by about 1e-15 times the sum of
        // squares at most (the squared sum over n never exceeds the sum of squares): well above
        // the threshold, the exact spread is above it too, and the double-double division
        // (the cost of a read) is not needed to tell.
        let (s1, s2) = (self.shifted_sum.value(), self.shifted_squares.value());
        if s2 - s1 * s1 / self.n as f64 > DRIFT_SURELY_NOT * s2 {
            return false;
        }
        s2 > RESHIFT_RATIO * self.m2()
    }

    /// Recomputes the moments of exactly `values` (the window's current non-null values) at
    /// `level`, shifted by the mean of the finite ones, which makes the spread as exact as a
    /// two-pass variance.
    pub fn rebuild(&mut self, values: impl Iterator<Item = f64> + Clone, level: MomentLevel) {
        let mut total = CompensatedSum::default();
        let mut finite = 0u64;
        *self = Moments {
            exact_sum: self.exact_sum,
            ..Moments::default()
        };
        for x in values.clone() {
            self.n += 1;
            if x.is_finite() {
                total.add(x);
                finite += 1;
            } else {
                self.count_non_finite(x, true);
            }
        }
        if finite == 0 {
            return;
        }
        self.shift = total.value() / finite as f64;
        if level >= MomentLevel::Sum {
            self.sum = total;
        }
        if level == MomentLevel::Spread {
            for x in values.filter(|x| x.is_finite()) {
                let d = two_sum(x, -self.shift);
                self.shifted_sum = self.shifted_sum + d;
                self.shifted_squares = self.shifted_squares + d * d;
            }
        }
    }

    /// Adds the exact value of an exact input entering the window (besides [`Moments::add`]
    /// of its `f64`).
    #[inline]
    pub fn add_exact(&mut self, x: i128) {
        self.exact_sum = self.exact_sum.wrapping_add(x);
    }

    /// Removes the exact value of an exact input leaving the window.
    #[inline]
    pub fn remove_exact(&mut self, x: i128) {
        self.exact_sum = self.exact_sum.wrapping_sub(x);
    }

    /// The moments of a window of `n` values whose exact sum is `exact_sum`, for reads of its
    /// count and exact sum and average only (the batch kernel's prefix totals; the float
    /// quantities are left empty). Counts and wrapping sums of integers are the same whatever
    /// the order of additions and removals, so these equal the moments kept value by value.
    pub(crate) fn counted(n: u64, exact_sum: i128) -> Self {
        Moments {
            n,
            exact_sum,
            ..Moments::default()
        }
    }

    /// Exact sum of an exact input, or `None` for an empty window.
    pub fn exact_sum(&self) -> Option<i128> {
        (self.n > 0).then_some(self.exact_sum)
    }

    /// Exact average of a decimal input: the sum times `multiplier`, divided by the count and
    /// truncated (DataFusion's decimal average); `None` for an empty window. A product beyond
    /// `i128` gives `i128::MAX`, which no decimal precision accepts, so the output check fails
    /// as DataFusion's does ("Arithmetic Overflow").
    pub fn exact_avg(&self, multiplier: i128) -> Option<i128> {
        self.exact_sum()
            .map(|sum| match sum.checked_mul(multiplier) {
                // The same truncated quotient as i128's, without its slow division.
                Some(scaled) => match i64::try_from(scaled) {
                    Ok(small) if self.n <= i64::MAX as u64 => i128::from(small / self.n as i64),
                    _ => scaled / self.n as i128,
                },
                None => i128::MAX,
            })
    }

    /// Number of values in the window.
    pub fn count(&self) -> u64 {
        self.n
    }

    /// What the non-finite values make of a sum, if any is inside.
    fn non_finite_sum(&self) -> Option<f64> {
        if self.nan > 0 || (self.pos_inf > 0 && self.neg_inf > 0) {
            Some(f64::NAN)
        } else if self.pos_inf > 0 {
            Some(f64::INFINITY)
        } else if self.neg_inf > 0 {
            Some(f64::NEG_INFINITY)
        } else {
            None
        }
    }

    /// Sum of the values, or `None` for an empty window.
    pub fn sum(&self) -> Option<f64> {
        (self.n > 0).then(|| self.non_finite_sum().unwrap_or_else(|| self.sum.value()))
    }

    /// Mean of the values, or `None` for an empty window.
    pub fn mean(&self) -> Option<f64> {
        self.sum().map(|s| s / self.n as f64)
    }

    /// Sum of squared deviations from the mean (NaN with a non-finite value inside).
    fn m2(&self) -> f64 {
        if self.non_finite_sum().is_some() {
            return f64::NAN;
        }
        let (s1, s2) = (self.shifted_sum, self.shifted_squares);
        let m2 = (s2 - (s1 * s1).div_f64(self.n as f64)).value();
        // Below the double-double rounding of the sums (a window of equal values around another
        // shift) the spread is 0, as the CUDA kernel decides too.
        if m2 <= s2.value() * SPREAD_NOISE {
            0.0
        } else {
            m2
        }
    }

    /// Sample variance, or `None` with fewer than two values.
    pub fn var_samp(&self) -> Option<f64> {
        (self.n > 1).then(|| self.m2() / (self.n - 1) as f64)
    }

    /// Population variance, or `None` for an empty window.
    pub fn var_pop(&self) -> Option<f64> {
        (self.n > 0).then(|| self.m2() / self.n as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_values_have_zero_variance() {
        let mut m = Moments::default();
        for _ in 0..1000 {
            m.add(0.37, MomentLevel::Spread);
        }
        assert_eq!(m.var_samp(), Some(0.0));
        m.remove(0.37, MomentLevel::Spread);
        assert_eq!(m.var_samp(), Some(0.0));
    }

    #[test]
    fn matches_two_pass_variance() {
        let xs: Vec<f64> = (0..500)
            .map(|i| 100.0 + ((i * 37) % 101) as f64 * 0.01)
            .collect();
        let mut m = Moments::default();
        for &x in &xs {
            m.add(x, MomentLevel::Spread);
        }
        for &x in &xs[..200] {
            m.remove(x, MomentLevel::Spread);
        }
        let rest = &xs[200..];
        let mean = rest.iter().sum::<f64>() / rest.len() as f64;
        let var = rest.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (rest.len() - 1) as f64;
        let got = m.var_samp().unwrap();
        assert!(((got - var) / var).abs() < 1e-12, "{got} vs {var}");
        assert_eq!(m.count(), 300);
    }

    #[test]
    fn a_far_shift_is_detected_and_rebuilding_restores_precision() {
        let mut m = Moments::default();
        m.add(1_000_000.0, MomentLevel::Spread);
        let small: Vec<f64> = (0..1000).map(|i| 10.0 + (i % 7) as f64 * 0.01).collect();
        for &x in &small {
            m.add(x, MomentLevel::Spread);
        }
        assert!(
            !m.drifted(),
            "the far value is still inside: the spread is huge"
        );
        m.remove(1_000_000.0, MomentLevel::Spread);
        let mean = small.iter().sum::<f64>() / small.len() as f64;
        let var = small.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / 999.0;
        // Double-double sums keep the spread exact even around the far shift...
        let got = m.var_samp().unwrap();
        assert!(((got - var) / var).abs() < 1e-12, "{got} vs {var}");
        // ...and the drift is still detected, for shifts farther still.
        assert!(m.drifted());
        m.rebuild(small.iter().copied(), MomentLevel::Spread);
        assert!(!m.drifted());
        let got = m.var_samp().unwrap();
        assert!(((got - var) / var).abs() < 1e-12, "{got} vs {var}");
        assert_eq!(m.count(), 1000);
        assert!((m.sum().unwrap() - small.iter().sum::<f64>()).abs() < 1e-9);
    }

    #[test]
    fn the_quick_drift_check_decides_as_the_exact_spread_does() {
        let exact =
            |m: &Moments| m.finite() >= 2 && m.shifted_squares.value() > RESHIFT_RATIO * m.m2();
        let mut bits = crate::test_rng::xorshift(0x9e37_79b9_7f4a_7c15);
        let mut next = move || (bits() >> 11) as f64 / (1u64 << 53) as f64;
        let (mut drifted, mut checked) = (0, 0);
        for case in 0..400 {
            // A first value (the shift) far from the rest, then values whose spread ranges
            // from none to wide, so the spread straddles the drift threshold.
            let far = 10f64.powi(case % 7) * if case % 2 == 0 { 1.0 } else { -1.0 };
            let spread = 10f64.powi(-(case % 11));
            let mut m = Moments::default();
            m.add(far, MomentLevel::Spread);
            let values: Vec<f64> = (0..20).map(|_| 3.0 + spread * next()).collect();
            for &x in &values {
                m.add(x, MomentLevel::Spread);
            }
            m.remove(far, MomentLevel::Spread);
            for &x in &values[..10] {
                assert_eq!(m.drifted(), exact(&m), "case {case}");
                drifted += usize::from(exact(&m));
                checked += 1;
                m.remove(x, MomentLevel::Spread);
            }
            m.add(f64::NAN, MomentLevel::Spread);
            assert_eq!(m.drifted(), exact(&m), "case {case} with NaN");
        }
        assert!(
            drifted > checked / 10 && drifted < checked * 9 / 10,
            "{drifted} of {checked}"
        );
    }

    #[test]
    fn empty_and_single() {
        let mut m = Moments::default();
        assert_eq!(m.sum(), None);
        m.add(2.0, MomentLevel::Spread);
        assert_eq!(m.var_samp(), None);
        assert_eq!(m.var_pop(), Some(0.0));
        m.remove(2.0, MomentLevel::Spread);
        assert_eq!(m.mean(), None);
    }
}
