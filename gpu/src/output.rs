//! Feature values produced by the kernels, column by column.

use crate::key_state::{read, read_exact, GroupAggregates};

/// One value per input row and spec; `valid[s][r] == false` is SQL null.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FeatureOutput {
    /// Per spec, the value of each row.
    pub values: Vec<Vec<f64>>,
    /// Per spec, whether each row's value is non-null.
    pub valid: Vec<Vec<bool>>,
    /// Per spec, the exact values of specs the plan marks exact (sums, minima and maxima of
    /// integer and decimal inputs, decimal averages); `None` for float specs. Where present,
    /// these are the values and `values` holds nothing meaningful.
    pub exact: Vec<Option<Vec<i128>>>,
}

impl FeatureOutput {
    /// Output buffers for `specs` columns of `rows` rows, all null.
    pub fn new(specs: usize, rows: usize) -> Self {
        // One allocation per column: `vec![column; specs]` would copy the first one's zeros
        // into the others, touching every page up front.
        FeatureOutput {
            values: (0..specs).map(|_| vec![0.0; rows]).collect(),
            valid: (0..specs).map(|_| vec![false; rows]).collect(),
            exact: vec![None; specs],
        }
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.values.first().map_or(0, Vec::len)
    }

    #[inline]
    pub(crate) fn set(&mut self, spec: usize, row: usize, value: Option<f64>) {
        if let Some(v) = value {
            self.values[spec][row] = v;
            self.valid[spec][row] = true;
        }
    }

    #[inline]
    pub(crate) fn set_exact(&mut self, spec: usize, row: usize, value: Option<i128>) {
        if let Some(v) = value {
            let rows = self.valid[spec].len();
            self.exact[spec].get_or_insert_with(|| vec![0; rows])[row] = v;
            self.valid[spec][row] = true;
        }
    }

    /// Writes spec `spec` of the window state `state` for `rows`, exact or float as `plan`
    /// says.
    #[inline]
    pub(crate) fn set_from(
        &mut self,
        plan: &crate::WindowPlan,
        state: &crate::KeyWindowState,
        spec: usize,
        rows: impl Iterator<Item = usize>,
    ) {
        self.set_from_group(plan, state.group_of(plan, spec), spec, rows);
    }

    /// Writes spec `spec` of `group`, the quantities of its frame group, for `rows`.
    #[inline]
    pub(crate) fn set_from_group(
        &mut self,
        plan: &crate::WindowPlan,
        group: &impl GroupAggregates,
        spec: usize,
        rows: impl Iterator<Item = usize>,
    ) {
        if plan.is_exact_output(spec) {
            let value = read_exact(plan, spec, group);
            for row in rows {
                self.set_exact(spec, row, value);
            }
        } else {
            let value = read(plan, spec, group);
            for row in rows {
                self.set(spec, row, value);
            }
        }
    }
}
