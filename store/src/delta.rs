//! Delta Lake tables over Parquet files Quiver wrote: the transaction log (`_delta_log/`) that
//! makes a directory of Parquet files a Delta table Spark, DuckDB, Polars and delta-rs read.
//!
//! Only what Quiver's tables need of the protocol (Delta protocol, "Delta Transaction Log"):
//! JSON commits with `commitInfo` (where Quiver records its own metadata: view version, engine,
//! rows, epoch, source positions), `protocol` and `metaData` in the first commit, `add` actions
//! with row counts, and `txn` actions that make a commit idempotent per (application, epoch).
//! A commit is created under its numbered name only if that name is free
//! ([`StoreDir::create`]: a hard link on a local disk, a conditional PUT on an object store):
//! two writers never both win one version, and a reader never sees half a commit. Timestamps without a time zone are `timestamp_ntz` (reader version 3, writer 7 with
//! that table feature); anything else keeps the oldest protocol (1, 2).

use crate::error::StoreError;
use crate::location::StoreDir;
use arrow::datatypes::{DataType, Schema, TimeUnit};
use serde_json::{json, Map, Value};
use std::time::{SystemTime, UNIX_EPOCH};

/// The log directory of a table.
pub const LOG_DIR: &str = "_delta_log";

/// A data file a commit adds, relative to the table's directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddFile {
    /// Path relative to the table directory (no `..`).
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// Rows in the file.
    pub rows: u64,
}

/// One commit: the files it adds and what Quiver records about it.
#[derive(Debug, Clone, Default)]
pub struct Commit {
    /// Files added.
    pub files: Vec<AddFile>,
    /// Extra `commitInfo` fields (Quiver's metadata: view version, epoch, positions, ...).
    pub info: Map<String, Value>,
    /// An application id and version recorded as a `txn` action: the commit is skipped when the
    /// table already has that version (or a later one) for the application.
    pub transaction: Option<(String, i64)>,
    /// Files the commit removes (paths relative to the table). A commit that removes files
    /// rewrites data without changing it (compaction): its actions carry `dataChange: false`.
    pub removes: Vec<String>,
}

/// A file of the table as its log last describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveFile {
    /// Path relative to the table.
    pub path: String,
    /// Rows (from the add action's statistics; 0 when it has none).
    pub rows: u64,
    /// Size in bytes.
    pub size: u64,
    /// When the commit that added it was made (ms since the epoch): when its rows became
    /// visible.
    pub added_ms: Option<i64>,
}

/// What a table's log says up to some version: its live files, the files removed (with the
/// time of the removing commit), and the latest version of each application's `txn`.
#[derive(Debug, Clone, Default)]
struct Snapshot {
    /// The last version applied.
    version: Option<u64>,
    /// When the first commit was written: a table replaced at the same path has another.
    created: Option<std::time::SystemTime>,
    files: Vec<ActiveFile>,
    removed: Vec<(String, i64)>,
    transactions: std::collections::HashMap<String, i64>,
}

impl Snapshot {
    fn apply(&mut self, version: u64, actions: &[Value]) {
        let at = actions
            .iter()
            .find_map(|a| a.pointer("/commitInfo/timestamp").and_then(Value::as_i64));
        for action in actions {
            if let Some(add) = action.get("add") {
                let path = add.get("path").and_then(Value::as_str).unwrap_or("");
                let rows = add
                    .get("stats")
                    .and_then(Value::as_str)
                    .and_then(|s| serde_json::from_str::<Value>(s).ok())
                    .and_then(|s| s.get("numRecords").and_then(Value::as_u64))
                    .unwrap_or(0);
                self.removed.retain(|(p, _)| p != path);
                self.files.push(ActiveFile {
                    path: path.to_string(),
                    rows,
                    size: add.get("size").and_then(Value::as_u64).unwrap_or(0),
                    added_ms: at,
                });
            }
            if let Some(path) = action.pointer("/remove/path").and_then(Value::as_str) {
                self.files.retain(|f| f.path != path);
                self.removed
                    .push((path.to_string(), at.unwrap_or(i64::MAX)));
            }
            if let Some(txn) = action.get("txn") {
                if let (Some(app), Some(v)) = (
                    txn.get("appId").and_then(Value::as_str),
                    txn.get("version").and_then(Value::as_i64),
                ) {
                    let latest = self.transactions.entry(app.to_string()).or_insert(v);
                    *latest = (*latest).max(v);
                }
            }
        }
        self.version = Some(version);
    }
}

/// The table's snapshot at its latest version. Snapshots are kept per table for the process
/// and brought up to date by reading only the commits since: a streaming run committing every
/// few seconds does not re-read its whole log each time.
fn snapshot(table: &StoreDir) -> Result<Snapshot, StoreError> {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    static CACHE: OnceLock<Mutex<HashMap<String, Snapshot>>> = OnceLock::new();
    let key = table.to_string();
    let cached = CACHE
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&key)
        .cloned();
    let (all, created) = log_listing(table)?;
    let mut snap = match cached {
        // A log replaced at this path (another first commit, or fewer versions): start over.
        Some(s)
            if s.created == created && s.version.is_none_or(|v| all.binary_search(&v).is_ok()) =>
        {
            s
        }
        _ => Snapshot {
            created,
            ..Snapshot::default()
        },
    };
    let known = snap.version;
    for &v in all.iter().filter(|&&v| known.is_none_or(|last| v > last)) {
        let actions = read_commit(table, v)?;
        snap.apply(v, &actions);
    }
    CACHE
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(key, snap.clone());
    Ok(snap)
}

/// The files the table holds now: added and not removed since, in the order they were added.
pub fn active_files(table: &StoreDir) -> Result<Vec<ActiveFile>, StoreError> {
    Ok(snapshot(table)?.files)
}

/// Files removed by commits made at or before `cutoff_ms` (milliseconds since the epoch) that no
/// later commit added back: what a vacuum with that retention may delete.
pub fn removed_before(table: &StoreDir, cutoff_ms: i64) -> Result<Vec<String>, StoreError> {
    Ok(snapshot(table)?
        .removed
        .into_iter()
        .filter(|(_, at)| *at <= cutoff_ms)
        .map(|(p, _)| p)
        .collect())
}

fn delta_error(table: &StoreDir, message: impl Into<String>) -> StoreError {
    StoreError::Delta {
        table: table.to_string(),
        message: message.into(),
    }
}

/// The Delta type of an Arrow type, or `None` for types a Delta table cannot hold.
fn delta_type(data_type: &DataType) -> Option<Value> {
    Some(Value::String(
        match data_type {
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "string",
            DataType::Dictionary(_, value) => return delta_type(value),
            DataType::Int64 => "long",
            DataType::Int32 => "integer",
            DataType::Int16 => "short",
            DataType::Int8 => "byte",
            DataType::Float64 => "double",
            DataType::Float32 => "float",
            DataType::Boolean => "boolean",
            DataType::Date32 | DataType::Date64 => "date",
            DataType::Binary | DataType::LargeBinary | DataType::BinaryView => "binary",
            DataType::Timestamp(TimeUnit::Microsecond, None) => "timestamp_ntz",
            DataType::Timestamp(TimeUnit::Microsecond, Some(_)) => "timestamp",
            DataType::Decimal128(p, s) => return Some(Value::String(format!("decimal({p},{s})"))),
            _ => return None,
        }
        .to_string(),
    ))
}

/// The table schema as Delta's `schemaString`, and whether it needs `timestamp_ntz`.
pub fn delta_schema(schema: &Schema) -> Result<(String, bool), String> {
    let mut ntz = false;
    let fields = schema
        .fields()
        .iter()
        .map(|f| {
            let t = delta_type(f.data_type()).ok_or_else(|| {
                format!(
                    "column `{}` is {}, which a Delta table cannot hold (cast it in the view)",
                    f.name(),
                    f.data_type()
                )
            })?;
            ntz |= t == "timestamp_ntz";
            Ok(json!({"name": f.name(), "type": t, "nullable": f.is_nullable(), "metadata": {}}))
        })
        .collect::<Result<Vec<_>, String>>()?;
    Ok((json!({"type": "struct", "fields": fields}).to_string(), ntz))
}

/// The name of commit `version` in the log directory.
fn commit_name(version: u64) -> String {
    format!("{version:020}.json")
}

/// The table's commits so far, in order, and when its first commit was written.
fn log_listing(table: &StoreDir) -> Result<(Vec<u64>, Option<SystemTime>), StoreError> {
    let mut out = Vec::new();
    let mut created = None;
    for entry in table.join(LOG_DIR).list()? {
        if let Some(v) = entry
            .name
            .strip_suffix(".json")
            .and_then(|n| n.parse::<u64>().ok())
        {
            if v == 0 {
                created = entry.modified;
            }
            out.push(v);
        }
    }
    out.sort_unstable();
    Ok((out, created))
}

/// The table's commits so far, in order (none: not a Delta table yet).
pub fn versions(table: &StoreDir) -> Result<Vec<u64>, StoreError> {
    Ok(log_listing(table)?.0)
}

/// The actions of commit `version`, one JSON object per line.
pub fn read_commit(table: &StoreDir, version: u64) -> Result<Vec<Value>, StoreError> {
    let name = commit_name(version);
    let bytes = table
        .join(LOG_DIR)
        .read(&name)?
        .ok_or_else(|| delta_error(table, format!("commit `{name}` is missing")))?;
    let text = std::str::from_utf8(&bytes)
        .map_err(|e| delta_error(table, format!("commit `{name}`: {e}")))?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str(l).map_err(|e| delta_error(table, format!("commit `{name}`: {e}")))
        })
        .collect()
}

/// The column names of the table's schema (its first commit's `metaData`); none when it has
/// no commit yet.
pub fn column_names(table: &StoreDir) -> Result<Vec<String>, StoreError> {
    let Some(first) = versions(table)?.first().copied() else {
        return Ok(Vec::new());
    };
    let actions = read_commit(table, first)?;
    let Some(schema) = actions
        .iter()
        .find_map(|a| a.pointer("/metaData/schemaString").and_then(Value::as_str))
    else {
        return Ok(Vec::new());
    };
    let schema: Value = serde_json::from_str(schema)
        .map_err(|e| delta_error(table, format!("unreadable schema: {e}")))?;
    Ok(schema["fields"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|f| f["name"].as_str().map(str::to_string))
        .collect())
}

/// The latest version the table recorded for application `app_id` (`txn` actions).
pub fn transaction_version(table: &StoreDir, app_id: &str) -> Result<Option<i64>, StoreError> {
    Ok(snapshot(table)?.transactions.get(app_id).copied())
}

/// How many times a commit is retried when another writer took its version first.
const COMMIT_ATTEMPTS: usize = 20;

/// Commits `commit` to the Delta table at `table` (created with `schema` by its first commit).
/// Returns the new version, or `None` when the commit's transaction was already committed.
///
/// Optimistic concurrency, as Delta writers do: when another writer (a compaction, another
/// run) took the next version first, the commit is checked again (its transaction may now be
/// done; the files it removes must still be there) and retried at the version after.
pub fn commit(
    table: &StoreDir,
    schema: &Schema,
    commit: &Commit,
) -> Result<Option<u64>, StoreError> {
    for _ in 0..COMMIT_ATTEMPTS {
        // One look at the log per attempt: the transaction, the removed files, the version.
        let snap = snapshot(table)?;
        if let Some((app, version)) = &commit.transaction {
            if snap
                .transactions
                .get(app)
                .is_some_and(|done| done >= version)
            {
                return Ok(None);
            }
        }
        if let Some(gone) = commit
            .removes
            .iter()
            .find(|r| !snap.files.iter().any(|a| &a.path == *r))
        {
            return Err(delta_error(
                table,
                format!("`{gone}` was removed by another writer meanwhile; nothing committed"),
            ));
        }
        let next = snap.version.map_or(0, |v| v + 1);
        match commit_once(table, schema, commit, next)? {
            Some(version) => return Ok(Some(version)),
            None => continue, // another writer won this version
        }
    }
    Err(delta_error(
        table,
        format!("other writers took {COMMIT_ATTEMPTS} versions in a row; nothing committed"),
    ))
}

/// One attempt at `version`: `None` when another writer took it first.
fn commit_once(
    table: &StoreDir,
    schema: &Schema,
    commit: &Commit,
    version: u64,
) -> Result<Option<u64>, StoreError> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let mut info = Map::new();
    info.insert("timestamp".into(), json!(now));
    let rewrite = !commit.removes.is_empty();
    info.insert(
        "operation".into(),
        json!(match (version, rewrite) {
            (0, _) => "CREATE TABLE AS SELECT",
            (_, true) => "OPTIMIZE",
            _ => "WRITE",
        }),
    );
    info.insert(
        "operationParameters".into(),
        if rewrite {
            json!({})
        } else {
            json!({"mode": "Append"})
        },
    );
    info.insert(
        "engineInfo".into(),
        json!(concat!("quiver/", env!("CARGO_PKG_VERSION"))),
    );
    info.insert("isBlindAppend".into(), json!(!rewrite));
    info.extend(commit.info.clone());
    let mut actions = vec![json!({ "commitInfo": info })];
    if version == 0 {
        let (schema_string, ntz) =
            delta_schema(schema).map_err(|message| delta_error(table, message))?;
        actions.push(if ntz {
            json!({"protocol": {"minReaderVersion": 3, "minWriterVersion": 7,
                "readerFeatures": ["timestampNtz"], "writerFeatures": ["timestampNtz"]}})
        } else {
            json!({"protocol": {"minReaderVersion": 1, "minWriterVersion": 2}})
        });
        actions.push(json!({"metaData": {
            "id": uuid::Uuid::new_v4().to_string(),
            "format": {"provider": "parquet", "options": {}},
            "schemaString": schema_string,
            "partitionColumns": [],
            "configuration": {},
            "createdTime": now,
        }}));
    }
    if let Some((app, v)) = &commit.transaction {
        actions.push(json!({"txn": {"appId": app, "version": v, "lastUpdated": now}}));
    }
    for path in &commit.removes {
        actions.push(json!({"remove": {
            "path": path,
            "deletionTimestamp": now,
            "dataChange": false,
        }}));
    }
    for file in &commit.files {
        if file.path.split('/').any(|p| p == ".." || p.is_empty()) {
            return Err(delta_error(
                table,
                format!("bad data file path `{}`", file.path),
            ));
        }
        actions.push(json!({"add": {
            "path": file.path,
            "partitionValues": {},
            "size": file.size,
            "modificationTime": now,
            "dataChange": !rewrite,
            "stats": json!({"numRecords": file.rows}).to_string(),
        }}));
    }
    let mut text = String::new();
    for action in &actions {
        text.push_str(&action.to_string());
        text.push('\n');
    }
    // Not created when another writer took this version first: the table stays consistent
    // and the caller retries.
    let created = table
        .join(LOG_DIR)
        .create(&commit_name(version), text.as_bytes())?;
    Ok(created.then_some(version))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::Field;

    fn schema() -> Schema {
        Schema::new(vec![
            Field::new("card_id", DataType::Utf8, false),
            Field::new(
                "event_time",
                DataType::Timestamp(TimeUnit::Microsecond, None),
                false,
            ),
            Field::new("n", DataType::Int64, true),
        ])
    }

    #[test]
    fn commits_are_numbered_and_idempotent_per_transaction() {
        let dir = tempfile::tempdir().unwrap();
        let table = StoreDir::local(dir.path().join("t"));
        let first = Commit {
            files: vec![AddFile {
                path: "part-0.parquet".into(),
                size: 10,
                rows: 3,
            }],
            info: Map::from_iter([("quiver".to_string(), json!({"epoch": 1}))]),
            transaction: Some(("run-a".into(), 1)),
            removes: Vec::new(),
        };
        assert_eq!(commit(&table, &schema(), &first).unwrap(), Some(0));
        // The same epoch again (a retry after a crash): nothing new.
        assert_eq!(commit(&table, &schema(), &first).unwrap(), None);
        let second = Commit {
            transaction: Some(("run-a".into(), 2)),
            ..first.clone()
        };
        assert_eq!(commit(&table, &schema(), &second).unwrap(), Some(1));
        assert_eq!(versions(&table).unwrap(), vec![0, 1]);
        let actions = read_commit(&table, 0).unwrap();
        assert!(actions[0]["commitInfo"]["quiver"]["epoch"] == 1);
        assert_eq!(actions[1]["protocol"]["minReaderVersion"], 3);
        let schema_string = actions[2]["metaData"]["schemaString"].as_str().unwrap();
        assert!(schema_string.contains("timestamp_ntz"), "{schema_string}");
        assert_eq!(transaction_version(&table, "run-a").unwrap(), Some(2));
        assert!(!read_commit(&table, 1)
            .unwrap()
            .iter()
            .any(|a| a.get("metaData").is_some()));
    }

    #[test]
    fn compaction_removes_what_it_merges_once() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = StoreDir::local(tmp.path());
        let add = |path: &str| AddFile {
            path: path.into(),
            size: 1,
            rows: 2,
        };
        let append = Commit {
            files: vec![add("a.parquet"), add("b.parquet")],
            ..Commit::default()
        };
        commit(&dir, &schema(), &append).unwrap();
        let merge = Commit {
            files: vec![add("c.parquet")],
            removes: vec!["a.parquet".into(), "b.parquet".into()],
            ..Commit::default()
        };
        assert_eq!(commit(&dir, &schema(), &merge).unwrap(), Some(1));
        let active: Vec<String> = active_files(&dir)
            .unwrap()
            .into_iter()
            .map(|f| f.path)
            .collect();
        assert_eq!(active, vec!["c.parquet"]);
        assert_eq!(removed_before(&dir, 0).unwrap(), Vec::<String>::new());
        assert_eq!(
            removed_before(&dir, i64::MAX).unwrap(),
            vec!["a.parquet", "b.parquet"]
        );
        let removes = read_commit(&dir, 1).unwrap();
        assert!(removes
            .iter()
            .any(|a| a.pointer("/remove/dataChange") == Some(&json!(false))));
        // The same merge again: its files are gone, so nothing is committed.
        assert!(commit(&dir, &schema(), &merge).is_err());
        assert_eq!(versions(&dir).unwrap(), vec![0, 1]);
    }

    #[test]
    fn unsupported_types_and_paths_are_errors() {
        let bad = Schema::new(vec![Field::new("u", DataType::UInt64, true)]);
        assert!(delta_schema(&bad).unwrap_err().contains("`u`"));
        let tmp = tempfile::tempdir().unwrap();
        let dir = StoreDir::local(tmp.path());
        let escape = Commit {
            files: vec![AddFile {
                path: "../x.parquet".into(),
                size: 1,
                rows: 1,
            }],
            ..Commit::default()
        };
        assert!(commit(&dir, &schema(), &escape).is_err());
    }
}
