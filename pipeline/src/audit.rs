//! The audit log of a feature store: who did what, when, and how it ended, for every registry
//! change, training-set export and denied request. In a local store, one JSON object per line,
//! appended (never rewritten) to `_audit.ndjson`; in an object store (whose objects cannot be
//! appended to), one object per entry under `_audit/`, named by time, created only if absent.
//! `quiver audit` reads either.

use crate::error::JobError;
use quiver_store::StoreDir;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Mutex;

/// One audit entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// When (RFC 3339, UTC).
    pub at: String,
    /// Who: a token's name for requests (`anonymous` without one), the OS user for commands.
    pub who: String,
    /// What: the command or `METHOD /path`.
    pub what: String,
    /// What it was about (view, version, output file, ...), if anything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// `ok`, `denied` or `failed`.
    pub outcome: String,
    /// Why it was denied or failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl AuditEntry {
    /// An entry stamped now.
    pub fn now(who: &str, what: &str, outcome: &str) -> Self {
        AuditEntry {
            at: crate::lineage::format_micros(crate::clock::now_micros()),
            who: who.to_string(),
            what: what.to_string(),
            target: None,
            outcome: outcome.to_string(),
            detail: None,
        }
    }

    /// With what it was about.
    pub fn target(mut self, target: impl Into<String>) -> Self {
        self.target = Some(target.into());
        self
    }

    /// With why it was denied or failed.
    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }
}

/// The audit log of a store.
pub struct AuditLog {
    target: Target,
    /// Appends of one process go one at a time (each is one `write` of a whole line, so
    /// processes appending together do not interleave within a line either).
    lock: Mutex<()>,
}

/// The OS user running this command, for entries of CLI commands: `$USER`, else the name
/// of the process's user id, else `uid:<n>`.
pub fn os_user() -> String {
    if let Ok(user) = std::env::var("USER").or_else(|_| std::env::var("LOGNAME")) {
        return user;
    }
    // SAFETY: getuid cannot fail; getpwuid returns null or a pointer to a static entry whose
    // name is a NUL-terminated string, copied out before any other call can reuse it.
    let uid = unsafe { libc::getuid() };
    let name = unsafe {
        let entry = libc::getpwuid(uid);
        (!entry.is_null() && !(*entry).pw_name.is_null()).then(|| {
            std::ffi::CStr::from_ptr((*entry).pw_name)
                .to_string_lossy()
                .into_owned()
        })
    };
    name.unwrap_or_else(|| format!("uid:{uid}"))
}

/// Where the entries go.
enum Target {
    /// One file, a line per entry.
    File(PathBuf),
    /// A directory of one object per entry.
    Objects(StoreDir),
}

impl AuditLog {
    /// The audit log of the store at `store`.
    pub fn of_store(store: &StoreDir) -> Self {
        let target = match store.local_path() {
            Some(dir) => Target::File(dir.join("_audit.ndjson")),
            None => Target::Objects(store.join("_audit")),
        };
        AuditLog {
            target,
            lock: Mutex::new(()),
        }
    }

    /// Where the log is (a file, or an object-store directory).
    pub fn location(&self) -> String {
        match &self.target {
            Target::File(path) => path.display().to_string(),
            Target::Objects(dir) => dir.to_string(),
        }
    }

    /// Appends `entry` durably.
    pub fn append(&self, entry: &AuditEntry) -> Result<(), JobError> {
        let fail = |e: &dyn std::fmt::Display| {
            JobError::Other(format!(
                "cannot append to the audit log `{}`: {e}",
                self.location()
            ))
        };
        let mut line = serde_json::to_vec(entry).map_err(|e| fail(&e))?;
        line.push(b'\n');
        let path = match &self.target {
            Target::File(path) => path,
            Target::Objects(dir) => {
                // Named by time, then a random part: listed in order, never overwritten.
                let name = format!(
                    "{:020}-{}.json",
                    crate::clock::now_micros(),
                    uuid::Uuid::new_v4().simple()
                );
                return dir.create(&name, &line).map(|_| ()).map_err(|e| fail(&e));
            }
        };
        let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| fail(&e))?;
        }
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| fail(&e))?;
        file.write_all(&line)
            .and_then(|()| file.sync_data())
            .map_err(|e| fail(&e))
    }

    /// Every entry, oldest first (none if the log does not exist yet). A damaged line is an
    /// error naming its line number.
    pub fn read(&self) -> Result<Vec<AuditEntry>, JobError> {
        let fail = |e: &dyn std::fmt::Display| {
            JobError::Other(format!(
                "cannot read the audit log `{}`: {e}",
                self.location()
            ))
        };
        let dir = match &self.target {
            Target::File(path) => {
                let text = match std::fs::read_to_string(path) {
                    Ok(t) => t,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
                    Err(e) => return Err(fail(&e)),
                };
                return parse_lines(&text, &path.display().to_string());
            }
            Target::Objects(dir) => dir,
        };
        let mut entries = Vec::new();
        for object in dir.list().map_err(|e| fail(&e))? {
            if let Some(bytes) = dir.read(&object.name).map_err(|e| fail(&e))? {
                let text = String::from_utf8_lossy(&bytes);
                entries.extend(parse_lines(&text, &dir.join(&object.name).to_string())?);
            }
        }
        Ok(entries)
    }
}

/// The entries of `text`, one per line; a damaged line is an error naming `what` and its line.
fn parse_lines(text: &str, what: &str) -> Result<Vec<AuditEntry>, JobError> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l)
                .map_err(|e| JobError::Other(format!("{what}:{}: not an audit entry: {e}", i + 1)))
        })
        .collect()
}

impl std::fmt::Display for AuditEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}  {:<8} {:<16} {}",
            self.at, self.outcome, self.who, self.what
        )?;
        if let Some(target) = &self.target {
            write!(f, " {target}")?;
        }
        if let Some(detail) = &self.detail {
            write!(f, " ({detail})")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_append_and_read_back_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::of_store(&StoreDir::local(dir.path().join("store")));
        assert!(log.read().unwrap().is_empty());
        let a = AuditEntry::now("alice", "apply", "ok").target("cards@1");
        let b = AuditEntry::now("anonymous", "GET /v1/audit", "denied").detail("no token");
        log.append(&a).unwrap();
        log.append(&b).unwrap();
        assert_eq!(log.read().unwrap(), vec![a, b]);
        std::fs::write(log.location(), "{\"broken\n").unwrap();
        let e = log.read().unwrap_err().to_string();
        assert!(e.contains("_audit.ndjson:1"), "{e}");
    }
}
