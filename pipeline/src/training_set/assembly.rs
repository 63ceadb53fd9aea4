//! A training set's features put back in spine order. Each view left, per spine row in order,
//! the key partition the row went to (its *route*), and per partition its probes' features in
//! the order they were pushed. Reading a view's routes a batch at a time and taking that many
//! rows from each partition, front to back, gives the features in spine order without holding
//! more than a batch of them. A partition evaluated in time slices is put back in the order of
//! its probes the same way, from its slices.

use crate::error::JobError;
use crate::spill::{RowCursor, Spill};
use crate::training_set::partitioned::ViewFeatures;
use arrow::array::{Array, ArrayRef, AsArray};
use arrow::datatypes::UInt16Type;
use std::sync::Arc;

/// Rows read in route order from several parts (a view's partitions, or a partition's time
/// slices), each read front to back.
pub(crate) struct Routed {
    /// One part index (`UInt16`) per row, in row order.
    routes: RowCursor,
    parts: Vec<RowCursor>,
}

impl Routed {
    /// Rows routed by `routes` (one partition of `UInt16`) to `parts`.
    pub fn new(routes: &mut Spill, parts: Vec<RowCursor>) -> Result<Self, JobError> {
        Ok(Routed {
            routes: RowCursor::new(Arc::clone(routes.schema()), routes.take(0)?),
            parts,
        })
    }

    /// The columns of the next `rows` rows.
    pub fn next_rows(&mut self, rows: usize) -> Result<Vec<ArrayRef>, JobError> {
        let route = self.routes.next_rows(rows)?;
        let route = route.column(0).as_primitive::<UInt16Type>();
        let mut counts = vec![0usize; self.parts.len()];
        let mut indices = Vec::with_capacity(rows);
        for &p in route.values() {
            let p = p as usize;
            if p >= counts.len() {
                return Err(JobError::Other(format!(
                    "a route to part {p} of {} (internal error)",
                    counts.len()
                )));
            }
            indices.push((p, counts[p]));
            counts[p] += 1;
        }
        let parts = (self.parts.iter_mut().zip(&counts))
            .map(|(part, &n)| Ok(part.next_rows(n)?.columns().to_vec()))
            .collect::<Result<Vec<_>, JobError>>()?;
        let width = parts.first().map_or(0, Vec::len);
        (0..width)
            .map(|c| {
                let arrays: Vec<&dyn Array> = parts.iter().map(|p| p[c].as_ref()).collect();
                arrow::compute::interleave(&arrays, &indices)
                    .map_err(|e| JobError::Other(format!("assembling the training set: {e}")))
            })
            .collect()
    }
}

/// The features of a training set's rows in spine order, a batch at a time, from every view's
/// [`ViewFeatures`].
pub(crate) struct Assembly {
    views: Vec<Routed>,
}

impl Assembly {
    /// Reads back what every view left.
    pub fn new(views: Vec<ViewFeatures>) -> Result<Self, JobError> {
        let mut routed = Vec::new();
        for mut view in views {
            let schema = Arc::clone(view.results.schema());
            let parts = (0..view.partitions)
                .map(|p| Ok(RowCursor::new(Arc::clone(&schema), view.results.take(p)?)))
                .collect::<Result<Vec<_>, JobError>>()?;
            routed.push(Routed::new(&mut view.routes, parts)?);
        }
        Ok(Assembly { views: routed })
    }

    /// The feature columns (every view's, in order) of the next `rows` spine rows.
    pub fn next(&mut self, rows: usize) -> Result<Vec<ArrayRef>, JobError> {
        let mut columns = Vec::new();
        for view in &mut self.views {
            columns.extend(view.next_rows(rows)?);
        }
        Ok(columns)
    }
}
