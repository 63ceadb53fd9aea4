//! Where the feature store lives: a local directory, or a prefix of an object store (`s3://`,
//! any URL `object_store` parses). Everything the registry, the Delta logs and the tables do
//! to their files goes through [`StoreDir`], so both kinds of root behave alike:
//!
//! | operation | local directory | object store |
//! |---|---|---|
//! | [`StoreDir::write`] (replace) | temporary file, sync, rename | one PUT (atomic per object) |
//! | [`StoreDir::create`] (only if absent) | temporary file, sync, hard link | PUT `If-None-Match: *` |
//! | [`StoreDir::put_file`] | rename (same disk) or copy | PUT, or a multipart upload |
//!
//! The store's functions are synchronous (they run on the job's threads and in tests without a
//! runtime); object-store requests run on a small runtime of their own ([`block_on`]), which is
//! safe to call from inside another tokio runtime.

use crate::error::StoreError;
use bytes::Bytes;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::SystemTime;

/// Objects up to this size are uploaded in one PUT; larger ones in parts of this size.
const PART_BYTES: usize = 16 * 1024 * 1024;

/// The runtime that object-store requests run on.
fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("quiver-store-io")
            .enable_all()
            .build()
            .unwrap_or_else(|e| {
                // Without threads nothing can run at all; there is no error to return to.
                eprintln!("error: cannot start the object-store I/O threads: {e}");
                std::process::exit(1)
            })
    })
}

/// A handle of the runtime that object-store requests run on.
pub fn io_handle() -> tokio::runtime::Handle {
    runtime().handle().clone()
}

/// Runs `future` to completion on the store's I/O runtime and waits for it on this thread
/// (which may be a thread of another runtime: the future never runs on it). `None` when the
/// future panicked.
pub fn block_on<T: Send + 'static>(future: impl Future<Output = T> + Send + 'static) -> Option<T> {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    runtime().spawn(async move {
        let _ = tx.send(future.await);
    });
    rx.recv().ok()
}

/// [`block_on`] for an object-store request.
fn request<T: Send + 'static>(
    future: impl Future<Output = Result<T, object_store::Error>> + Send + 'static,
) -> Result<T, object_store::Error> {
    block_on(future).unwrap_or_else(|| {
        Err(object_store::Error::Generic {
            store: "quiver",
            source: "the object-store request was abandoned".into(),
        })
    })
}

/// A directory of the store: local, or a prefix of an object store.
#[derive(Clone)]
pub struct StoreDir {
    inner: Inner,
}

#[derive(Clone)]
enum Inner {
    Local(PathBuf),
    Object {
        store: Arc<dyn ObjectStore>,
        path: ObjectPath,
        /// `scheme://bucket`, for messages (never credentials).
        root: Arc<str>,
    },
}

/// One entry of a directory listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Its name in the directory.
    pub name: String,
    /// Whether it is a directory (a common prefix on an object store).
    pub is_dir: bool,
    /// Size in bytes (0 for directories).
    pub size: u64,
    /// When it was last written (`None` for object-store directories).
    pub modified: Option<SystemTime>,
}

impl std::fmt::Debug for StoreDir {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The store's client is left out: its configuration may hold credentials.
        write!(f, "StoreDir({self})")
    }
}

impl std::fmt::Display for StoreDir {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.inner {
            Inner::Local(path) => write!(f, "{}", path.display()),
            Inner::Object { path, root, .. } => write!(f, "{root}/{path}"),
        }
    }
}

impl PartialEq for StoreDir {
    fn eq(&self, other: &Self) -> bool {
        self.to_string() == other.to_string()
    }
}

impl Eq for StoreDir {}

/// Whether `location` is a URL rather than a local path (a Windows drive letter is a path).
pub fn is_url(location: &str) -> bool {
    location.split_once("://").is_some_and(|(scheme, _)| {
        scheme.len() > 1
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
    })
}

fn object_error(location: String, e: object_store::Error) -> StoreError {
    StoreError::Object {
        location,
        message: e.to_string(),
    }
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl StoreDir {
    /// A local directory (created on first write).
    pub fn local(path: impl Into<PathBuf>) -> Self {
        StoreDir {
            inner: Inner::Local(path.into()),
        }
    }

    /// The directory at `location`: a local path, a `file://` URL, or an object-store URL
    /// (`s3://bucket/prefix`) configured by the environment's `AWS_*` variables
    /// (`AWS_ENDPOINT`, `AWS_REGION`, `AWS_ACCESS_KEY_ID`, ...) and then by `options`
    /// (`aws_endpoint`, ...), which take precedence; neither is ever shown in messages.
    pub fn parse(location: &str, options: &BTreeMap<String, String>) -> Result<Self, StoreError> {
        if !is_url(location) {
            return Ok(Self::local(location));
        }
        let invalid = |detail: String| StoreError::Object {
            location: location.to_string(),
            message: detail,
        };
        let url =
            url::Url::parse(location).map_err(|e| invalid(format!("not a valid URL: {e}")))?;
        if url.scheme() == "file" {
            let path = url
                .to_file_path()
                .map_err(|()| invalid("not a local file URL".into()))?;
            return Ok(Self::local(path));
        }
        let mut settings: BTreeMap<String, String> = std::env::vars()
            .filter(|(k, _)| k.starts_with("AWS_"))
            .map(|(k, v)| (k.to_ascii_lowercase(), v))
            .collect();
        settings.extend(options.iter().map(|(k, v)| (k.clone(), v.clone())));
        let (store, path) = object_store::parse_url_opts(&url, settings.iter()).map_err(|e| {
            invalid(format!(
                "cannot open it as a store: {e} (a store is a local directory or an s3:// URL, \
                 configured by `store_options` and the AWS_* environment variables)"
            ))
        })?;
        Ok(StoreDir {
            inner: Inner::Object {
                store: Arc::from(store),
                path,
                root: url[..url::Position::BeforePath].into(),
            },
        })
    }

    /// The directory `name` (one or more `/`-separated segments) inside this one.
    pub fn join(&self, name: &str) -> Self {
        let inner = match &self.inner {
            Inner::Local(path) => Inner::Local(path.join(name)),
            Inner::Object { store, path, root } => Inner::Object {
                store: Arc::clone(store),
                path: ObjectPath::from_iter(
                    path.parts().chain(
                        name.split('/')
                            .filter(|s| !s.is_empty())
                            .map(object_store::path::PathPart::from),
                    ),
                ),
                root: Arc::clone(root),
            },
        };
        StoreDir { inner }
    }

    /// The directory a store run's commit names by `path`: relative to `object_store` when
    /// the store is on one, else the local path itself.
    pub fn of_commit(object_store: Option<&StoreDir>, path: &Path) -> StoreDir {
        match object_store {
            Some(store) => store.join(&path.to_string_lossy()),
            None => StoreDir::local(path),
        }
    }

    /// The local directory, when the store is on the local disk.
    pub fn local_path(&self) -> Option<&Path> {
        match &self.inner {
            Inner::Local(path) => Some(path),
            Inner::Object { .. } => None,
        }
    }

    /// The object store and the object path of `name` in this directory, when the store is an
    /// object store.
    pub fn object(&self, name: &str) -> Option<(Arc<dyn ObjectStore>, ObjectPath)> {
        match &self.join(name).inner {
            Inner::Local(_) => None,
            Inner::Object { store, path, .. } => Some((Arc::clone(store), path.clone())),
        }
    }

    fn describe(&self, name: &str) -> String {
        self.join(name).to_string()
    }

    /// The content of the file `name`, `None` when there is none.
    pub fn read(&self, name: &str) -> Result<Option<Bytes>, StoreError> {
        match self.object(name) {
            None => {
                let path = self.join(name).local_path().map(Path::to_path_buf);
                let path = path.unwrap_or_default();
                match std::fs::read(&path) {
                    Ok(bytes) => Ok(Some(Bytes::from(bytes))),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                    Err(e) => Err(io_error(&path)(e)),
                }
            }
            Some((store, path)) => {
                let got = request(async move {
                    match store.get(&path).await {
                        Ok(result) => result.bytes().await.map(Some),
                        Err(object_store::Error::NotFound { .. }) => Ok(None),
                        Err(e) => Err(e),
                    }
                });
                got.map_err(|e| object_error(self.describe(name), e))
            }
        }
    }

    /// Writes the file `name`, replacing it atomically: a reader or a crash sees the old
    /// content or the new, never part of it.
    pub fn write(&self, name: &str, bytes: &[u8]) -> Result<(), StoreError> {
        match self.object(name) {
            None => {
                let path = self.local_file(name);
                let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
                crate::sink::write_atomically(&path, &tmp, bytes, || {})
            }
            Some((store, path)) => {
                let payload = PutPayload::from(bytes.to_vec());
                request(async move { store.put(&path, payload).await.map(|_| ()) })
                    .map_err(|e| object_error(self.describe(name), e))
            }
        }
    }

    /// Creates the file `name` only if there is none: `false` (nothing written) when another
    /// writer created it first. Readers never see part of it.
    pub fn create(&self, name: &str, bytes: &[u8]) -> Result<bool, StoreError> {
        match self.object(name) {
            None => {
                let path = self.local_file(name);
                let dir = path.parent().unwrap_or(Path::new("."));
                let file_name = path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let tmp = dir.join(format!(".{file_name}.{}.tmp", std::process::id()));
                crate::sink::write_synced(&tmp, bytes)?;
                // The link fails if the name exists: two writers never both create it.
                let linked = std::fs::hard_link(&tmp, &path);
                let _ = std::fs::remove_file(&tmp);
                match linked {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(false),
                    Err(e) => return Err(io_error(&path)(e)),
                }
                crate::sink::sync_dir(dir)?;
                Ok(true)
            }
            Some((store, path)) => {
                let payload = PutPayload::from(bytes.to_vec());
                let options = PutOptions {
                    mode: PutMode::Create,
                    ..PutOptions::default()
                };
                request(async move {
                    match store.put_opts(&path, payload, options).await {
                        Ok(_) => Ok(true),
                        Err(object_store::Error::AlreadyExists { .. }) => Ok(false),
                        Err(e) => Err(e),
                    }
                })
                .map_err(|e| object_error(self.describe(name), e))
            }
        }
    }

    /// The local path of `name` (local stores only).
    fn local_file(&self, name: &str) -> PathBuf {
        self.join(name)
            .local_path()
            .map(Path::to_path_buf)
            .unwrap_or_default()
    }

    /// The entries directly in this directory, sorted by name (none when it does not exist).
    /// Hidden local files (temporary files of writers) are left out.
    pub fn list(&self) -> Result<Vec<Entry>, StoreError> {
        let mut entries = match &self.inner {
            Inner::Local(dir) => {
                let read = match std::fs::read_dir(dir) {
                    Ok(read) => read,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
                    Err(e) => return Err(io_error(dir)(e)),
                };
                let mut entries = Vec::new();
                for entry in read {
                    let entry = entry.map_err(io_error(dir))?;
                    let name = entry.file_name().to_string_lossy().into_owned();
                    if name.starts_with('.') {
                        continue;
                    }
                    let Ok(meta) = entry.metadata() else {
                        continue; // removed meanwhile
                    };
                    entries.push(Entry {
                        name,
                        is_dir: meta.is_dir(),
                        size: if meta.is_dir() { 0 } else { meta.len() },
                        modified: meta.modified().ok(),
                    });
                }
                entries
            }
            Inner::Object { store, path, .. } => {
                let (store, prefix) = (Arc::clone(store), path.clone());
                let listing = request(async move {
                    let prefix = (!prefix.as_ref().is_empty()).then_some(&prefix);
                    store.list_with_delimiter(prefix).await
                })
                .map_err(|e| object_error(self.to_string(), e))?;
                let mut entries: Vec<Entry> = listing
                    .common_prefixes
                    .into_iter()
                    .filter_map(|p| {
                        Some(Entry {
                            name: p.filename()?.to_string(),
                            is_dir: true,
                            size: 0,
                            modified: None,
                        })
                    })
                    .collect();
                entries.extend(listing.objects.into_iter().filter_map(|meta| {
                    Some(Entry {
                        name: meta.location.filename()?.to_string(),
                        is_dir: false,
                        size: meta.size,
                        modified: Some(meta.last_modified.into()),
                    })
                }));
                entries
            }
        };
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(entries)
    }

    /// When anything in this directory (at any depth) was last written; `None` when it holds
    /// nothing.
    pub fn last_modified(&self) -> Result<Option<SystemTime>, StoreError> {
        match &self.inner {
            Inner::Local(dir) => match std::fs::metadata(dir) {
                Ok(meta) => Ok(meta.modified().ok()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(io_error(dir)(e)),
            },
            Inner::Object { .. } => Ok(self
                .all_objects()?
                .into_iter()
                .map(|meta| SystemTime::from(meta.last_modified))
                .max()),
        }
    }

    fn all_objects(&self) -> Result<Vec<object_store::ObjectMeta>, StoreError> {
        let Inner::Object { store, path, .. } = &self.inner else {
            return Ok(Vec::new());
        };
        let (store, prefix) = (Arc::clone(store), path.clone());
        request(async move {
            use futures::TryStreamExt;
            store.list(Some(&prefix)).try_collect::<Vec<_>>().await
        })
        .map_err(|e| object_error(self.to_string(), e))
    }

    /// The size of the file `name`, `None` when there is none.
    pub fn size(&self, name: &str) -> Result<Option<u64>, StoreError> {
        match self.object(name) {
            None => {
                let path = self.local_file(name);
                match std::fs::metadata(&path) {
                    Ok(meta) => Ok(Some(meta.len())),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                    Err(e) => Err(io_error(&path)(e)),
                }
            }
            Some((store, path)) => request(async move {
                match store.head(&path).await {
                    Ok(meta) => Ok(Some(meta.size)),
                    Err(object_store::Error::NotFound { .. }) => Ok(None),
                    Err(e) => Err(e),
                }
            })
            .map_err(|e| object_error(self.describe(name), e)),
        }
    }

    /// Deletes the file `name`; `false` when there was none.
    pub fn remove(&self, name: &str) -> Result<bool, StoreError> {
        match self.object(name) {
            None => {
                let path = self.local_file(name);
                match std::fs::remove_file(&path) {
                    Ok(()) => Ok(true),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
                    Err(e) => Err(io_error(&path)(e)),
                }
            }
            Some((store, path)) => request(async move {
                match store.head(&path).await {
                    Ok(_) => store.delete(&path).await.map(|()| true),
                    Err(object_store::Error::NotFound { .. }) => Ok(false),
                    Err(e) => Err(e),
                }
            })
            .map_err(|e| object_error(self.describe(name), e)),
        }
    }

    /// Deletes this directory and everything in it (nothing when it does not exist).
    pub fn remove_all(&self) -> Result<(), StoreError> {
        match &self.inner {
            Inner::Local(dir) => match std::fs::remove_dir_all(dir) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(io_error(dir)(e)),
            },
            Inner::Object { store, .. } => {
                for meta in self.all_objects()? {
                    let store = Arc::clone(store);
                    let location = meta.location.clone();
                    request(async move {
                        match store.delete(&location).await {
                            Err(object_store::Error::NotFound { .. }) => Ok(()),
                            other => other,
                        }
                    })
                    .map_err(|e| object_error(meta.location.to_string(), e))?;
                }
                Ok(())
            }
        }
    }

    /// Moves the local file `from` into this directory as `name`: a rename (or a copy when it
    /// is on another disk) for a local store, an upload (in parts when large) for an object
    /// store. `from` is gone afterwards.
    pub fn put_file(&self, from: &Path, name: &str) -> Result<(), StoreError> {
        match self.object(name) {
            None => {
                let to = self.local_file(name);
                let dir = to.parent().unwrap_or(Path::new("."));
                std::fs::create_dir_all(dir).map_err(io_error(dir))?;
                if std::fs::rename(from, &to).is_err() {
                    std::fs::copy(from, &to).map_err(io_error(&to))?;
                    std::fs::File::open(&to)
                        .and_then(|f| f.sync_all())
                        .map_err(io_error(&to))?;
                    std::fs::remove_file(from).map_err(io_error(from))?;
                }
                crate::sink::sync_dir(dir)
            }
            Some((store, path)) => {
                upload(store, path, from).map_err(|e| object_error(self.describe(name), e))?;
                std::fs::remove_file(from).map_err(io_error(from))
            }
        }
    }
}

/// Uploads the local file `from` to `path`: one PUT when small, else a multipart upload
/// (aborted on failure, so no part is left behind).
fn upload(
    store: Arc<dyn ObjectStore>,
    path: ObjectPath,
    from: &Path,
) -> Result<(), object_store::Error> {
    use std::io::Read;
    let local = |source: std::io::Error| object_store::Error::Generic {
        store: "local file",
        source: format!("`{}`: {source}", from.display()).into(),
    };
    let mut file = std::fs::File::open(from).map_err(local)?;
    let size = file.metadata().map_err(local)?.len();
    if size <= PART_BYTES as u64 {
        let mut bytes = Vec::with_capacity(size as usize);
        file.read_to_end(&mut bytes).map_err(local)?;
        return request(async move { store.put(&path, bytes.into()).await.map(|_| ()) });
    }
    let (store2, path2) = (Arc::clone(&store), path.clone());
    let mut upload = request(async move { store2.put_multipart(&path2).await })?;
    let result = (|| {
        loop {
            let mut part = vec![0u8; PART_BYTES];
            let mut filled = 0;
            while filled < PART_BYTES {
                let n = file.read(&mut part[filled..]).map_err(local)?;
                if n == 0 {
                    break;
                }
                filled += n;
            }
            if filled == 0 {
                break;
            }
            part.truncate(filled);
            let part = upload.put_part(PutPayload::from(part));
            request(part)?;
            if filled < PART_BYTES {
                break;
            }
        }
        Ok(())
    })();
    match result {
        Ok(()) => request(async move { upload.complete().await.map(|_| ()) }),
        Err(e) => {
            let _ = request(async move { upload.abort().await });
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_directories_read_write_create_list_and_remove() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = StoreDir::local(tmp.path()).join("a/b");
        assert_eq!(dir.read("x").unwrap(), None);
        assert_eq!(dir.list().unwrap(), Vec::new());
        dir.write("x", b"1").unwrap();
        dir.write("x", b"2").unwrap();
        assert_eq!(dir.read("x").unwrap().as_deref(), Some(&b"2"[..]));
        assert!(dir.create("y", b"first").unwrap());
        assert!(!dir.create("y", b"second").unwrap());
        assert_eq!(dir.read("y").unwrap().as_deref(), Some(&b"first"[..]));
        let local = tmp.path().join("z.bin");
        std::fs::write(&local, b"zz").unwrap();
        dir.put_file(&local, "sub/z.bin").unwrap();
        assert!(!local.exists());
        let names: Vec<(String, bool)> = dir
            .list()
            .unwrap()
            .into_iter()
            .map(|e| (e.name, e.is_dir))
            .collect();
        assert_eq!(
            names,
            [
                ("sub".into(), true),
                ("x".into(), false),
                ("y".into(), false)
            ]
        );
        assert!(dir.remove("x").unwrap());
        assert!(!dir.remove("x").unwrap());
        assert!(dir.last_modified().unwrap().is_some());
        dir.remove_all().unwrap();
        assert_eq!(dir.list().unwrap(), Vec::new());
        assert_eq!(dir.last_modified().unwrap(), None);
    }

    #[test]
    fn locations_parse_to_local_or_object_directories() {
        let none = BTreeMap::new();
        let local = StoreDir::parse("quiver-store", &none).unwrap();
        assert_eq!(local.local_path(), Some(Path::new("quiver-store")));
        let file = StoreDir::parse("file:///tmp/q", &none).unwrap();
        assert_eq!(file.local_path(), Some(Path::new("/tmp/q")));
        let options = BTreeMap::from([
            ("aws_region".to_string(), "us-east-1".to_string()),
            ("aws_access_key_id".to_string(), "key".to_string()),
            ("aws_secret_access_key".to_string(), "s3cr3t".to_string()),
        ]);
        let s3 = StoreDir::parse("s3://bucket/prefix/", &options).unwrap();
        assert_eq!(
            s3.join("offline/v").to_string(),
            "s3://bucket/prefix/offline/v"
        );
        assert!(!format!("{s3:?}").contains("s3cr3t"));
        let err = StoreDir::parse("ftp://x/y", &none).unwrap_err().to_string();
        assert!(err.contains("s3://"), "{err}");
    }
}
