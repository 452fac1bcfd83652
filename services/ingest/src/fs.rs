//! The file layer under the write-ahead log: every write the log makes goes
//! through [`WalFs`], so that a test can make the disk fill up (ENOSPC) at
//! any byte and watch the log recover. Reads do not go through it: a read
//! never runs out of space.

use std::{
    fmt,
    fs::{File, OpenOptions},
    io::{self, Seek, SeekFrom, Write},
    path::Path,
};

/// Creates, syncs and removes the log's files. [`StdFs`] is the real one.
pub trait WalFs: Send + Sync + fmt::Debug + 'static {
    /// Creates a new, empty file for writing; fails if it exists.
    fn create(&self, path: &Path) -> io::Result<Box<dyn WalFile>>;

    /// Replaces `path` with `bytes` atomically and durably (temp file,
    /// fsync, rename, directory fsync).
    fn write_atomic(&self, path: &Path, bytes: &[u8]) -> io::Result<()>;

    /// Removes a file.
    fn remove(&self, path: &Path) -> io::Result<()>;

    /// Makes the creation, rename or removal of entries in `dir` durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
}

/// A file the log writes to: a segment, written front to back, some of
/// it over zeros written ahead of time.
pub trait WalFile: Send + fmt::Debug {
    /// Writes all of `bytes` at `offset`; on error, any prefix of them may
    /// have been written.
    fn write_all_at(&mut self, offset: u64, bytes: &[u8]) -> io::Result<()>;

    /// Makes the written bytes durable (fdatasync).
    fn sync_data(&mut self) -> io::Result<()>;

    /// Cuts the file to `len` bytes (to drop a partial append).
    fn set_len(&mut self, len: u64) -> io::Result<()>;
}

/// The operating system's file system.
#[derive(Debug, Clone, Copy, Default)]
pub struct StdFs;

impl WalFs for StdFs {
    fn create(&self, path: &Path) -> io::Result<Box<dyn WalFile>> {
        // Not in append mode: writes go to an offset, over the zeros a
        // segment is filled with ahead of time.
        let file = OpenOptions::new().create_new(true).write(true).open(path)?;
        Ok(Box::new(StdFile(file)))
    }

    fn write_atomic(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        let mut temp_name = path.as_os_str().to_owned();
        temp_name.push(".tmp");
        let temp = Path::new(&temp_name);
        let result = (|| {
            let mut file = File::create(temp)?;
            file.write_all(bytes)?;
            file.sync_all()?;
            std::fs::rename(temp, path)
        })();
        if result.is_err() {
            // A half-written temp file is only litter; the old file is intact.
            let _ = std::fs::remove_file(temp);
        }
        result?;
        match path.parent() {
            Some(dir) => self.sync_dir(dir),
            None => Ok(()),
        }
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }
}

#[derive(Debug)]
struct StdFile(File);

impl WalFile for StdFile {
    fn write_all_at(&mut self, offset: u64, bytes: &[u8]) -> io::Result<()> {
        self.0.seek(SeekFrom::Start(offset))?;
        self.0.write_all(bytes)
    }

    fn sync_data(&mut self) -> io::Result<()> {
        self.0.sync_data()
    }

    fn set_len(&mut self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }
}
