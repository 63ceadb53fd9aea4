//! Feature values produced by the kernels, column by column.

/// One value per input row and spec; `valid[s][r] == false` is SQL null.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FeatureOutput {
    /// Per spec, the value of each row.
    pub values: Vec<Vec<f64>>,
    /// Per spec, whether each row's value is non-null.
    pub valid: Vec<Vec<bool>>,
}

impl FeatureOutput {
    /// Output buffers for `specs` columns of `rows` rows, all null.
    pub fn new(specs: usize, rows: usize) -> Self {
        FeatureOutput {
            values: vec![vec![0.0; rows]; specs],
            valid: vec![vec![false; rows]; specs],
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
}
