//! `quiver compare`: two output directories, view by view, feature by feature.
//!
//! For checking that two runs agree: the CPU and the CUDA backend, a run and a backfill, one
//! engine release and the next. Rows are matched on every column that is not a float (keys,
//! event time, lineage, counts, decimals), which must be equal; float features must agree within
//! a relative tolerance, with NULLs and NaNs in the same places.

use crate::parquet_file::read_parquet_file;
use anyhow::{bail, Context};
use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::compute::kernels::cmp::not_distinct;
use arrow::compute::{cast, concat_batches, lexsort_to_indices, take_record_batch, SortColumn};
use arrow::datatypes::{DataType, Float64Type};
use std::fmt;
use std::path::Path;

/// How one view compared.
#[derive(Debug, Clone, PartialEq)]
pub struct ViewComparison {
    /// View (directory) name.
    pub view: String,
    /// Rows in the first and the second output.
    pub rows: (usize, usize),
    /// Columns whose values differ, with how many rows differ in each.
    pub differing: Vec<(String, usize)>,
    /// The largest relative difference seen among float values within the tolerance or not.
    pub largest_relative_difference: f64,
    /// Set when the two views cannot be compared row by row (different row counts or columns).
    pub mismatch: Option<String>,
}

impl ViewComparison {
    /// True when the view is the same in both outputs (within the tolerance).
    pub fn is_equal(&self) -> bool {
        self.mismatch.is_none() && self.differing.is_empty()
    }
}

impl fmt::Display for ViewComparison {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(why) = &self.mismatch {
            return write!(f, "{}: DIFFERENT: {why}", self.view);
        }
        let differing: usize = self.differing.iter().map(|(_, n)| n).sum();
        write!(
            f,
            "{}: {} rows, {} differing values, largest relative difference {:.2e}",
            self.view, self.rows.0, differing, self.largest_relative_difference
        )?;
        for (column, n) in &self.differing {
            write!(f, "\n  {column}: {n} rows differ")?;
        }
        Ok(())
    }
}

/// Compares the views (subdirectories not starting with `_`) of two output directories;
/// `ignore_lineage` leaves out the source partition and offset columns (e.g. the same events
/// read from a file and from Kafka). The output of a sharded job (`shard-I-of-N`
/// subdirectories, one per shard) counts as the union of its shards' views.
pub fn compare_outputs(
    a: &Path,
    b: &Path,
    rtol: f64,
    ignore_lineage: bool,
) -> anyhow::Result<Vec<ViewComparison>> {
    let views = view_names(a)?;
    if views.is_empty() {
        bail!("no view directories in {}", a.display());
    }
    let others = view_names(b)?;
    let mut out = Vec::new();
    for view in &views {
        if !others.contains(view) {
            out.push(ViewComparison {
                view: view.clone(),
                rows: (0, 0),
                differing: Vec::new(),
                largest_relative_difference: 0.0,
                mismatch: Some(format!("missing from {}", b.display())),
            });
            continue;
        }
        let mut first = read_view(&view_dirs(a, view)?)?;
        let mut second = read_view(&view_dirs(b, view)?)?;
        if ignore_lineage {
            first = without_lineage(first)?;
            second = without_lineage(second)?;
        }
        out.push(compare_batches(view, &first, &second, rtol)?);
    }
    for view in others.iter().filter(|v| !views.contains(v)) {
        out.push(ViewComparison {
            view: view.clone(),
            rows: (0, 0),
            differing: Vec::new(),
            largest_relative_difference: 0.0,
            mismatch: Some(format!("missing from {}", a.display())),
        });
    }
    Ok(out)
}

/// The directories of an output: itself, or for a sharded job's output its shards' (sorted).
fn shard_roots(dir: &Path) -> anyhow::Result<Vec<std::path::PathBuf>> {
    let mut shards = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if entry.file_type()?.is_dir() && quiver_sql::KeyShard::of_dir_name(&name).is_some() {
            shards.push(entry.path());
        }
    }
    shards.sort();
    if shards.is_empty() {
        shards.push(dir.to_path_buf());
    }
    Ok(shards)
}

fn view_names(dir: &Path) -> anyhow::Result<Vec<String>> {
    let mut names = Vec::new();
    for root in shard_roots(dir)? {
        for entry in
            std::fs::read_dir(&root).with_context(|| format!("reading {}", root.display()))?
        {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let view =
                !name.starts_with('_') && !name.starts_with('.') && !name.starts_with("shard-");
            if entry.file_type()?.is_dir() && view && !names.contains(&name) {
                names.push(name);
            }
        }
    }
    names.sort();
    Ok(names)
}

/// The directories holding view `view` of the output `dir` (one per shard of a sharded job).
fn view_dirs(dir: &Path, view: &str) -> anyhow::Result<Vec<std::path::PathBuf>> {
    Ok((shard_roots(dir)?.into_iter())
        .map(|root| root.join(view))
        .filter(|d| d.is_dir())
        .collect())
}

/// All Parquet files of a view's directories as one batch, dictionaries decoded, without a
/// store table's availability column.
fn read_view(dirs: &[std::path::PathBuf]) -> anyhow::Result<RecordBatch> {
    let mut files = Vec::new();
    for dir in dirs {
        files.extend(
            std::fs::read_dir(dir)
                .with_context(|| format!("reading {}", dir.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "parquet")),
        );
    }
    files.sort();
    if files.is_empty() {
        let names: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
        bail!("no Parquet files in {}", names.join(", "));
    }
    let mut batches = Vec::new();
    let mut schema = None;
    for path in &files {
        let (file_schema, file_batches) = read_parquet_file(path, "an output file")?;
        schema.get_or_insert(file_schema);
        batches.extend(file_batches);
    }
    let schema = schema.expect("at least one file");
    let batch = concat_batches(&schema, &batches)?;
    // A store table's availability column says when rows were committed, not what they are.
    let batch = match batch.schema().index_of(quiver_store::AVAILABLE_COLUMN) {
        Ok(index) => {
            let keep: Vec<usize> = (0..batch.num_columns()).filter(|&i| i != index).collect();
            batch.project(&keep)?
        }
        Err(_) => batch,
    };
    let columns = batch
        .columns()
        .iter()
        .map(|c| match c.data_type() {
            DataType::Dictionary(_, value) => cast(c, value),
            _ => Ok(c.clone()),
        })
        .collect::<Result<Vec<_>, _>>()?;
    let fields: Vec<_> = batch
        .schema()
        .fields()
        .iter()
        .zip(&columns)
        .map(|(f, c)| f.as_ref().clone().with_data_type(c.data_type().clone()))
        .collect();
    Ok(RecordBatch::try_new(
        std::sync::Arc::new(arrow::datatypes::Schema::new(fields)),
        columns,
    )?)
}

/// `batch` without its lineage columns.
fn without_lineage(batch: RecordBatch) -> anyhow::Result<RecordBatch> {
    let lineage = [
        quiver_sql::lineage::LINEAGE_PARTITION,
        quiver_sql::lineage::LINEAGE_OFFSET,
    ];
    let keep: Vec<usize> = (batch.schema().fields().iter().enumerate())
        .filter(|(_, f)| !lineage.contains(&f.name().as_str()))
        .map(|(i, _)| i)
        .collect();
    Ok(batch.project(&keep)?)
}

fn is_float(data_type: &DataType) -> bool {
    matches!(
        data_type,
        DataType::Float16 | DataType::Float32 | DataType::Float64
    )
}

/// Compares two batches of one view after sorting both on their non-float columns.
pub fn compare_batches(
    view: &str,
    a: &RecordBatch,
    b: &RecordBatch,
    rtol: f64,
) -> anyhow::Result<ViewComparison> {
    let mut result = ViewComparison {
        view: view.to_string(),
        rows: (a.num_rows(), b.num_rows()),
        differing: Vec::new(),
        largest_relative_difference: 0.0,
        mismatch: None,
    };
    let names = |batch: &RecordBatch| -> Vec<(String, DataType)> {
        batch
            .schema()
            .fields()
            .iter()
            .map(|f| (f.name().clone(), f.data_type().clone()))
            .collect()
    };
    if names(a) != names(b) {
        result.mismatch = Some(format!(
            "columns differ: {:?} vs {:?}",
            names(a)
                .iter()
                .map(|(n, t)| format!("{n} {t}"))
                .collect::<Vec<_>>(),
            names(b)
                .iter()
                .map(|(n, t)| format!("{n} {t}"))
                .collect::<Vec<_>>()
        ));
        return Ok(result);
    }
    if a.num_rows() != b.num_rows() {
        result.mismatch = Some(format!("{} vs {} rows", a.num_rows(), b.num_rows()));
        return Ok(result);
    }
    let (a, b) = (sorted_on_exact_columns(a)?, sorted_on_exact_columns(b)?);
    for (index, field) in a.schema().fields().iter().enumerate() {
        let (x, y) = (a.column(index), b.column(index));
        let differing = if is_float(field.data_type()) {
            let (differing, largest) = float_differences(x, y, rtol)?;
            result.largest_relative_difference = result.largest_relative_difference.max(largest);
            differing
        } else {
            let same = not_distinct(x, y)?;
            same.len() - same.true_count()
        };
        if differing > 0 {
            result.differing.push((field.name().clone(), differing));
        }
    }
    Ok(result)
}

fn sorted_on_exact_columns(batch: &RecordBatch) -> anyhow::Result<RecordBatch> {
    let keys: Vec<SortColumn> = batch
        .columns()
        .iter()
        .filter(|c| !is_float(c.data_type()))
        .map(|c| SortColumn {
            values: c.clone(),
            options: None,
        })
        .collect();
    if keys.is_empty() {
        return Ok(batch.clone());
    }
    let order = lexsort_to_indices(&keys, None)?;
    Ok(take_record_batch(batch, &order)?)
}

/// Rows whose floats differ (beyond `rtol`, or in where NULL and NaN are), and the largest
/// relative difference among the rows where both are numbers.
fn float_differences(x: &ArrayRef, y: &ArrayRef, rtol: f64) -> anyhow::Result<(usize, f64)> {
    let x = cast(x, &DataType::Float64)?;
    let y = cast(y, &DataType::Float64)?;
    let (x, y) = (
        x.as_primitive::<Float64Type>(),
        y.as_primitive::<Float64Type>(),
    );
    let mut differing = 0;
    let mut largest: f64 = 0.0;
    for i in 0..x.len() {
        match (x.is_null(i), y.is_null(i)) {
            (true, true) => continue,
            (false, false) => {}
            _ => {
                differing += 1;
                continue;
            }
        }
        let (p, q) = (x.value(i), y.value(i));
        if p == q || (p.is_nan() && q.is_nan()) {
            continue;
        }
        if !p.is_finite() || !q.is_finite() {
            differing += 1;
            continue;
        }
        let relative = (p - q).abs() / q.abs().max(f64::MIN_POSITIVE);
        largest = largest.max(relative);
        if relative > rtol {
            differing += 1;
        }
    }
    Ok((differing, largest))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Float64Array, Int64Array, StringArray};
    use arrow::datatypes::{Field, Schema};
    use std::sync::Arc;

    fn batch(keys: &[&str], times: &[i64], values: &[Option<f64>]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("card", DataType::Utf8, false),
            Field::new("ts", DataType::Int64, false),
            Field::new("mean", DataType::Float64, true),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from(keys.to_vec())),
                Arc::new(Int64Array::from(times.to_vec())),
                Arc::new(Float64Array::from(values.to_vec())),
            ],
        )
        .unwrap()
    }

    #[test]
    fn equal_in_another_order_and_within_tolerance() {
        let a = batch(&["a", "b"], &[1, 2], &[Some(1.0), Some(3.0)]);
        let b = batch(
            &["b", "a"],
            &[2, 1],
            &[Some(3.0 * (1.0 + 1e-12)), Some(1.0)],
        );
        let c = compare_batches("v", &a, &b, 1e-9).unwrap();
        assert!(c.is_equal(), "{c}");
        assert!(c.largest_relative_difference > 0.0);
    }

    #[test]
    fn reports_values_keys_nulls_and_row_counts() {
        let a = batch(&["a", "b", "c"], &[1, 2, 3], &[Some(1.0), Some(3.0), None]);
        let b = batch(
            &["a", "b", "c"],
            &[1, 2, 3],
            &[Some(1.1), Some(3.0), Some(0.0)],
        );
        let c = compare_batches("v", &a, &b, 1e-9).unwrap();
        assert_eq!(c.differing, vec![("mean".to_string(), 2)]);
        let b = batch(&["a", "b", "d"], &[1, 2, 3], &[Some(1.0), Some(3.0), None]);
        let c = compare_batches("v", &a, &b, 1e-9).unwrap();
        assert_eq!(c.differing, vec![("card".to_string(), 1)]);
        let b = batch(&["a"], &[1], &[Some(1.0)]);
        assert!(compare_batches("v", &a, &b, 1e-9)
            .unwrap()
            .mismatch
            .is_some());
    }
}
