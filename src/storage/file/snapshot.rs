//! Snapshot files: `snapshot-<index>.snap` (index zero-padded, so names sort in order).
//!
//! ```text
//! | data: size bytes | trailer: MessagePack {meta, size, crc32c(data)} |
//! | trailer_len: u32 LE | crc32c(trailer): u32 LE | magic: 8 bytes |
//! ```
//!
//! The data starts at offset 0, so the leader reads a chunk at its offset in the file; the
//! fixed-size footer is found from the end. A snapshot is streamed through a checksumming
//! writer and never held in memory as a whole.
//!
//! Rules: a snapshot is written to a temporary (`snapshot.tmp` when saved, `incoming.tmp`
//! when received), fsynced, and only then renamed to its final name and the directory
//! fsynced: a file with a final name is complete and durable, and a crash leaves at worst
//! a temporary, which the next start deletes. At start the newest file whose footer,
//! trailer and data checksums verify is current; a newer one that does not is reported
//! and renamed `*.corrupt` (kept for inspection, never read again).

use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use serde::{Deserialize, Serialize};

use super::crc::{crc32c, crc32c_append};
use super::sync::{self, StorageFaults};
use crate::core::{LogIndex, SnapshotChunk, SnapshotInfo, SnapshotMeta};
use crate::state_machine::Snapshot;

/// Last bytes of every snapshot file: format name and version.
const MAGIC: &[u8; 8] = b"QRTSNP\x00\x01";
/// The footer: trailer length, trailer checksum, magic.
const FOOTER_BYTES: u64 = 16;
/// Largest trailer recovery will read: a bound on what it allocates, far above a real one
/// (a membership of any sane size).
const TRAILER_BYTES_MAX: u32 = 16 << 20;
/// Snapshot file names start and end with these.
const PREFIX: &str = "snapshot-";
const SUFFIX: &str = ".snap";
/// A corrupt snapshot found at start is renamed with this suffix.
const CORRUPT_SUFFIX: &str = ".corrupt";
/// Where a snapshot being saved is written.
const SAVE_TMP: &str = "snapshot.tmp";
/// Where a snapshot being received is written.
const RECEIVE_TMP: &str = "incoming.tmp";
/// Buffer of the streams into and out of snapshot files.
const IO_BUFFER_BYTES: usize = 256 << 10;

/// What follows a snapshot's data.
#[derive(Debug, Serialize, Deserialize)]
struct Trailer {
    meta: SnapshotMeta,
    size: u64,
    data_crc: u32,
}

/// The file name of the snapshot at `index`.
pub(crate) fn name(index: LogIndex) -> String {
    format!("{PREFIX}{:020}{SUFFIX}", index.0)
}

/// The snapshot files in `dir`, oldest first.
fn list(dir: &Path) -> io::Result<Vec<(LogIndex, PathBuf)>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let file_name = entry.file_name();
        let index = file_name.to_str().and_then(|n| n.strip_prefix(PREFIX)?.strip_suffix(SUFFIX)?.parse().ok());
        if let Some(index) = index {
            found.push((LogIndex(index), entry.path()));
        }
    }
    found.sort_unstable();
    Ok(found)
}

/// Deletes the snapshot files older than `index` (best effort: a file left behind is an
/// older complete snapshot, which recovery passes over for the newer one).
pub(crate) fn remove_older(dir: &Path, index: LogIndex) {
    let older = match list(dir) {
        Ok(found) => found.into_iter().filter(|(i, _)| *i < index),
        Err(e) => return log::warn!("cannot list the snapshots in {}: {e}", dir.display()),
    };
    for (_, path) in older {
        remove_quietly(&path);
    }
}

/// Deletes `path`, warning if that fails (a missing file is no failure).
fn remove_quietly(path: &Path) {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => log::warn!("cannot delete {}: {e}", path.display()),
        _ => {}
    }
}

/// Creates (truncating) a temporary, readable too: after its rename it is the current
/// snapshot, read through the same handle.
fn create_tmp(path: &Path) -> io::Result<File> {
    OpenOptions::new().read(true).write(true).create(true).truncate(true).open(path)
}

// ----- the current snapshot -----

/// The current snapshot: complete, durable, and open for reading.
#[derive(Debug)]
pub(crate) struct Current {
    /// What it covers, and the size of its data.
    pub info: SnapshotInfo,
    /// Its file.
    pub path: PathBuf,
    /// Open for reading (the handle outlives a rename over the name).
    file: File,
}

impl Current {
    /// Fills `buf` from the data at `offset`; an error if the data ends before `buf` does.
    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let end = offset.checked_add(buf.len() as u64);
        if end.is_none_or(|end| end > self.info.size) {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("{} bytes at {offset} of a {}-byte snapshot", buf.len(), self.info.size),
            ));
        }
        let mut file = &self.file;
        file.seek(SeekFrom::Start(offset))?;
        file.read_exact(buf)
    }

    /// Deletes the file: a save that a newer snapshot overtook.
    pub fn discard(self) {
        drop(self.file);
        remove_quietly(&self.path);
    }

    /// The data from its start, buffered, and ending where the trailer begins.
    pub fn reader(&self) -> io::Result<impl Read + '_> {
        let mut file = &self.file;
        file.seek(SeekFrom::Start(0))?;
        Ok(BufReader::with_capacity(IO_BUFFER_BYTES, file.take(self.info.size)))
    }
}

// ----- writing -----

/// A writer that checksums and counts what goes through it, and stops when told to.
struct CrcWriter<'a, W> {
    inner: W,
    crc: u32,
    len: u64,
    cancel: &'a AtomicBool,
}

impl<W: Write> Write for CrcWriter<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.cancel.load(Ordering::Relaxed) {
            // Not `Interrupted`, which `write_all` would retry forever.
            return Err(io::Error::other("the storage was closed"));
        }
        let n = self.inner.write(buf)?;
        self.crc = crc32c_append(self.crc, &buf[..n]);
        self.len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Appends the trailer and footer after the data already in `file`, then `fdatasync`s it.
fn seal(file: &File, meta: &SnapshotMeta, size: u64, data_crc: u32, faults: Option<&StorageFaults>) -> io::Result<()> {
    let trailer = Trailer { meta: meta.clone(), size, data_crc };
    let mut tail = rmp_serde::to_vec(&trailer).map_err(io::Error::other)?;
    let trailer_len = u32::try_from(tail.len()).ok().filter(|&n| n <= TRAILER_BYTES_MAX);
    let trailer_len = trailer_len.ok_or_else(|| io::Error::other("snapshot trailer too large"))?;
    let trailer_crc = crc32c(&tail);
    tail.extend_from_slice(&trailer_len.to_le_bytes());
    tail.extend_from_slice(&trailer_crc.to_le_bytes());
    tail.extend_from_slice(MAGIC);
    let mut file = file;
    if faults.is_some_and(StorageFaults::writes_fail) {
        file.write_all(&tail[..tail.len() / 2])?;
        return Err(io::Error::new(io::ErrorKind::StorageFull, "injected write failure (disk full)"));
    }
    file.write_all(&tail)?;
    sync::sync_data(file, faults)
}

/// Renames a sealed temporary to its final name and makes the rename durable.
fn publish(dir: &Path, tmp: &Path, meta: &SnapshotMeta) -> Result<PathBuf, SaveError> {
    let path = dir.join(name(meta.index));
    std::fs::rename(tmp, &path).map_err(SaveError::file)?;
    sync::sync_dir(dir).map_err(|error| SaveError { error, dir_unsure: true })?;
    Ok(path)
}

/// Why a save failed.
#[derive(Debug)]
pub(crate) struct SaveError {
    /// What failed.
    pub error: io::Error,
    /// The directory's own sync failed: what the directory holds (the log segments' entries
    /// too) is no longer known to be durable, so the log storage must fail as well.
    pub dir_unsure: bool,
}

impl SaveError {
    fn file(error: io::Error) -> SaveError {
        SaveError { error, dir_unsure: false }
    }
}

/// A save running on its own thread, which owns nothing but its file.
#[derive(Debug)]
pub(crate) struct Saving {
    /// The index of the snapshot being saved.
    pub index: LogIndex,
    handle: JoinHandle<Result<Current, SaveError>>,
    cancel: Arc<AtomicBool>,
}

impl Saving {
    /// Starts writing `snapshot` to `dir` on a thread named `quorate-snapshot`.
    pub fn start(
        dir: &Path,
        meta: SnapshotMeta,
        snapshot: Snapshot,
        faults: Option<Arc<StorageFaults>>,
    ) -> io::Result<Saving> {
        let index = meta.index;
        let cancel = Arc::new(AtomicBool::new(false));
        let (dir, stop) = (dir.to_path_buf(), cancel.clone());
        let handle = std::thread::Builder::new()
            .name("quorate-snapshot".into())
            .spawn(move || save(&dir, meta, snapshot, faults.as_deref(), &stop))?;
        Ok(Saving { index, handle, cancel })
    }

    /// Whether the thread is done (its result can be taken without waiting).
    pub fn is_finished(&self) -> bool {
        self.handle.is_finished()
    }

    /// The thread's result; waits for it if it is still running. A failed save leaves no
    /// temporary behind.
    pub fn join(self, dir: &Path) -> Result<Current, SaveError> {
        self.handle.join().unwrap_or_else(|_| {
            // The state machine's writer panicked: the thread did not clean up.
            remove_quietly(&dir.join(SAVE_TMP));
            Err(SaveError::file(io::Error::other("the snapshot writer panicked")))
        })
    }

    /// Makes the thread stop at its next write, and waits for it: a storage being closed
    /// leaves no thread writing in a directory another storage may open next.
    pub fn cancel(self, dir: &Path) {
        self.cancel.store(true, Ordering::Relaxed);
        let _ = self.join(dir);
    }
}

/// The save thread: writes `snapshot.tmp`, seals it, renames it into place.
fn save(
    dir: &Path,
    meta: SnapshotMeta,
    snapshot: Snapshot,
    faults: Option<&StorageFaults>,
    cancel: &AtomicBool,
) -> Result<Current, SaveError> {
    let tmp = dir.join(SAVE_TMP);
    let (file, size) = match write_tmp(&tmp, &meta, snapshot, faults, cancel) {
        Ok(written) => written,
        Err(e) => {
            remove_quietly(&tmp);
            return Err(SaveError::file(e));
        }
    };
    // If the rename went through, the temporary is gone and this removes nothing.
    let path = publish(dir, &tmp, &meta).inspect_err(|_| remove_quietly(&tmp))?;
    Ok(Current { info: SnapshotInfo { meta, size }, path, file })
}

/// Streams the data into `tmp` and seals it; returns the file and the data's size.
fn write_tmp(
    tmp: &Path,
    meta: &SnapshotMeta,
    snapshot: Snapshot,
    faults: Option<&StorageFaults>,
    cancel: &AtomicBool,
) -> io::Result<(File, u64)> {
    let file = create_tmp(tmp)?;
    let buffered = BufWriter::with_capacity(IO_BUFFER_BYTES, &file);
    let mut writer = CrcWriter { inner: buffered, crc: 0, len: 0, cancel };
    snapshot.write_to(&mut writer)?;
    writer.flush()?;
    let (size, crc) = (writer.len, writer.crc);
    drop(writer);
    seal(&file, meta, size, crc, faults)?;
    Ok((file, size))
}

// ----- receiving -----

/// A snapshot being received from the leader, chunk by chunk, into `incoming.tmp`.
#[derive(Debug)]
pub(crate) struct Receiving {
    meta: SnapshotMeta,
    file: File,
    /// Bytes received. Invariant: the file holds exactly these.
    len: u64,
    /// Checksum of the bytes received, so sealing needs no second pass over them.
    crc: u32,
}

impl Receiving {
    /// Starts receiving (discarding any partial snapshot).
    pub fn start(dir: &Path, meta: &SnapshotMeta) -> io::Result<Receiving> {
        let file = create_tmp(&dir.join(RECEIVE_TMP))?;
        Ok(Receiving { meta: meta.clone(), file, len: 0, crc: 0 })
    }

    /// Whether `chunk` is the next one of this snapshot.
    pub fn expects(&self, chunk: &SnapshotChunk) -> bool {
        chunk.meta == self.meta && chunk.offset == self.len
    }

    /// Appends the next chunk. Not synced: a chunk's ack needs no durability, since a
    /// crash loses the partial snapshot and the leader starts the transfer over.
    pub fn append(&mut self, chunk: &SnapshotChunk, faults: Option<&StorageFaults>) -> io::Result<()> {
        debug_assert!(self.expects(chunk));
        if faults.is_some_and(StorageFaults::writes_fail) {
            return Err(io::Error::new(io::ErrorKind::StorageFull, "injected write failure (disk full)"));
        }
        (&self.file).write_all(&chunk.data)?;
        self.len += chunk.data.len() as u64;
        self.crc = crc32c_append(self.crc, &chunk.data);
        Ok(())
    }

    /// Seals the received snapshot, renames it into place and syncs the directory: from
    /// here on it survives a crash. An error if it is not all of `info`.
    pub fn finish(self, dir: &Path, info: &SnapshotInfo, faults: Option<&StorageFaults>) -> io::Result<Current> {
        if !self.holds(info) {
            return Err(io::Error::other(format!(
                "the received snapshot ({} bytes at {}) is not the one to install ({} bytes at {})",
                self.len, self.meta.index, info.size, info.meta.index
            )));
        }
        seal(&self.file, &self.meta, self.len, self.crc, faults)?;
        let path = publish(dir, &dir.join(RECEIVE_TMP), &self.meta).map_err(|e| e.error)?;
        Ok(Current { info: info.clone(), path, file: self.file })
    }

    /// Whether this is all of the snapshot `info` describes.
    pub fn holds(&self, info: &SnapshotInfo) -> bool {
        self.meta == info.meta && self.len == info.size
    }
}

// ----- recovery -----

/// The snapshot files found at start.
#[derive(Debug, Default)]
pub(crate) struct Found {
    /// The newest one that verified.
    pub current: Option<Current>,
    /// Newer ones that did not, each with why.
    pub corrupt: Vec<(PathBuf, String)>,
    /// Older ones (superseded, deleted once recovery succeeded).
    older: Vec<PathBuf>,
}

/// Finds the newest snapshot in `dir` that verifies. Reads each candidate's data once
/// (streamed) to check its checksum.
pub(crate) fn find(dir: &Path) -> io::Result<Found> {
    let mut found = Found::default();
    let mut candidates = list(dir)?;
    while let Some((index, path)) = candidates.pop() {
        match verify(&path, index) {
            Ok(current) => {
                found.current = Some(current);
                found.older = candidates.into_iter().map(|(_, p)| p).collect();
                break;
            }
            Err(why) => found.corrupt.push((path, why)),
        }
    }
    Ok(found)
}

impl Found {
    /// Why recovery did not use the newest snapshot files, for error messages ("" if it did).
    pub fn corrupt_note(&self) -> String {
        let list: Vec<String> = self.corrupt.iter().map(|(p, why)| format!("{} ({why})", p.display())).collect();
        match list.is_empty() {
            true => String::new(),
            false => format!("; newer snapshots were passed over as corrupt: {}", list.join(", ")),
        }
    }

    /// Once recovery succeeded: sets the corrupt files aside (warning), deletes the older
    /// snapshots and the temporaries a crash left, and returns the current snapshot.
    pub fn tidy(self, dir: &Path) -> Option<Current> {
        for (path, why) in &self.corrupt {
            let mut aside = path.clone().into_os_string();
            aside.push(CORRUPT_SUFFIX);
            log::warn!("corrupt snapshot {} ({why}): passed over, renamed *{CORRUPT_SUFFIX}", path.display());
            if let Err(e) = std::fs::rename(path, &aside) {
                log::warn!("cannot rename {}: {e}", path.display());
            }
        }
        for path in &self.older {
            remove_quietly(path);
        }
        for tmp in [SAVE_TMP, RECEIVE_TMP] {
            let path = dir.join(tmp);
            if path.exists() {
                log::info!("deleting {}, left by a snapshot save or transfer that did not finish", path.display());
                remove_quietly(&path);
            }
        }
        self.current
    }
}

/// Checks one snapshot file: footer, trailer, size, name, and the data's checksum.
fn verify(path: &Path, index: LogIndex) -> Result<Current, String> {
    let at = |offset: u64, why: &str| format!("{}: corrupt snapshot at offset {offset}: {why}", path.display());
    let file = File::open(path).map_err(|e| format!("{}: cannot open: {e}", path.display()))?;
    let io = |e: io::Error| format!("{}: cannot read: {e}", path.display());
    let file_len = file.metadata().map_err(io)?.len();
    let footer_at = file_len.checked_sub(FOOTER_BYTES).ok_or_else(|| at(0, "shorter than a footer"))?;
    let mut footer = [0u8; FOOTER_BYTES as usize];
    read_exact_at(&file, footer_at, &mut footer).map_err(io)?;
    if &footer[8..] != MAGIC {
        return Err(at(footer_at, "not a quorate snapshot (bad magic)"));
    }
    let word = |k: usize| u32::from_le_bytes(footer[k..k + 4].try_into().expect("4 bytes"));
    let (trailer_len, trailer_crc) = (word(0), word(4));
    let trailer_at = footer_at.checked_sub(u64::from(trailer_len)).filter(|_| trailer_len <= TRAILER_BYTES_MAX);
    let trailer_at = trailer_at.ok_or_else(|| at(footer_at, &format!("impossible trailer length {trailer_len}")))?;
    let mut body = vec![0u8; trailer_len as usize];
    read_exact_at(&file, trailer_at, &mut body).map_err(io)?;
    if crc32c(&body) != trailer_crc {
        return Err(at(trailer_at, "trailer checksum mismatch"));
    }
    let trailer: Trailer = rmp_serde::from_slice(&body).map_err(|e| at(trailer_at, &format!("bad trailer: {e}")))?;
    if trailer.size != trailer_at || trailer.meta.index != index {
        let why = format!("trailer says {} bytes at index {}", trailer.size, trailer.meta.index.0);
        return Err(at(trailer_at, &why));
    }
    let data_crc = checksum_data(&file, trailer.size).map_err(io)?;
    if data_crc != trailer.data_crc {
        return Err(at(0, &format!("data checksum mismatch (bytes 0..{})", trailer.size)));
    }
    let info = SnapshotInfo { meta: trailer.meta, size: trailer.size };
    Ok(Current { info, path: path.to_path_buf(), file })
}

/// Reads `buf.len()` bytes of `file` at `offset`.
fn read_exact_at(mut file: &File, offset: u64, buf: &mut [u8]) -> io::Result<()> {
    file.seek(SeekFrom::Start(offset))?;
    file.read_exact(buf)
}

/// The checksum of the first `size` bytes of `file`, streamed through a bounded buffer.
fn checksum_data(mut file: &File, size: u64) -> io::Result<u32> {
    file.seek(SeekFrom::Start(0))?;
    let mut data = file.take(size);
    let mut buf = vec![0u8; IO_BUFFER_BYTES];
    let mut crc = 0;
    let mut seen = 0u64;
    loop {
        let n = match data.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        crc = crc32c_append(crc, &buf[..n]);
        seen += n as u64;
    }
    debug_assert_eq!(seen, size, "the trailer's offset bounds the data");
    Ok(crc)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::{Membership, Term};

    fn meta(index: u64) -> SnapshotMeta {
        SnapshotMeta { index: LogIndex(index), term: Term(1), membership: Membership::default() }
    }

    /// Writes `data` sealed as the snapshot `meta`, claiming `size` bytes and `crc`.
    fn write(dir: &Path, meta: &SnapshotMeta, data: &[u8], size: u64, crc: u32) -> PathBuf {
        let path = dir.join(name(meta.index));
        let file = create_tmp(&path).unwrap();
        (&file).write_all(data).unwrap();
        seal(&file, meta, size, crc, None).unwrap();
        path
    }

    #[test]
    fn a_trailer_must_agree_with_the_file_around_it_and_its_name() {
        let dir = tempfile::tempdir().unwrap();
        let data = [5u8; 100];
        let good = write(dir.path(), &meta(8), &data, 100, crc32c(&data));
        assert_eq!(verify(&good, LogIndex(8)).unwrap().info.size, 100);
        // Checksums that match, but the data does not end where the trailer starts.
        let short = write(dir.path(), &meta(7), &data, 99, crc32c(&data[..99]));
        let why = verify(&short, LogIndex(7)).unwrap_err();
        assert!(why.contains("trailer says 99 bytes at index 7"), "{why}");
        // A whole file under another snapshot's name.
        let renamed = dir.path().join(name(LogIndex(9)));
        std::fs::rename(&good, &renamed).unwrap();
        let why = verify(&renamed, LogIndex(9)).unwrap_err();
        assert!(why.contains("at index 8"), "{why}");
    }
}
