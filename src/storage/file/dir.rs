//! The data directory itself: its lock, and the identity file that says whose it is.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{self, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::crc::crc32c;
use super::sync;
use crate::core::NodeId;

/// The lock file; held (exclusively) for as long as a storage is open on the directory.
const LOCK_FILE: &str = "LOCK";
/// Records the cluster id and node id the directory belongs to.
const IDENTITY_FILE: &str = "IDENTITY";
/// The identity file is written here first, then renamed over it.
const IDENTITY_TMP: &str = "IDENTITY.tmp";
/// First bytes of the identity file.
const IDENTITY_MAGIC: &[u8; 8] = b"QRTID\x00\x00\x01";

/// Whose directory it is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Identity {
    pub cluster_id: String,
    pub node_id: NodeId,
    /// Drawn at random when the directory is created, and the node's incarnation for as
    /// long as it runs on this directory: restarts on the same data keep it (so peers
    /// accept them), a node on a new or wiped directory gets a new one (so peers that knew
    /// its lost state refuse it, as they refuse a restarted memory-only node).
    pub incarnation: u64,
}

/// Takes the directory's lock, or says who holds it.
pub(crate) fn lock(dir: &Path) -> io::Result<File> {
    let path = dir.join(LOCK_FILE);
    let file = OpenOptions::new().create(true).truncate(false).write(true).open(&path)?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(TryLockError::WouldBlock) => Err(io::Error::new(
            io::ErrorKind::WouldBlock,
            format!("data dir {} is in use by another node ({} is locked)", dir.display(), path.display()),
        )),
        Err(TryLockError::Error(e)) => Err(io::Error::new(e.kind(), format!("cannot lock {}: {e}", path.display()))),
    }
}

/// Reads the identity file, if there is one.
pub(crate) fn read_identity(dir: &Path) -> io::Result<Option<Identity>> {
    let path = dir.join(IDENTITY_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io::Error::new(e.kind(), format!("cannot read {}: {e}", path.display()))),
    };
    let bad = |why: &str| io::Error::new(io::ErrorKind::InvalidData, format!("{}: {why}", path.display()));
    let body = bytes.strip_prefix(IDENTITY_MAGIC.as_slice()).ok_or_else(|| bad("not a quorate identity file"))?;
    let (crc, body) = body.split_first_chunk::<4>().ok_or_else(|| bad("too short"))?;
    if u32::from_le_bytes(*crc) != crc32c(body) {
        return Err(bad("checksum mismatch"));
    }
    rmp_serde::from_slice(body).map(Some).map_err(|e| bad(&e.to_string()))
}

/// Writes the identity file atomically: a temporary file, synced, renamed into place, and
/// the directory synced, so a crash leaves either no identity or a whole one.
pub(crate) fn write_identity(dir: &Path, identity: &Identity) -> io::Result<()> {
    let body = rmp_serde::to_vec(identity).map_err(io::Error::other)?;
    let tmp = dir.join(IDENTITY_TMP);
    let mut file = File::create(&tmp)?;
    file.write_all(IDENTITY_MAGIC)?;
    file.write_all(&crc32c(&body).to_le_bytes())?;
    file.write_all(&body)?;
    sync::sync_all(&file)?;
    std::fs::rename(&tmp, dir.join(IDENTITY_FILE))?;
    sync::sync_dir(dir)
}

/// A random number, different in every call and process (std's hasher keys are random).
pub(crate) fn random_u64() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    RandomState::new().hash_one((std::process::id(), now.as_nanos()))
}
