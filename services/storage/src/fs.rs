//! The directory backend: one file per object under the lake root.
//!
//! Writes are atomic: the body goes to a temp file under `.vesper/tmp/`
//! (named by a UUID, outside the key space, on the same file system), is
//! fsynced, renamed into place, and the directory is fsynced. Content type,
//! user metadata and etag live in a sidecar named by the SHA-256 of the key,
//! `.vesper/sidecars/<2 hex>/<64 hex>.json`: a fixed-length name that no key
//! can make too long and no two keys share (the sidecar records its key, so
//! even a hash collision is caught). Lakes written before that layout keep
//! their sidecars at `.vesper/meta/<key>.json`; those are read when a key
//! has no new sidecar, and are removed when the key is written or deleted.
//!
//! The body file is the truth: a sidecar that does not match its body (a
//! crash between the two renames, or a file copied into the lake by hand)
//! is ignored and defaults are reported instead. `.vesper/` never shows in
//! listings, and no glob rooted at a key prefix can reach it.
//!
//! A listing page walks directories in key order, skips every subtree whose
//! keys all sort before the continuation token, and stops when the page is
//! full: its cost is the page plus the directories on the way down to the
//! token, not the whole lake.

use std::{
    fs::{self, File},
    io::{self, Write},
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, SystemTime},
};

use async_trait::async_trait;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{
    ObjectKey, StorageError,
    key::{RESERVED_SEGMENT, validate_prefix},
    store::{
        ListPage, Metadata, ObjectMeta, ObjectStore, PutOptions, check_put, effective_max_keys,
        md5_hex,
    },
};

/// Temp files older than this are leftovers of a crashed writer.
const STALE_TEMP_AGE: Duration = Duration::from_secs(600);

/// A lake in a local directory.
#[derive(Debug, Clone)]
pub struct FsStore {
    layout: Arc<Layout>,
}

#[derive(Debug)]
struct Layout {
    root: PathBuf,
    temp: PathBuf,
    sidecars: PathBuf,
    /// `.vesper/meta/`, when the lake was written by a release that kept
    /// sidecars there; `None` spares new lakes the lookups.
    legacy_sidecars: Option<PathBuf>,
    max_object_size: u64,
}

/// What the sidecar of an object records.
#[derive(Debug, Serialize, Deserialize)]
struct Sidecar {
    /// The key the sidecar describes; empty in sidecars of the old layout,
    /// whose path spelled the key.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    key: String,
    size: u64,
    etag: String,
    content_type: String,
    #[serde(default)]
    metadata: Metadata,
}

impl FsStore {
    /// Opens (creating if missing) the lake directory `root`, refusing
    /// bodies over `max_object_size` bytes.
    pub async fn open(
        root: impl Into<PathBuf>,
        max_object_size: u64,
    ) -> Result<Self, StorageError> {
        let root = root.into();
        let layout = blocking(move || Layout::create(root, max_object_size)).await?;
        Ok(Self {
            layout: Arc::new(layout),
        })
    }

    /// The lake's root directory (absolute).
    pub fn root(&self) -> &Path {
        &self.layout.root
    }

    async fn run<T, F>(&self, work: F) -> Result<T, StorageError>
    where
        T: Send + 'static,
        F: FnOnce(&Layout) -> Result<T, StorageError> + Send + 'static,
    {
        let layout = Arc::clone(&self.layout);
        blocking(move || work(&layout)).await
    }
}

async fn blocking<T, F>(work: F) -> Result<T, StorageError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, StorageError> + Send + 'static,
{
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|err| StorageError::Unavailable {
            message: format!("storage worker stopped: {err}"),
        })?
}

#[async_trait]
impl ObjectStore for FsStore {
    fn location(&self) -> String {
        format!("directory {}", self.layout.root.display())
    }

    async fn put(
        &self,
        key: &ObjectKey,
        body: Bytes,
        options: PutOptions,
    ) -> Result<ObjectMeta, StorageError> {
        check_put(body.len(), self.layout.max_object_size, &options)?;
        let key = key.clone();
        self.run(move |layout| layout.put(&key, &body, &options))
            .await
    }

    async fn get(&self, key: &ObjectKey) -> Result<(ObjectMeta, Bytes), StorageError> {
        let key = key.clone();
        self.run(move |layout| layout.get(&key)).await
    }

    async fn head(&self, key: &ObjectKey) -> Result<ObjectMeta, StorageError> {
        let key = key.clone();
        self.run(move |layout| layout.head(&key)).await
    }

    async fn list(
        &self,
        prefix: &str,
        token: Option<&str>,
        max_keys: u32,
    ) -> Result<ListPage, StorageError> {
        validate_prefix(prefix)?;
        let after = match token {
            Some(token) => Some(
                ObjectKey::new(token)
                    .map_err(|_| StorageError::InvalidToken {
                        reason: format!("{token:?} is not a key of this lake"),
                    })?
                    .as_str()
                    .to_owned(),
            ),
            None => None,
        };
        let prefix = prefix.to_owned();
        let max_keys = effective_max_keys(max_keys);
        self.run(move |layout| layout.list(&prefix, after.as_deref(), max_keys))
            .await
    }

    async fn delete(&self, key: &ObjectKey) -> Result<(), StorageError> {
        let key = key.clone();
        self.run(move |layout| layout.delete(&key)).await
    }
}

/// One listing page being gathered: the directory walk's state.
#[derive(Debug)]
struct Walk<'a> {
    /// Keys up to and including this one were on earlier pages.
    after: Option<&'a str>,
    /// One more key than the page holds, to tell whether a next page exists.
    wanted: usize,
    keys: Vec<String>,
    directories_read: usize,
}

impl<'a> Walk<'a> {
    fn new(after: Option<&'a str>, page_size: usize) -> Self {
        Self {
            after,
            wanted: page_size.saturating_add(1),
            keys: Vec::new(),
            directories_read: 0,
        }
    }

    fn is_full(&self) -> bool {
        self.keys.len() >= self.wanted
    }

    fn is_after_token(&self, key: &str) -> bool {
        self.after.is_none_or(|after| key > after)
    }

    /// Whether a directory whose keys all start with `below` (which ends in
    /// `/`) can hold a key past the token: when all of them sort after it,
    /// or when the token itself is inside.
    fn may_hold_keys_after_token(&self, below: &str) -> bool {
        self.after
            .is_none_or(|after| below > after || after.starts_with(below))
    }
}

/// A directory entry that may hold keys of the page, under the key (for a
/// file) or key prefix ending in `/` (for a directory) that orders it.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Candidate {
    order: String,
    directory: Option<PathBuf>,
}

impl Layout {
    fn create(root: PathBuf, max_object_size: u64) -> Result<Self, StorageError> {
        fs::create_dir_all(&root)
            .map_err(|err| StorageError::io("cannot create the lake directory", &root, err))?;
        let root = root
            .canonicalize()
            .map_err(|err| StorageError::io("cannot resolve the lake directory", &root, err))?;
        let internal = root.join(RESERVED_SEGMENT);
        let temp = internal.join("tmp");
        let sidecars = internal.join("sidecars");
        for dir in [&temp, &sidecars] {
            fs::create_dir_all(dir).map_err(|err| StorageError::io("cannot create", dir, err))?;
        }
        let legacy = internal.join("meta");
        let legacy_sidecars = legacy.is_dir().then_some(legacy);
        let layout = Self {
            root,
            temp,
            sidecars,
            legacy_sidecars,
            max_object_size,
        };
        layout.remove_stale_temp_files();
        Ok(layout)
    }

    fn remove_stale_temp_files(&self) {
        let Ok(entries) = fs::read_dir(&self.temp) else {
            return;
        };
        let now = SystemTime::now();
        for entry in entries.flatten() {
            let stale = entry
                .metadata()
                .and_then(|meta| meta.modified())
                .is_ok_and(|modified| {
                    now.duration_since(modified).unwrap_or_default() > STALE_TEMP_AGE
                });
            if stale && fs::remove_file(entry.path()).is_ok() {
                tracing::info!(path = %entry.path().display(), "removed a crashed writer's temp file");
            }
        }
    }

    fn object_path(&self, key: &str) -> PathBuf {
        self.root.join(key)
    }

    /// `.vesper/sidecars/<first 2 hex>/<sha256 hex>.json`: 69 bytes whatever
    /// the key, so no segment is too long for it and no key's sidecar path
    /// is another's directory. The fan-out keeps directories small.
    fn sidecar_path(&self, key: &str) -> PathBuf {
        let hash = hex::encode(Sha256::digest(key.as_bytes()));
        self.sidecars.join(&hash[..2]).join(format!("{hash}.json"))
    }

    /// Where a lake written before the hashed layout kept the sidecar.
    fn legacy_sidecar_path(&self, key: &str) -> Option<PathBuf> {
        self.legacy_sidecars
            .as_ref()
            .map(|dir| dir.join(format!("{key}.json")))
    }

    fn put(
        &self,
        key: &ObjectKey,
        body: &[u8],
        options: &PutOptions,
    ) -> Result<ObjectMeta, StorageError> {
        self.check_no_conflict(key)?;
        let target = self.object_path(key.as_str());
        let parent = parent_of(&target);
        fs::create_dir_all(parent).map_err(|err| self.conflict_or_io(key, parent, err))?;

        let etag = md5_hex(body);
        let sidecar = Sidecar {
            key: key.to_string(),
            size: body.len() as u64,
            etag: etag.clone(),
            content_type: options.effective_content_type().to_owned(),
            metadata: options.metadata.clone(),
        };
        let sidecar_bytes = serde_json::to_vec(&sidecar).map_err(|err| StorageError::Io {
            action: "cannot encode the sidecar of",
            path: target.clone(),
            source: io::Error::other(err),
        })?;
        let sidecar_target = self.sidecar_path(key.as_str());
        let sidecar_parent = parent_of(&sidecar_target);
        fs::create_dir_all(sidecar_parent)
            .map_err(|err| StorageError::io("cannot create", sidecar_parent, err))?;

        // Sidecar first: if we crash before the body lands, the old body
        // stays with a sidecar that does not match it, which readers detect.
        self.write_atomically(&sidecar_target, &sidecar_bytes)?;
        self.write_atomically(&target, body)
            .map_err(|err| match err {
                StorageError::Io { source, .. } if is_dir_clash(&source) => {
                    StorageError::KeyConflict {
                        key: key.to_string(),
                        existing: format!("{key}/"),
                    }
                }
                other => other,
            })?;
        // The new sidecar already wins over an old-layout one; removing it
        // only keeps it from lingering.
        self.remove_legacy_sidecar(key);
        let modified = fs::metadata(&target)
            .and_then(|meta| meta.modified())
            .unwrap_or_else(|_| SystemTime::now());
        Ok(ObjectMeta {
            key: key.to_string(),
            size: sidecar.size,
            etag,
            content_type: sidecar.content_type,
            metadata: sidecar.metadata,
            last_modified: modified,
        })
    }

    /// Refuses a key whose parents are objects, or which is itself the
    /// directory of other objects.
    fn check_no_conflict(&self, key: &ObjectKey) -> Result<(), StorageError> {
        for parent in key.parents() {
            match fs::symlink_metadata(self.object_path(parent)) {
                Ok(meta) if meta.is_dir() => continue,
                Ok(_) => {
                    return Err(StorageError::KeyConflict {
                        key: key.to_string(),
                        existing: parent.to_owned(),
                    });
                }
                Err(_) => return Ok(()),
            }
        }
        match fs::symlink_metadata(self.object_path(key.as_str())) {
            Ok(meta) if meta.is_dir() => Err(StorageError::KeyConflict {
                key: key.to_string(),
                existing: format!("{key}/"),
            }),
            _ => Ok(()),
        }
    }

    fn conflict_or_io(&self, key: &ObjectKey, path: &Path, err: io::Error) -> StorageError {
        if is_dir_clash(&err) {
            let existing = key
                .parents()
                .find(|parent| self.object_path(parent).is_file())
                .unwrap_or(key.as_str())
                .to_owned();
            StorageError::KeyConflict {
                key: key.to_string(),
                existing,
            }
        } else {
            StorageError::io("cannot create", path, err)
        }
    }

    /// temp file + fsync + rename + fsync of the directory. The temp file is
    /// named by a UUID, never by the key, so no key makes its name too long.
    fn write_atomically(&self, target: &Path, bytes: &[u8]) -> Result<(), StorageError> {
        let temp = self.temp.join(format!("{}.tmp", uuid::Uuid::new_v4()));
        let written = (|| -> io::Result<()> {
            let mut file = File::create_new(&temp)?;
            file.write_all(bytes)?;
            file.sync_all()
        })();
        if let Err(err) = written {
            let _ = fs::remove_file(&temp);
            return Err(StorageError::io("cannot write", &temp, err));
        }
        if let Err(err) = fs::rename(&temp, target) {
            let _ = fs::remove_file(&temp);
            return Err(StorageError::io("cannot move into place", target, err));
        }
        sync_dir(parent_of(target))
    }

    fn get(&self, key: &ObjectKey) -> Result<(ObjectMeta, Bytes), StorageError> {
        let path = self.object_path(key.as_str());
        let body = fs::read(&path).map_err(|err| not_found_or_io(key, &path, err))?;
        let modified = fs::metadata(&path)
            .and_then(|meta| meta.modified())
            .unwrap_or_else(|_| SystemTime::now());
        let etag = md5_hex(&body);
        let sidecar = self
            .read_sidecar(key.as_str())
            .filter(|sidecar| sidecar.size == body.len() as u64 && sidecar.etag == etag);
        let meta = describe(
            key.as_str(),
            body.len() as u64,
            etag,
            modified,
            sidecar,
            true,
        );
        Ok((meta, Bytes::from(body)))
    }

    fn head(&self, key: &ObjectKey) -> Result<ObjectMeta, StorageError> {
        let path = self.object_path(key.as_str());
        let file_meta = fs::metadata(&path).map_err(|err| not_found_or_io(key, &path, err))?;
        if !file_meta.is_file() {
            return Err(StorageError::NotFound {
                key: key.to_string(),
            });
        }
        let modified = file_meta.modified().unwrap_or_else(|_| SystemTime::now());
        match self
            .read_sidecar(key.as_str())
            .filter(|sidecar| sidecar.size == file_meta.len())
        {
            Some(sidecar) => {
                let etag = sidecar.etag.clone();
                Ok(describe(
                    key.as_str(),
                    file_meta.len(),
                    etag,
                    modified,
                    Some(sidecar),
                    true,
                ))
            }
            // No trustworthy sidecar: hash the body so the etag is right.
            None => self.get(key).map(|(meta, _)| meta),
        }
    }

    /// The key's sidecar; an old-layout one only when there is no new one
    /// (a new one is written before the old one is removed).
    fn read_sidecar(&self, key: &str) -> Option<Sidecar> {
        match fs::read(self.sidecar_path(key)) {
            Ok(bytes) => serde_json::from_slice::<Sidecar>(&bytes)
                .ok()
                .filter(|sidecar| sidecar.key == key),
            Err(_) => {
                let bytes = fs::read(self.legacy_sidecar_path(key)?).ok()?;
                serde_json::from_slice(&bytes).ok()
            }
        }
    }

    /// Removes an old-layout sidecar and the directories it leaves empty.
    fn remove_legacy_sidecar(&self, key: &ObjectKey) {
        let (Some(legacy), Some(path)) = (
            &self.legacy_sidecars,
            self.legacy_sidecar_path(key.as_str()),
        ) else {
            return;
        };
        if fs::remove_file(path).is_err() {
            return;
        }
        for parent in key.parents().collect::<Vec<_>>().into_iter().rev() {
            if fs::remove_dir(legacy.join(parent)).is_err() {
                break;
            }
        }
    }

    fn list(
        &self,
        prefix: &str,
        after: Option<&str>,
        max_keys: u32,
    ) -> Result<ListPage, StorageError> {
        self.list_counting(prefix, after, max_keys)
            .map(|(page, _)| page)
    }

    /// A listing page, and how many directories gathering it read.
    fn list_counting(
        &self,
        prefix: &str,
        after: Option<&str>,
        max_keys: u32,
    ) -> Result<(ListPage, usize), StorageError> {
        let max_keys = max_keys as usize;
        let mut walk = Walk::new(after, max_keys);
        let (dir_key, partial) = prefix.rsplit_once('/').unwrap_or(("", prefix));
        // No key is under `.vesper/`: its sidecars are not worth a walk.
        if dir_key.split('/').next() != Some(RESERVED_SEGMENT) {
            self.walk(&self.object_path(dir_key), dir_key, partial, &mut walk)?;
        }
        let mut keys = walk.keys;
        let truncated = keys.len() > max_keys;
        keys.truncate(max_keys);
        let next_token = if truncated {
            keys.last().cloned()
        } else {
            None
        };
        let mut objects = Vec::with_capacity(keys.len());
        for key in keys {
            let path = self.object_path(&key);
            // An object deleted between the walk and now is simply skipped.
            let Ok(file_meta) = fs::metadata(&path) else {
                continue;
            };
            let modified = file_meta.modified().unwrap_or_else(|_| SystemTime::now());
            let sidecar = self
                .read_sidecar(&key)
                .filter(|sidecar| sidecar.size == file_meta.len());
            let etag = sidecar.as_ref().map(|s| s.etag.clone()).unwrap_or_default();
            objects.push(describe(
                &key,
                file_meta.len(),
                etag,
                modified,
                sidecar,
                false,
            ));
        }
        Ok((
            ListPage {
                objects,
                next_token,
            },
            walk.directories_read,
        ))
    }

    /// Gathers, in key order, the keys of regular files under `dir` (whose
    /// keys start with `dir_key/`) whose names there start with `partial`,
    /// until the page is full. Subtrees wholly before the token are never
    /// read; symlinks are never followed.
    fn walk(
        &self,
        dir: &Path,
        dir_key: &str,
        partial: &str,
        walk: &mut Walk<'_>,
    ) -> Result<(), StorageError> {
        walk.directories_read += 1;
        let entries = match fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(err)
                if matches!(
                    err.kind(),
                    io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
                ) =>
            {
                return Ok(());
            }
            Err(err) => return Err(StorageError::io("cannot list", dir, err)),
        };
        let mut candidates = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|err| StorageError::io("cannot list", dir, err))?;
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            if !name.starts_with(partial) || (dir_key.is_empty() && name == RESERVED_SEGMENT) {
                continue;
            }
            let Ok(file_type) = entry.file_type() else {
                continue;
            };
            let key = if dir_key.is_empty() {
                name
            } else {
                format!("{dir_key}/{name}")
            };
            if file_type.is_dir() {
                // Keys below all start with `key/`, and a sibling's name
                // never contains '/': with the '/' appended, the directory
                // sorts among its siblings exactly where its keys do
                // ("a.txt" < "a/..." < "a0"). Past the key length limit no
                // key can be below, which also bounds the recursion.
                let below = format!("{key}/");
                if below.len() < crate::MAX_KEY_BYTES && walk.may_hold_keys_after_token(&below) {
                    candidates.push(Candidate {
                        order: below,
                        directory: Some(entry.path()),
                    });
                }
            } else if file_type.is_file()
                && walk.is_after_token(&key)
                && ObjectKey::new(key.as_str()).is_ok()
            {
                candidates.push(Candidate {
                    order: key,
                    directory: None,
                });
            }
        }
        candidates.sort_unstable();
        for candidate in candidates {
            if walk.is_full() {
                break;
            }
            match candidate.directory {
                Some(path) => {
                    let mut key = candidate.order;
                    key.pop();
                    self.walk(&path, &key, "", walk)?;
                }
                None => walk.keys.push(candidate.order),
            }
        }
        Ok(())
    }

    fn delete(&self, key: &ObjectKey) -> Result<(), StorageError> {
        let path = self.object_path(key.as_str());
        if !fs::symlink_metadata(&path).is_ok_and(|meta| meta.is_file()) {
            return Err(StorageError::NotFound {
                key: key.to_string(),
            });
        }
        fs::remove_file(&path).map_err(|err| not_found_or_io(key, &path, err))?;
        let _ = fs::remove_file(self.sidecar_path(key.as_str()));
        self.remove_legacy_sidecar(key);
        sync_dir(parent_of(&path))?;
        // Empty directories would make their names unusable as keys.
        for parent in key.parents().collect::<Vec<_>>().into_iter().rev() {
            if fs::remove_dir(self.object_path(parent)).is_err() {
                break;
            }
        }
        Ok(())
    }
}

fn describe(
    key: &str,
    size: u64,
    etag: String,
    last_modified: SystemTime,
    sidecar: Option<Sidecar>,
    with_metadata: bool,
) -> ObjectMeta {
    let (content_type, metadata) = match sidecar {
        Some(sidecar) => (sidecar.content_type, sidecar.metadata),
        None => (
            crate::store::DEFAULT_CONTENT_TYPE.to_owned(),
            Metadata::new(),
        ),
    };
    ObjectMeta {
        key: key.to_owned(),
        size,
        etag,
        content_type,
        metadata: if with_metadata {
            metadata
        } else {
            Metadata::new()
        },
        last_modified,
    }
}

fn parent_of(path: &Path) -> &Path {
    path.parent().unwrap_or(path)
}

fn sync_dir(dir: &Path) -> Result<(), StorageError> {
    File::open(dir)
        .and_then(|handle| handle.sync_all())
        .map_err(|err| StorageError::io("cannot sync directory", dir, err))
}

fn is_dir_clash(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::NotADirectory
            | io::ErrorKind::IsADirectory
            | io::ErrorKind::AlreadyExists
            | io::ErrorKind::DirectoryNotEmpty
    )
}

fn not_found_or_io(key: &ObjectKey, path: &Path, err: io::Error) -> StorageError {
    match err.kind() {
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory | io::ErrorKind::IsADirectory => {
            StorageError::NotFound {
                key: key.to_string(),
            }
        }
        _ => StorageError::io("cannot read", path, err),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A lake of files put in by hand (no sidecars: only the walk matters).
    fn lake_of(keys: &[String]) -> (tempfile::TempDir, Layout) {
        let dir = tempfile::tempdir().expect("temp dir");
        let layout = Layout::create(dir.path().to_path_buf(), 1024).expect("layout");
        for key in keys {
            let path = layout.object_path(key);
            fs::create_dir_all(parent_of(&path)).expect("parents");
            fs::write(&path, key).expect("object");
        }
        (dir, layout)
    }

    /// Lists every page; returns the keys and the most directories one
    /// page read.
    fn list_all(layout: &Layout, prefix: &str, page_size: u32) -> (Vec<String>, usize) {
        let mut keys = Vec::new();
        let mut most_reads = 0;
        let mut token: Option<String> = None;
        loop {
            let (page, reads) = layout
                .list_counting(prefix, token.as_deref(), page_size)
                .expect("list");
            most_reads = most_reads.max(reads);
            keys.extend(page.objects.into_iter().map(|object| object.key));
            match page.next_token {
                Some(next) => token = Some(next),
                None => return (keys, most_reads),
            }
        }
    }

    #[test]
    fn a_page_reads_only_its_own_directories_and_the_way_down_to_the_token() {
        // 50 directories of 100 objects, three levels down: 5,000 objects in
        // 53 directories.
        let mut expected: Vec<String> = (0..50)
            .flat_map(|d| (0..100).map(move |o| format!("deep/tree/d{d:02}/o{o:03}")))
            .collect();
        let (_dir, layout) = lake_of(&expected);
        expected.sort();

        // A page of 100 reads the root, deep/, deep/tree/, the directory
        // holding the token and the one or two it fills up from: never the
        // other 48 (the whole-tree walk read all 53 on every page).
        let (keys, most_reads) = list_all(&layout, "", 100);
        assert_eq!(keys, expected);
        assert!(most_reads <= 6, "a page read {most_reads} directories");

        let (keys, most_reads) = list_all(&layout, "deep/tree/d4", 7);
        assert_eq!(keys, expected[4000..].to_vec());
        assert!(most_reads <= 4, "a page read {most_reads} directories");

        // The first page of a full-size listing reads 11 directories for its
        // 1,000 keys, not 53.
        let (page, reads) = layout.list_counting("", None, 1000).expect("list");
        assert_eq!(page.objects.len(), 1000);
        assert_eq!(reads, 3 + 11);
    }

    #[test]
    fn a_deep_token_reads_the_path_to_it_and_skips_what_lies_before() {
        let mut expected: Vec<String> = (0..20)
            .map(|i| format!("x/{i:02}"))
            .chain((0..20).map(|i| format!("a/b/c/d/e/f/g/{i:02}")))
            .chain((0..20).map(|i| format!("a/b/c/d/e/f/{i:02}.txt")))
            .chain((0..20).map(|i| format!("a/b{i:02}/leaf")))
            .collect();
        let (_dir, layout) = lake_of(&expected);
        expected.sort();
        let token = "a/b/c/d/e/f/g/09";
        let (page, reads) = layout.list_counting("", Some(token), 5).expect("list");
        let position = expected.iter().position(|key| key == token).expect("token");
        let keys: Vec<_> = page.objects.into_iter().map(|o| o.key).collect();
        assert_eq!(keys, expected[position + 1..position + 6].to_vec());
        // root, a, a/b, ..., a/b/c/d/e/f/g: nothing beside the path.
        assert_eq!(reads, 8);
        let (keys, _) = list_all(&layout, "a/b", 3);
        assert_eq!(
            keys,
            expected
                .iter()
                .filter(|key| key.starts_with("a/b"))
                .cloned()
                .collect::<Vec<_>>()
        );
    }
}
