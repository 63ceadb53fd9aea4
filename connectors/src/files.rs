//! Resolving an input location (local path, directory, glob or object-store URL) to a list of
//! objects, and reading them.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt};
use url::Url;

use crate::error::ConnectorError;

/// The objects an input location resolved to, in name order, and the store holding them.
pub struct InputFiles {
    store: Arc<dyn ObjectStore>,
    paths: Vec<ObjectPath>,
    names: Vec<String>,
}

impl std::fmt::Debug for InputFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The store is left out: its configuration may hold credentials.
        f.debug_struct("InputFiles")
            .field("names", &self.names)
            .finish_non_exhaustive()
    }
}

/// Whether a path segment is a glob pattern.
fn is_pattern(segment: &str) -> bool {
    segment.contains(['*', '?'])
}

/// Shell-style match of a file name: `*` matches any run of characters, `?` one character;
/// a leading `.` must be matched literally.
fn glob_matches(pattern: &str, name: &str) -> bool {
    if name.starts_with('.') && !pattern.starts_with('.') {
        return false;
    }
    let pattern: Vec<char> = pattern.chars().collect();
    let name: Vec<char> = name.chars().collect();
    let (mut p, mut n) = (0, 0);
    // Position after the last `*` and the name position it is currently matched up to.
    let mut backtrack: Option<(usize, usize)> = None;
    while n < name.len() {
        match pattern.get(p) {
            Some('*') => {
                backtrack = Some((p + 1, n));
                p += 1;
            }
            Some(&c) if c == '?' || c == name[n] => {
                p += 1;
                n += 1;
            }
            _ => match backtrack {
                Some((star_p, star_n)) => {
                    p = star_p;
                    n = star_n + 1;
                    backtrack = Some((star_p, star_n + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == '*')
}

/// Whether a directory-listing entry is a data file rather than a hidden or marker file
/// (`.crc`, `_SUCCESS`, ...).
fn is_data_file(name: &str) -> bool {
    !(name.starts_with('.') || name.starts_with('_'))
}

/// A location split into the part before the last `/` and a glob pattern after it, if any.
fn split_pattern(location: &str) -> Result<(&str, Option<&str>), ConnectorError> {
    let (base, last) = match location.rfind('/') {
        Some(slash) => (&location[..=slash], &location[slash + 1..]),
        None => ("", location),
    };
    if is_pattern(base.split_once("://").map_or(base, |(_, rest)| rest)) {
        return Err(ConnectorError::InvalidLocation {
            location: location.to_string(),
            detail: "wildcards `*` and `?` are only supported in the last path segment; list \
                     the directories separately"
                .into(),
        });
    }
    if is_pattern(last) {
        Ok((base, Some(last)))
    } else {
        Ok((location, None))
    }
}

/// Whether `location` is a URL rather than a local path (a Windows drive letter is a path).
fn is_url(location: &str) -> bool {
    match location.split_once("://") {
        Some((scheme, _)) => {
            scheme.len() > 1
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
        }
        None => false,
    }
}

impl InputFiles {
    /// Resolves `location`: a local path (file, directory => all files inside sorted by name,
    /// skipping names starting with `.` or `_`, or a glob with `*`/`?` in the last path
    /// segment), or a URL (`file:///...`, `s3://bucket/prefix/*.parquet`, any object_store
    /// URL). `options` are passed to `object_store::parse_url_opts` (e.g. `aws_endpoint`,
    /// `aws_allow_http`, `aws_region`, credentials) and never logged; they are ignored for
    /// local paths. Fails, naming the location, if nothing matches.
    pub async fn resolve(
        location: &str,
        options: &BTreeMap<String, String>,
    ) -> Result<Self, ConnectorError> {
        let (base, pattern) = split_pattern(location)?;
        let store_error = |source| ConnectorError::ObjectStore {
            location: location.to_string(),
            source,
        };
        let (store, prefix, display_root): (Arc<dyn ObjectStore>, ObjectPath, String) =
            if is_url(base) {
                let url = Url::parse(base).map_err(|e| ConnectorError::InvalidLocation {
                    location: location.to_string(),
                    detail: format!("not a valid URL: {e}"),
                })?;
                let (store, path) =
                    object_store::parse_url_opts(&url, options.iter()).map_err(|e| {
                        ConnectorError::InvalidLocation {
                            location: location.to_string(),
                            detail: format!(
                                "unsupported URL or options: {e}; supported schemes are \
                                 file://, memory:// and s3://"
                            ),
                        }
                    })?;
                let root = url[..url::Position::BeforePath].to_string();
                (Arc::from(store), path, root)
            } else {
                let local = if base.is_empty() { "." } else { base };
                let canonical = match tokio::fs::canonicalize(local).await {
                    Ok(path) => path,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        return Err(ConnectorError::NoMatch {
                            location: location.to_string(),
                        })
                    }
                    Err(source) => {
                        return Err(ConnectorError::Io {
                            path: local.into(),
                            action: "resolving the input location",
                            source,
                        })
                    }
                };
                let path = ObjectPath::from_absolute_path(&canonical).map_err(|e| {
                    ConnectorError::InvalidLocation {
                        location: location.to_string(),
                        detail: format!("cannot use this local path: {e}"),
                    }
                })?;
                (Arc::new(LocalFileSystem::new()), path, "/".to_string())
            };

        let mut paths = Vec::new();
        let single = if pattern.is_some() || prefix.as_ref().is_empty() {
            None
        } else {
            match store.head(&prefix).await {
                Ok(meta) => Some(meta.location),
                Err(object_store::Error::NotFound { .. }) => None,
                // Local directories report as an error other than "not found" on some platforms.
                Err(_) if display_root == "/" => None,
                Err(e) => return Err(store_error(e)),
            }
        };
        match single {
            Some(path) => paths.push(path),
            None => {
                let prefix = (!prefix.as_ref().is_empty()).then_some(&prefix);
                let listing = store
                    .list_with_delimiter(prefix)
                    .await
                    .or_else(|e| match e {
                        object_store::Error::NotFound { .. } => Ok(object_store::ListResult {
                            common_prefixes: Vec::new(),
                            objects: Vec::new(),
                        }),
                        other => Err(other),
                    })
                    .map_err(store_error)?;
                for meta in listing.objects {
                    let Some(name) = meta.location.filename() else {
                        continue;
                    };
                    let keep = match pattern {
                        Some(pattern) => glob_matches(pattern, name),
                        None => is_data_file(name),
                    };
                    if keep {
                        paths.push(meta.location);
                    }
                }
            }
        }
        if paths.is_empty() {
            return Err(ConnectorError::NoMatch {
                location: location.to_string(),
            });
        }
        paths.sort();
        let names = paths
            .iter()
            .map(|p| {
                if display_root == "/" {
                    format!("/{p}")
                } else {
                    format!("{display_root}/{p}")
                }
            })
            .collect();
        Ok(Self {
            store,
            paths,
            names,
        })
    }

    /// Display names of the objects (absolute local paths or full URLs), used as partitions.
    pub fn names(&self) -> Vec<String> {
        self.names.clone()
    }

    /// The path and display name of object `index`.
    fn object(&self, index: usize) -> Result<(&ObjectPath, &String), ConnectorError> {
        match (self.paths.get(index), self.names.get(index)) {
            (Some(path), Some(name)) => Ok((path, name)),
            _ => Err(ConnectorError::FileIndex {
                index,
                len: self.paths.len(),
            }),
        }
    }

    /// Reads object `index` whole.
    pub async fn read(&self, index: usize) -> Result<Bytes, ConnectorError> {
        let (path, name) = self.object(index)?;
        let store_error = |source| ConnectorError::ObjectStore {
            location: name.clone(),
            source,
        };
        let result = self.store.get(path).await.map_err(store_error)?;
        result.bytes().await.map_err(store_error)
    }

    /// Object `index` for ranged reads (its size read from the store).
    pub async fn ranges(
        &self,
        index: usize,
    ) -> Result<crate::object_ranges::ObjectRanges, ConnectorError> {
        let (path, name) = self.object(index)?;
        let meta = self
            .store
            .head(path)
            .await
            .map_err(|source| ConnectorError::ObjectStore {
                location: name.clone(),
                source,
            })?;
        Ok(crate::object_ranges::ObjectRanges::new(
            Arc::clone(&self.store),
            path.clone(),
            meta.size,
        ))
    }

    /// The metadata of Parquet object `index`, read from its footer alone (ranged reads of the
    /// file's tail, not the whole object).
    async fn parquet_metadata(
        &self,
        index: usize,
    ) -> Result<parquet::file::metadata::ParquetMetaData, ConnectorError> {
        use parquet::errors::ParquetError;
        use parquet::file::metadata::ParquetMetaDataReader;
        let (path, name) = self.object(index)?;
        let store_error = |source| ConnectorError::ObjectStore {
            location: name.clone(),
            source,
        };
        let size = self.store.head(path).await.map_err(store_error)?.size;
        // Most footers fit in 64 KiB; a larger one says how much it needs.
        let mut tail = size.min(64 * 1024);
        let mut reader = ParquetMetaDataReader::new();
        loop {
            let bytes = self
                .store
                .get_range(path, size - tail..size)
                .await
                .map_err(store_error)?;
            match reader.try_parse_sized(&bytes, size) {
                Ok(()) => break,
                Err(ParquetError::NeedMoreData(needed)) if (needed as u64) > tail => {
                    tail = needed as u64;
                }
                Err(e) => return Err(corrupt_parquet(name, e)),
            }
        }
        reader.finish().map_err(|e| corrupt_parquet(name, e))
    }

    /// The Arrow schema of Parquet object `index`, read from its footer alone.
    pub async fn parquet_schema(
        &self,
        index: usize,
    ) -> Result<arrow::datatypes::SchemaRef, ConnectorError> {
        let metadata = self.parquet_metadata(index).await?;
        let file = metadata.file_metadata();
        let schema =
            parquet::arrow::parquet_to_arrow_schema(file.schema_descr(), file.key_value_metadata())
                .map_err(|e| corrupt_parquet(&self.names[index], e))?;
        Ok(Arc::new(schema))
    }

    /// The rows of Parquet object `index`, as its footer alone says.
    pub async fn parquet_rows(&self, index: usize) -> Result<u64, ConnectorError> {
        let metadata = self.parquet_metadata(index).await?;
        Ok(u64::try_from(metadata.file_metadata().num_rows()).unwrap_or(0))
    }

    /// Number of resolved objects.
    pub fn len(&self) -> usize {
        self.paths.len()
    }

    /// Whether no object was resolved (never true for a value returned by `resolve`).
    pub fn is_empty(&self) -> bool {
        self.paths.is_empty()
    }
}

/// The error of object `name`'s Parquet metadata that cannot be read.
fn corrupt_parquet(name: &str, e: parquet::errors::ParquetError) -> ConnectorError {
    ConnectorError::Parquet {
        partition: name.to_string(),
        detail: format!(
            "cannot read the file metadata: {e}; the file is truncated, corrupt or not Parquet"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_matching() {
        assert!(glob_matches("*.csv", "a.csv"));
        assert!(!glob_matches("*.csv", ".csv"));
        assert!(glob_matches("part-??.csv", "part-01.csv"));
        assert!(!glob_matches("part-??.csv", "part-1.csv"));
        assert!(glob_matches("a*b*c", "axxbyyc"));
        assert!(!glob_matches("a*b*c", "axxbyy"));
        assert!(glob_matches("*", "x"));
        assert!(!glob_matches("*.csv", "a.csv.tmp"));
    }

    fn write(dir: &std::path::Path, name: &str, text: &str) {
        std::fs::write(dir.join(name), text).unwrap();
    }

    #[tokio::test]
    async fn resolves_local_dirs_globs_files_and_urls() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().canonicalize().unwrap();
        write(&dir, "b.ndjson", "b");
        write(&dir, "a.ndjson", "a");
        write(&dir, "c.csv", "c");
        write(&dir, "_SUCCESS", "");
        write(&dir, ".hidden.ndjson", "");
        std::fs::create_dir(dir.join("sub")).unwrap();
        write(&dir.join("sub"), "d.ndjson", "d");
        let none = BTreeMap::new();
        let d = dir.display();

        let all = InputFiles::resolve(&d.to_string(), &none).await.unwrap();
        assert_eq!(
            all.names(),
            vec![
                format!("{d}/a.ndjson"),
                format!("{d}/b.ndjson"),
                format!("{d}/c.csv")
            ]
        );
        assert_eq!(all.len(), 3);
        assert_eq!(&all.read(1).await.unwrap()[..], b"b");
        assert!(matches!(
            all.read(3).await,
            Err(ConnectorError::FileIndex { index: 3, len: 3 })
        ));

        let glob = InputFiles::resolve(&format!("{d}/*.ndjson"), &none)
            .await
            .unwrap();
        assert_eq!(
            glob.names(),
            vec![format!("{d}/a.ndjson"), format!("{d}/b.ndjson")]
        );

        let one = InputFiles::resolve(&format!("{d}/c.csv"), &none)
            .await
            .unwrap();
        assert_eq!(one.names(), vec![format!("{d}/c.csv")]);
        assert_eq!(&one.read(0).await.unwrap()[..], b"c");

        let url = format!("file://{d}/?.ndjson");
        let by_url = InputFiles::resolve(&url, &none).await.unwrap();
        assert_eq!(
            by_url.names(),
            vec![
                format!("file://{d}/a.ndjson"),
                format!("file://{d}/b.ndjson")
            ]
        );
        assert_eq!(&by_url.read(0).await.unwrap()[..], b"a");

        let dir_url = InputFiles::resolve(&format!("file://{d}/sub/"), &none)
            .await
            .unwrap();
        assert_eq!(dir_url.names(), vec![format!("file://{d}/sub/d.ndjson")]);
    }

    #[tokio::test]
    async fn nothing_matching_is_an_error_naming_the_location() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path().canonicalize().unwrap();
        let none = BTreeMap::new();
        for location in [
            format!("{}/*.parquet", d.display()),
            format!("{}/missing.csv", d.display()),
            format!("{}/missing_dir/", d.display()),
            d.display().to_string(),
            format!("file://{}/*.parquet", d.display()),
        ] {
            let err = InputFiles::resolve(&location, &none).await.unwrap_err();
            assert!(
                matches!(err, ConnectorError::NoMatch { .. }),
                "{location}: {err}"
            );
            assert!(err.to_string().contains(&location), "{err}");
        }
        let err = InputFiles::resolve("/a/*/b.csv", &none).await.unwrap_err();
        assert!(err.to_string().contains("last path segment"), "{err}");
    }
}
