//! The directory backend: one file per object under the lake root.
//!
//! Writes are atomic: the body goes to a temp file under `.vesper/tmp/`
//! (outside the key space, on the same file system), is fsynced, renamed
//! into place, and the directory is fsynced. Content type, user metadata and
//! etag live in a sidecar under `.vesper/meta/`. The body file is the truth:
//! a sidecar that does not match its body (a crash between the two renames,
//! or a file copied into the lake by hand) is ignored and defaults are
//! reported instead. `.vesper/` never shows in listings, and no glob rooted
//! at a key prefix can reach it.

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
    max_object_size: u64,
}

/// What the sidecar of an object records.
#[derive(Debug, Serialize, Deserialize)]
struct Sidecar {
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

impl Layout {
    fn create(root: PathBuf, max_object_size: u64) -> Result<Self, StorageError> {
        fs::create_dir_all(&root)
            .map_err(|err| StorageError::io("cannot create the lake directory", &root, err))?;
        let root = root
            .canonicalize()
            .map_err(|err| StorageError::io("cannot resolve the lake directory", &root, err))?;
        let internal = root.join(RESERVED_SEGMENT);
        let temp = internal.join("tmp");
        let sidecars = internal.join("meta");
        for dir in [&temp, &sidecars] {
            fs::create_dir_all(dir).map_err(|err| StorageError::io("cannot create", dir, err))?;
        }
        let layout = Self {
            root,
            temp,
            sidecars,
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

    fn sidecar_path(&self, key: &str) -> PathBuf {
        self.sidecars.join(format!("{key}.json"))
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

    /// temp file + fsync + rename + fsync of the directory.
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

    fn read_sidecar(&self, key: &str) -> Option<Sidecar> {
        let bytes = fs::read(self.sidecar_path(key)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    fn list(
        &self,
        prefix: &str,
        after: Option<&str>,
        max_keys: u32,
    ) -> Result<ListPage, StorageError> {
        let (dir, partial) = prefix.rsplit_once('/').unwrap_or(("", prefix));
        let start = if dir.is_empty() {
            self.root.clone()
        } else {
            self.root.join(dir)
        };
        let mut keys = Vec::new();
        self.collect_keys(&start, dir, Some(partial), &mut keys)?;
        keys.retain(|key| {
            key.starts_with(prefix) && after.is_none_or(|after| key.as_str() > after)
        });
        keys.sort_unstable();
        let max_keys = max_keys as usize;
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
        Ok(ListPage {
            objects,
            next_token,
        })
    }

    /// Walks `dir` (whose keys start with `dir_key/`) and collects the keys
    /// of regular files. At the top of the walk only names starting with
    /// `partial` are followed. Symlinks are never followed.
    fn collect_keys(
        &self,
        dir: &Path,
        dir_key: &str,
        partial: Option<&str>,
        keys: &mut Vec<String>,
    ) -> Result<(), StorageError> {
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
        for entry in entries {
            let entry = entry.map_err(|err| StorageError::io("cannot list", dir, err))?;
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            if partial.is_some_and(|partial| !name.starts_with(partial)) {
                continue;
            }
            if dir_key.is_empty() && name == RESERVED_SEGMENT {
                continue;
            }
            let key = if dir_key.is_empty() {
                name
            } else {
                format!("{dir_key}/{name}")
            };
            let Ok(file_type) = entry.file_type() else {
                continue;
            };
            if file_type.is_dir() {
                self.collect_keys(&entry.path(), &key, None, keys)?;
            } else if file_type.is_file() && ObjectKey::new(key.as_str()).is_ok() {
                keys.push(key);
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
        sync_dir(parent_of(&path))?;
        // Empty directories would make their names unusable as keys.
        for parent in key.parents().collect::<Vec<_>>().into_iter().rev() {
            let removed_object_dir = fs::remove_dir(self.object_path(parent)).is_ok();
            let removed_sidecar_dir = fs::remove_dir(self.sidecars.join(parent)).is_ok();
            if !removed_object_dir && !removed_sidecar_dir {
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
