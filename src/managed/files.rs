//! The layer kept in the state directory, for one machine (or as the local copy of what a
//! shared Redis holds):
//!
//! - `api-state.yaml`: the layer, in the settings file's schema: the commit point;
//! - `api-history.json`: the last `HISTORY` layers with their changes, newest first;
//! - `api-audit.log`: one JSON line per change, appended (rotated to `.1` past 16 MiB).
//!
//! Each file is written as a temporary file, synced, renamed over the old one, and the
//! directory synced, so a crash (`kill -9`, power loss) leaves the old or the new file,
//! never half of one; all are mode 0600. A write is durable before `commit` returns.

use super::{Change, Layer, LayerStore, ManagedError, Revision, HISTORY};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

pub const STATE_FILE: &str = "api-state.yaml";
const HISTORY_FILE: &str = "api-history.json";
const AUDIT_FILE: &str = "api-audit.log";
const AUDIT_ROTATE_BYTES: u64 = 16 << 20;
/// The most of the audit log read to answer a query.
const AUDIT_READ_BYTES: u64 = 4 << 20;

#[derive(Debug, Clone)]
pub struct FileStore {
    dir: PathBuf,
}

fn storage(what: &Path, e: impl std::fmt::Display) -> ManagedError {
    ManagedError::Storage(format!("{}: {e}", what.display()))
}

/// Write `bytes` to `path` through a synced temporary file and a rename (mode 0600).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

impl FileStore {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        FileStore { dir: dir.into() }
    }

    pub fn state_path(&self) -> PathBuf {
        self.dir.join(STATE_FILE)
    }

    /// The stored layer, read now (blocking).
    pub fn load_blocking(&self) -> Result<Option<Layer>, ManagedError> {
        let path = self.state_path();
        match std::fs::read_to_string(&path) {
            Ok(text) => Layer::from_yaml(&text)
                .map(Some)
                .map_err(|e| storage(&path, e)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(storage(&path, e)),
        }
    }

    /// The stored revision: the state file's first line (`revision: N`, as `to_yaml` writes
    /// it), read without parsing the rest; the whole file if that line is not there.
    pub fn revision_blocking(&self) -> Result<u64, ManagedError> {
        use std::io::BufRead;
        let path = self.state_path();
        let f = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(storage(&path, e)),
        };
        let mut first = String::new();
        std::io::BufReader::new(f.take(64))
            .read_line(&mut first)
            .map_err(|e| storage(&path, e))?;
        match first
            .trim()
            .strip_prefix("revision:")
            .map(|n| n.trim().parse())
        {
            Some(Ok(n)) => Ok(n),
            _ => Ok(self.load_blocking()?.map_or(0, |l| l.revision)),
        }
    }

    pub fn history_blocking(&self) -> Result<Vec<Revision>, ManagedError> {
        let path = self.dir.join(HISTORY_FILE);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| storage(&path, e)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(storage(&path, e)),
        }
    }

    /// Write `layer` unconditionally (the local copy of a shared layer), with no change
    /// recorded.
    pub fn save_blocking(&self, layer: &Layer) -> Result<(), ManagedError> {
        let path = self.state_path();
        write_atomic(&path, layer.to_yaml().as_bytes()).map_err(|e| storage(&path, e))
    }

    /// Store `layer` if the stored revision is `expected` (blocking).
    pub fn commit_blocking(
        &self,
        expected: u64,
        layer: &Layer,
        change: &Change,
    ) -> Result<(), ManagedError> {
        let current = self.load_blocking()?.map_or(0, |l| l.revision);
        if current != expected {
            return Err(ManagedError::Moved(current));
        }
        let mut history = self.history_blocking().unwrap_or_default();
        // Revisions past the stored one were never committed (a crash between files).
        history.retain(|r| r.change.revision <= expected);
        history.insert(
            0,
            Revision {
                change: change.clone(),
                layer: layer.clone(),
            },
        );
        history.truncate(HISTORY);
        let path = self.dir.join(HISTORY_FILE);
        let bytes = serde_json::to_vec(&history).map_err(|e| storage(&path, e))?;
        write_atomic(&path, &bytes).map_err(|e| storage(&path, e))?;
        self.save_blocking(layer)?;
        if let Err(e) = self.append_audit(change) {
            log::error!("management API: the change was applied but not audited: {e}");
        }
        Ok(())
    }

    fn append_audit(&self, change: &Change) -> std::io::Result<()> {
        let path = self.dir.join(AUDIT_FILE);
        if std::fs::metadata(&path).is_ok_and(|m| m.len() > AUDIT_ROTATE_BYTES) {
            let mut old = path.as_os_str().to_owned();
            old.push(".1");
            std::fs::rename(&path, old)?;
        }
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .open(&path)?;
        let mut line = serde_json::to_vec(change).map_err(std::io::Error::other)?;
        line.push(b'\n');
        f.write_all(&line)?;
        f.sync_all()
    }

    pub fn audit_blocking(&self, limit: usize) -> Result<Vec<Change>, ManagedError> {
        let path = self.dir.join(AUDIT_FILE);
        let mut f = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(storage(&path, e)),
        };
        let len = f.metadata().map_err(|e| storage(&path, e))?.len();
        let start = len.saturating_sub(AUDIT_READ_BYTES);
        f.seek(SeekFrom::Start(start))
            .map_err(|e| storage(&path, e))?;
        let mut text = String::new();
        f.take(AUDIT_READ_BYTES)
            .read_to_string(&mut text)
            .map_err(|e| storage(&path, e))?;
        let lines = text.lines().skip(usize::from(start > 0));
        let mut out: Vec<Change> = lines.filter_map(|l| serde_json::from_str(l).ok()).collect();
        out.reverse();
        out.truncate(limit);
        Ok(out)
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ManagedError> + Send + 'static,
) -> Result<T, ManagedError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ManagedError::Storage(e.to_string()))?
}

#[async_trait::async_trait]
impl LayerStore for FileStore {
    async fn load(&self) -> Result<Option<Layer>, ManagedError> {
        let this = self.clone();
        blocking(move || this.load_blocking()).await
    }

    async fn commit(
        &self,
        expected: u64,
        layer: &Layer,
        change: &Change,
    ) -> Result<(), ManagedError> {
        let (this, layer, change) = (self.clone(), layer.clone(), change.clone());
        blocking(move || this.commit_blocking(expected, &layer, &change)).await
    }

    async fn history(&self) -> Result<Vec<Revision>, ManagedError> {
        let this = self.clone();
        blocking(move || this.history_blocking()).await
    }

    async fn audit(&self, limit: usize) -> Result<Vec<Change>, ManagedError> {
        let this = self.clone();
        blocking(move || this.audit_blocking(limit)).await
    }

    async fn revision(&self) -> Result<u64, ManagedError> {
        let this = self.clone();
        blocking(move || this.revision_blocking()).await
    }

    async fn record(&self, change: &Change) -> Result<(), ManagedError> {
        let (this, change) = (self.clone(), change.clone());
        let path = self.dir.join(AUDIT_FILE);
        blocking(move || this.append_audit(&change).map_err(|e| storage(&path, e))).await
    }

    fn describe(&self) -> String {
        format!("file {}", self.state_path().display())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commits_are_checked_kept_and_private() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(dir.path());
        assert_eq!(store.load_blocking().unwrap(), None);
        let mut layer = Layer {
            revision: 1,
            ..Layer::default()
        };
        let change = |n| Change::now(n, "token", "create", "route", "r");
        store.commit_blocking(0, &layer, &change(1)).unwrap();
        assert_eq!(
            store.commit_blocking(0, &layer, &change(1)),
            Err(ManagedError::Moved(1))
        );
        layer.revision = 2;
        store.commit_blocking(1, &layer, &change(2)).unwrap();
        assert_eq!(store.load_blocking().unwrap().unwrap().revision, 2);
        assert_eq!(store.revision_blocking().unwrap(), 2);
        let history = store.history_blocking().unwrap();
        assert_eq!(history.len(), 2);
        assert_eq!(history[0].change.revision, 2);
        let audit = store.audit_blocking(10).unwrap();
        assert_eq!(audit.iter().map(|c| c.revision).collect::<Vec<_>>(), [2, 1]);
        for f in [STATE_FILE, HISTORY_FILE, AUDIT_FILE] {
            let mode = std::fs::metadata(dir.path().join(f))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{f}");
        }
        for n in 3..(HISTORY as u64 + 10) {
            layer.revision = n;
            store.commit_blocking(n - 1, &layer, &change(n)).unwrap();
        }
        assert_eq!(store.history_blocking().unwrap().len(), HISTORY);
    }
}
