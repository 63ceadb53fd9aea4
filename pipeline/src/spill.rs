//! Spills: Arrow batches of one schema sorted into partitions, held in memory or, when they
//! would not fit, written to Arrow IPC files (LZ4-compressed) in a temporary directory and
//! read back one partition at a time. What bounded-memory work (training sets, backfill)
//! partitions its rows into.

use crate::error::JobError;
use arrow::array::{RecordBatch, UInt32Array};
use arrow::datatypes::SchemaRef;
use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::StreamWriter;
use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::path::{Path, PathBuf};

fn other(what: &str, e: impl std::fmt::Display) -> JobError {
    JobError::Other(format!("{what}: {e}"))
}

/// A directory for spill files, removed (with what is in it) when dropped.
pub struct ScratchDir(PathBuf);

impl ScratchDir {
    /// `.<file name>.spill-<process id>` beside `out` (not created here); the spill
    /// directories for the same `out` whose process is gone (killed) are removed first.
    pub fn beside(out: &Path) -> Self {
        let name = out
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "quiver".into());
        let dir = out
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let prefix = format!(".{name}.spill-");
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let file_name = entry.file_name().to_string_lossy().into_owned();
            let Some(pid) = file_name
                .strip_prefix(&prefix)
                .and_then(|p| p.parse::<i32>().ok())
            else {
                continue;
            };
            if is_gone(pid) {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
        ScratchDir(dir.join(format!("{prefix}{}", std::process::id())))
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

/// Whether process `pid` is gone: it does not exist, or it is a zombie (killed, not yet
/// reaped by its parent: it will never write again).
fn is_gone(pid: i32) -> bool {
    // SAFETY: signal 0 only checks whether the process exists.
    let missing = unsafe { libc::kill(pid, 0) } != 0
        && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH);
    let zombie = || {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // The state follows the command name, which is in parentheses.
        stat.rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
    };
    missing || zombie()
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Where a spill's partitions live.
enum Storage {
    /// Batches in memory, per partition.
    Memory(Vec<Vec<RecordBatch>>),
    /// One IPC stream file per partition (opened on its first batch).
    Files {
        dir: PathBuf,
        writers: Vec<PartFile>,
    },
}

/// One partition's spill file.
enum PartFile {
    /// Nothing was written to the partition: no file.
    Unwritten,
    /// Being written.
    Open(Box<StreamWriter<BufWriter<File>>>),
    /// Written and closed ([`Spill::finish`]): thousands of partitions do not hold thousands
    /// of open files while they wait to be read.
    Closed,
}

/// Batches of one schema in `partitions` partitions.
pub struct Spill {
    schema: SchemaRef,
    name: String,
    storage: Storage,
    rows: Vec<usize>,
    bytes: Vec<usize>,
    /// Held in memory up to this many bytes, then moved to files in this directory.
    overflow: Option<(PathBuf, usize)>,
}

impl Spill {
    /// A spill of `partitions` partitions in memory.
    pub fn in_memory(name: &str, schema: SchemaRef, partitions: usize) -> Self {
        Spill {
            schema,
            name: name.to_string(),
            storage: Storage::Memory(vec![Vec::new(); partitions]),
            rows: vec![0; partitions],
            bytes: vec![0; partitions],
            overflow: None,
        }
    }

    /// A spill held in memory while it takes at most `max_bytes`, then in files under `dir`
    /// as [`Spill::in_files`] writes them.
    pub fn in_memory_up_to(
        dir: &Path,
        max_bytes: usize,
        name: &str,
        schema: SchemaRef,
        partitions: usize,
    ) -> Self {
        Spill {
            overflow: Some((dir.to_path_buf(), max_bytes)),
            ..Spill::in_memory(name, schema, partitions)
        }
    }

    /// Whether the partitions are in files.
    pub fn in_files_now(&self) -> bool {
        matches!(self.storage, Storage::Files { .. })
    }

    /// A spill of `partitions` partitions in files named `<name>-<partition>.arrows` under
    /// `dir` (created with the first file, not cleaned up here).
    pub fn in_files(dir: &Path, name: &str, schema: SchemaRef, partitions: usize) -> Self {
        Spill {
            schema,
            name: name.to_string(),
            storage: Storage::Files {
                dir: dir.to_path_buf(),
                writers: (0..partitions).map(|_| PartFile::Unwritten).collect(),
            },
            rows: vec![0; partitions],
            bytes: vec![0; partitions],
            overflow: None,
        }
    }

    /// The number of partitions.
    pub fn partitions(&self) -> usize {
        self.rows.len()
    }

    /// Rows pushed into `partition`.
    pub fn rows(&self, partition: usize) -> usize {
        self.rows[partition]
    }

    /// Bytes (in memory, as Arrow arrays) pushed into `partition`.
    pub fn bytes(&self, partition: usize) -> usize {
        self.bytes[partition]
    }

    /// Bytes of the values `partition` holds in memory: a batch sliced out of larger buffers
    /// counts only its slice (which [`Spill::bytes`] counts whole). [`Spill::bytes`] for a
    /// spill in files.
    pub fn values_bytes(&self, partition: usize) -> Result<usize, JobError> {
        let Storage::Memory(parts) = &self.storage else {
            return Ok(self.bytes[partition]);
        };
        let mut total = 0;
        for column in parts[partition].iter().flat_map(|b| b.columns()) {
            total += (column.to_data().get_slice_memory_size())
                .map_err(|e| other(&format!("sizing {}", self.name), e))?;
        }
        Ok(total)
    }

    fn file(dir: &Path, name: &str, partition: usize) -> PathBuf {
        dir.join(format!("{name}-{partition}.arrows"))
    }

    /// Appends `batch` (of the spill's schema) to `partition`.
    pub fn push(&mut self, partition: usize, batch: RecordBatch) -> Result<(), JobError> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        self.rows[partition] += batch.num_rows();
        self.bytes[partition] += batch.get_array_memory_size();
        if let Some((dir, max_bytes)) = &self.overflow {
            if self.bytes.iter().sum::<usize>() > *max_bytes {
                // Too large for memory from here on: what is held goes to files first.
                let held = std::mem::replace(
                    &mut self.storage,
                    Storage::Files {
                        dir: dir.clone(),
                        writers: (0..self.rows.len()).map(|_| PartFile::Unwritten).collect(),
                    },
                );
                self.overflow = None;
                if let Storage::Memory(parts) = held {
                    for (p, batches) in parts.into_iter().enumerate() {
                        for held in batches {
                            self.write_to_file(p, &held)?;
                        }
                    }
                }
            }
        }
        match &mut self.storage {
            Storage::Memory(parts) => parts[partition].push(batch),
            Storage::Files { .. } => self.write_to_file(partition, &batch)?,
        }
        Ok(())
    }

    fn write_to_file(&mut self, partition: usize, batch: &RecordBatch) -> Result<(), JobError> {
        let name = &self.name;
        let fail = |e: &dyn std::fmt::Display| other(&format!("spilling {name}"), e);
        let Storage::Files { dir, writers } = &mut self.storage else {
            unreachable!("only called for files");
        };
        let slot = &mut writers[partition];
        if let PartFile::Unwritten = slot {
            std::fs::create_dir_all(&*dir).map_err(|e| fail(&e))?;
            let file = File::create(Self::file(dir, name, partition)).map_err(|e| fail(&e))?;
            let options = arrow::ipc::writer::IpcWriteOptions::default()
                .try_with_compression(Some(arrow::ipc::CompressionType::LZ4_FRAME))
                .map_err(|e| fail(&e))?;
            *slot = PartFile::Open(Box::new(
                StreamWriter::try_new_with_options(BufWriter::new(file), &self.schema, options)
                    .map_err(|e| fail(&e))?,
            ));
        }
        match slot {
            PartFile::Open(writer) => writer.write(batch).map_err(|e| fail(&e)),
            _ => Err(fail(&"written after it was finished (internal error)")),
        }
    }

    /// Ends writing: files are flushed and closed.
    pub fn finish(&mut self) -> Result<(), JobError> {
        if let Storage::Files { writers, .. } = &mut self.storage {
            let fail = |e: &dyn std::fmt::Display| other(&format!("spilling {}", self.name), e);
            for slot in writers.iter_mut() {
                if !matches!(slot, PartFile::Open(_)) {
                    continue;
                }
                if let PartFile::Open(mut writer) = std::mem::replace(slot, PartFile::Closed) {
                    writer.finish().map_err(|e| fail(&e))?;
                    let buffered = writer.into_inner().map_err(|e| fail(&e))?;
                    buffered.into_inner().map_err(|e| fail(e.error()))?;
                }
            }
        }
        Ok(())
    }

    /// Takes the batches of `partition` out of the spill, in the order pushed (a file's
    /// batches are read lazily; the file is removed once read to its end or dropped).
    pub fn take(&mut self, partition: usize) -> Result<SpilledBatches, JobError> {
        let (name, what) = (&self.name, format!("reading back {}", self.name));
        match &mut self.storage {
            Storage::Memory(parts) => Ok(SpilledBatches::Memory(
                std::mem::take(&mut parts[partition]).into_iter(),
            )),
            Storage::Files { dir, writers } => {
                match std::mem::replace(&mut writers[partition], PartFile::Unwritten) {
                    PartFile::Unwritten => Ok(SpilledBatches::Memory(Vec::new().into_iter())),
                    PartFile::Open(_) | PartFile::Closed => {
                        let path = Self::file(dir, name, partition);
                        let reader = Self::open(&path, &what)?;
                        Ok(SpilledBatches::File { reader, path, what })
                    }
                }
            }
        }
    }

    /// The batches of `partition` in the order pushed, leaving them in the spill (to be read
    /// again); only after [`Spill::finish`].
    pub fn read(&self, partition: usize) -> Result<SpilledBatches, JobError> {
        let what = format!("reading back {}", self.name);
        match &self.storage {
            Storage::Memory(parts) => {
                Ok(SpilledBatches::Memory(parts[partition].clone().into_iter()))
            }
            Storage::Files { dir, writers } => match &writers[partition] {
                PartFile::Unwritten => Ok(SpilledBatches::Memory(Vec::new().into_iter())),
                PartFile::Open(_) | PartFile::Closed => {
                    let reader = Self::open(&Self::file(dir, &self.name, partition), &what)?;
                    Ok(SpilledBatches::Shared { reader, what })
                }
            },
        }
    }

    fn open(path: &Path, what: &str) -> Result<Box<StreamReader<BufReader<File>>>, JobError> {
        let file = File::open(path).map_err(|e| other(what, e))?;
        let reader =
            StreamReader::try_new(BufReader::new(file), None).map_err(|e| other(what, e))?;
        Ok(Box::new(reader))
    }

    /// The spill's schema.
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }
}

/// The batches of one partition of a [`Spill`].
pub enum SpilledBatches {
    /// Read from a spill file that stays (see [`Spill::read`]).
    Shared {
        /// The file's reader.
        reader: Box<StreamReader<BufReader<File>>>,
        /// What errors say.
        what: String,
    },
    /// Held in memory.
    Memory(std::vec::IntoIter<RecordBatch>),
    /// Read from a spill file, removed when this is dropped.
    File {
        /// The file's reader.
        reader: Box<StreamReader<BufReader<File>>>,
        /// The file.
        path: PathBuf,
        /// What errors say.
        what: String,
    },
}

impl Iterator for SpilledBatches {
    type Item = Result<RecordBatch, JobError>;

    fn next(&mut self) -> Option<Self::Item> {
        match self {
            SpilledBatches::Memory(batches) => batches.next().map(Ok),
            SpilledBatches::File { reader, what, .. } | SpilledBatches::Shared { reader, what } => {
                reader.next().map(|batch| batch.map_err(|e| other(what, e)))
            }
        }
    }
}

impl Drop for SpilledBatches {
    fn drop(&mut self) {
        if let SpilledBatches::File { path, .. } = self {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Reads rows of one partition in order, a requested number at a time, across its batches.
pub struct RowCursor {
    batches: SpilledBatches,
    current: Option<RecordBatch>,
    offset: usize,
    schema: SchemaRef,
}

impl RowCursor {
    /// A cursor at the first row of `batches` (of `schema`).
    pub fn new(schema: SchemaRef, batches: SpilledBatches) -> Self {
        RowCursor {
            batches,
            current: None,
            offset: 0,
            schema,
        }
    }

    /// The next `rows` rows as one batch; an error when fewer are left.
    pub fn next_rows(&mut self, rows: usize) -> Result<RecordBatch, JobError> {
        let mut parts = Vec::new();
        let mut wanted = rows;
        while wanted > 0 {
            let batch = match &self.current {
                Some(batch) if self.offset < batch.num_rows() => batch,
                _ => match self.batches.next() {
                    Some(batch) => {
                        self.current = Some(batch?);
                        self.offset = 0;
                        continue;
                    }
                    None => {
                        return Err(JobError::Other(format!(
                            "a spill ended {wanted} rows early (internal error)"
                        )))
                    }
                },
            };
            let n = wanted.min(batch.num_rows() - self.offset);
            parts.push(batch.slice(self.offset, n));
            self.offset += n;
            wanted -= n;
        }
        match parts.len() {
            1 => Ok(parts.pop().expect("one part")),
            _ => arrow::compute::concat_batches(&self.schema, &parts)
                .map_err(|e| other("reading back a spill", e)),
        }
    }
}

/// Seed of the hash that places keys in partitions: fixed, so that every run splits an input
/// alike (partitions are internal to a run; shards, which are kept, use
/// [`quiver_sql::key_shard::stable_hash`]).
const PARTITION_SEED: u64 = 0x51ed_270b_27e1_f1c5;

/// The partition of an encoded key: foldhash (a word at a time; the byte-at-a-time hash of
/// shards was 2% of a 10M-event backfill) scaled to `partitions` by a multiplication instead
/// of a division.
pub fn partition_of(key: &[u8], partitions: usize) -> usize {
    use std::hash::BuildHasher;
    if partitions <= 1 {
        return 0;
    }
    let hash = foldhash::quality::FixedState::with_seed(PARTITION_SEED).hash_one(key);
    ((u128::from(hash) * partitions as u128) >> 64) as usize
}

/// The partition of each of `keys` (encoded keys), for [`push_partitioned`].
pub fn partitions_of<'a>(keys: impl Iterator<Item = &'a [u8]>, partitions: usize) -> Vec<u16> {
    keys.map(|key| partition_of(key, partitions) as u16)
        .collect()
}

/// Row indices of a batch grouped by partition (a stable counting sort): the rows `rows`
/// (ascending indices into the batch), or every row when `None`, each given its partition by
/// `partition` (one entry per row). Returns the indices, each partition's in row order, and
/// where each partition starts (`partitions + 1` offsets).
pub fn rows_by_partition(
    partition: &[u16],
    partitions: usize,
    rows: Option<&[u32]>,
) -> (Vec<u32>, Vec<usize>) {
    let slots: Vec<u32> = partition.iter().map(|&p| u32::from(p)).collect();
    let (mut order, starts) = quiver_gpu::group_rows(&slots, partitions, 0..slots.len() as u32);
    if let Some(rows) = rows {
        order.iter_mut().for_each(|i| *i = rows[*i as usize]);
    }
    (order, starts)
}

/// Pushes rows of `batch` into the partitions `partition` gives them, one entry per row
/// pushed: the rows `rows` (ascending indices into `batch`), or every row when `None`. Each
/// partition's rows are taken from `batch` at once, in row order.
pub fn push_partitioned(
    spill: &mut Spill,
    batch: &RecordBatch,
    rows: Option<&[u32]>,
    partition: &[u16],
) -> Result<(), JobError> {
    if spill.partitions() == 1 && rows.is_none() {
        return spill.push(0, batch.clone());
    }
    let (order, starts) = rows_by_partition(partition, spill.partitions(), rows);
    let order = UInt32Array::from(order);
    for p in 0..spill.partitions() {
        let (from, to) = (starts[p], starts[p + 1]);
        if from == to {
            continue;
        }
        let part = arrow::compute::take_record_batch(batch, &order.slice(from, to - from))
            .map_err(|e| JobError::Other(format!("partitioning rows: {e}")))?;
        spill.push(p, part)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{AsArray, Int64Array};
    use arrow::datatypes::{DataType, Field, Int64Type, Schema};
    use std::sync::Arc;

    fn batch(schema: &SchemaRef, values: std::ops::Range<i64>) -> RecordBatch {
        RecordBatch::try_new(
            Arc::clone(schema),
            vec![Arc::new(Int64Array::from_iter_values(values))],
        )
        .unwrap()
    }

    fn values(batch: &RecordBatch) -> Vec<i64> {
        batch
            .column(0)
            .as_primitive::<Int64Type>()
            .values()
            .to_vec()
    }

    #[test]
    fn rows_are_pushed_to_their_partitions_in_row_order() {
        let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, false)]));
        let rows = batch(&schema, 10..20);
        let mut all = Spill::in_memory("t", Arc::clone(&schema), 2);
        push_partitioned(&mut all, &rows, None, &[1, 0, 1, 1, 0, 0, 1, 0, 0, 1]).unwrap();
        let taken = |spill: &mut Spill, p| {
            (spill.take(p).unwrap())
                .flat_map(|b| values(&b.unwrap()))
                .collect::<Vec<_>>()
        };
        assert_eq!(taken(&mut all, 0), [11, 14, 15, 17, 18]);
        assert_eq!(taken(&mut all, 1), [10, 12, 13, 16, 19]);
        // Only some rows, one partition given per row pushed; one partition still takes them.
        let mut some = Spill::in_memory("t", Arc::clone(&schema), 2);
        push_partitioned(&mut some, &rows, Some(&[2, 3, 7, 9]), &[0, 1, 1, 0]).unwrap();
        assert_eq!(taken(&mut some, 0), [12, 19]);
        assert_eq!(taken(&mut some, 1), [13, 17]);
        let mut one = Spill::in_memory("t", Arc::clone(&schema), 1);
        push_partitioned(&mut one, &rows, Some(&[0, 5]), &[0, 0]).unwrap();
        assert_eq!(taken(&mut one, 0), [10, 15]);
    }

    #[test]
    fn values_bytes_count_a_slice_not_the_buffers_it_shares() {
        let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, false)]));
        let mut spill = Spill::in_memory("t", Arc::clone(&schema), 1);
        let whole = batch(&schema, 0..100_000);
        for i in 0..10 {
            spill.push(0, whole.slice(i * 10, 10)).unwrap();
        }
        assert!(spill.bytes(0) >= 10 * 800_000, "{}", spill.bytes(0));
        assert_eq!(spill.values_bytes(0).unwrap(), 10 * 10 * 8);
    }

    #[test]
    fn spill_directories_of_gone_exports_are_removed() {
        let dir = std::env::temp_dir().join(format!("quiver-scratch-test-{}", std::process::id()));
        let dead = dir.join(format!(".t.parquet.spill-{}", i32::MAX));
        let alive = dir.join(".t.parquet.spill-1");
        let other = dir.join(format!(".u.parquet.spill-{}", i32::MAX));
        // A killed process its parent has not reaped yet (a zombie) is gone too.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !is_gone(child.id() as i32) {
            assert!(
                std::time::Instant::now() < deadline,
                "an exited child is not gone"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let zombie = dir.join(format!(".t.parquet.spill-{}", child.id()));
        for d in [&dead, &alive, &other, &zombie] {
            std::fs::create_dir_all(d).unwrap();
        }
        let scratch = ScratchDir::beside(&dir.join("t.parquet"));
        child.wait().unwrap();
        assert!(!dead.exists() && !zombie.exists());
        assert!(alive.exists() && other.exists());
        std::fs::create_dir_all(&scratch.0).unwrap();
        drop(scratch);
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 2);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn keys_spread_over_partitions() {
        let mut counts = [0usize; 8];
        for card in 0..8000u32 {
            counts[partition_of(format!("card_{card}").as_bytes(), 8)] += 1;
        }
        assert!(
            counts.iter().all(|&c| (800..1200).contains(&c)),
            "{counts:?}"
        );
        assert_eq!(partition_of(b"anything", 1), 0);
    }

    #[test]
    fn partitions_read_back_in_order_from_memory_and_files() {
        let schema: SchemaRef =
            Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, false)]));
        let dir = tempfile::tempdir().unwrap();
        for mut spill in [
            Spill::in_memory("t", Arc::clone(&schema), 3),
            Spill::in_files(dir.path(), "t", Arc::clone(&schema), 3),
        ] {
            spill.push(0, batch(&schema, 0..3)).unwrap();
            spill.push(2, batch(&schema, 10..12)).unwrap();
            spill.push(0, batch(&schema, 3..5)).unwrap();
            spill.finish().unwrap();
            assert_eq!((spill.rows(0), spill.rows(1), spill.rows(2)), (5, 0, 2));
            let mut cursor = RowCursor::new(Arc::clone(&schema), spill.take(0).unwrap());
            assert_eq!(values(&cursor.next_rows(2).unwrap()), vec![0, 1]);
            assert_eq!(values(&cursor.next_rows(3).unwrap()), vec![2, 3, 4]);
            assert!(cursor.next_rows(1).is_err());
            assert_eq!(spill.take(1).unwrap().count(), 0);
            let two: Vec<i64> = spill
                .take(2)
                .unwrap()
                .flat_map(|b| values(&b.unwrap()))
                .collect();
            assert_eq!(two, vec![10, 11]);
        }
        // Read files are removed.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
