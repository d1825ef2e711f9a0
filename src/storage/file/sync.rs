//! Every `fdatasync`/`fsync` the file storage makes goes through here, so they are counted
//! (benches report syncs per write) and can be made to fail (tests).

use std::fs::File;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Syncs made by every file storage of this process.
static SYNCS: AtomicU64 = AtomicU64::new(0);

/// How many `fdatasync`/`fsync` calls the file storages of this process have made: what
/// group commit saves (a bench divides it by the writes).
pub fn sync_count() -> u64 {
    SYNCS.load(Ordering::Relaxed)
}

/// Makes a file storage fail on demand, to test what a node does when its disk does. Give
/// it to [`crate::Config::storage_faults`] and flip it while the node runs.
#[derive(Debug, Default)]
pub struct StorageFaults {
    fail_writes: AtomicBool,
    fail_syncs: AtomicBool,
}

impl StorageFaults {
    /// From now on every write stores half its bytes, then fails (a disk filling up).
    pub fn fail_writes(&self) {
        self.fail_writes.store(true, Ordering::SeqCst);
    }

    /// From now on every sync fails after the write went through (an I/O error in
    /// `fdatasync`: the data may or may not be on disk).
    pub fn fail_syncs(&self) {
        self.fail_syncs.store(true, Ordering::SeqCst);
    }

    pub(crate) fn writes_fail(&self) -> bool {
        self.fail_writes.load(Ordering::SeqCst)
    }

    fn syncs_fail(&self) -> bool {
        self.fail_syncs.load(Ordering::SeqCst)
    }
}

/// `fdatasync`: the file's data and the metadata needed to read it back (its length).
pub(crate) fn sync_data(file: &File, faults: Option<&StorageFaults>) -> io::Result<()> {
    SYNCS.fetch_add(1, Ordering::Relaxed);
    if faults.is_some_and(StorageFaults::syncs_fail) {
        return Err(io::Error::other("injected fdatasync failure"));
    }
    file.sync_data()
}

/// `fsync` of a whole file.
pub(crate) fn sync_all(file: &File) -> io::Result<()> {
    SYNCS.fetch_add(1, Ordering::Relaxed);
    file.sync_all()
}

/// `fsync` of a directory, so entries created or renamed in it survive a crash.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    SYNCS.fetch_add(1, Ordering::Relaxed);
    File::open(dir)?.sync_all()
}
