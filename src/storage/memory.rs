//! The default storage: nothing is written anywhere.

use std::io::{self, Read};
use std::sync::Arc;
use std::thread::JoinHandle;

use super::{Recovered, Storage};
use crate::core::{Entry, HardState, InstallSnapshotOrder, LogIndex, SnapshotChunk, SnapshotInfo, SnapshotMeta};
use crate::state_machine::Snapshot;

/// Memory-only storage (ExRaft's mode, and quorate's default): the core's in-memory log is
/// the only copy, so every batch counts as durable at once and a restarted process starts
/// empty. Such a node must rejoin under a new id after a restart: it has forgotten its
/// votes and its log.
///
/// Snapshots are byte buffers: the current one (what followers behind are sent), and while
/// one is taken or received, that one. A save serializes on a thread of its own.
#[derive(Debug, Default)]
pub struct MemoryStorage {
    appended: u64,
    /// Boxed: the node loop holds memory and file storage in one enum.
    snapshots: Box<Snapshots>,
}

#[derive(Debug, Default)]
struct Snapshots {
    current: Option<(SnapshotInfo, Arc<Vec<u8>>)>,
    saving: Option<(SnapshotMeta, JoinHandle<io::Result<Vec<u8>>>)>,
    /// The snapshot being received and its bytes so far.
    receiving: Option<(SnapshotMeta, Vec<u8>)>,
}

impl Snapshots {
    fn make_current(&mut self, info: SnapshotInfo, bytes: Vec<u8>) {
        if self.current.as_ref().is_none_or(|(c, _)| c.meta.index < info.meta.index) {
            self.current = Some((info, Arc::new(bytes)));
        }
    }
}

impl Storage for MemoryStorage {
    fn recover(&mut self) -> io::Result<Recovered> {
        Ok(Recovered::default())
    }

    fn append(&mut self, _: Option<HardState>, _: Option<LogIndex>, _: &[Entry]) -> io::Result<()> {
        self.appended += 1;
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }

    fn synced(&self) -> u64 {
        self.appended
    }

    fn save_snapshot(&mut self, meta: SnapshotMeta, snapshot: Snapshot) -> io::Result<()> {
        if self.snapshots.saving.is_some() {
            return Err(io::Error::other("a snapshot is already being saved"));
        }
        let handle = std::thread::Builder::new().name("quorate-snapshot".into()).spawn(move || {
            let mut bytes = Vec::new();
            snapshot.write_to(&mut bytes)?;
            Ok(bytes)
        })?;
        self.snapshots.saving = Some((meta, handle));
        Ok(())
    }

    fn poll_snapshot(&mut self) -> Option<io::Result<SnapshotInfo>> {
        if !self.snapshots.saving.as_ref()?.1.is_finished() {
            return None;
        }
        let (meta, handle) = self.snapshots.saving.take().expect("checked");
        let bytes = match handle.join() {
            Ok(Ok(bytes)) => bytes,
            Ok(Err(e)) => return Some(Err(e)),
            Err(_) => return Some(Err(io::Error::other("the snapshot writer panicked"))),
        };
        let info = SnapshotInfo { meta, size: bytes.len() as u64 };
        self.snapshots.make_current(info.clone(), bytes);
        Some(Ok(info))
    }

    fn read_snapshot(&mut self, index: LogIndex, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let (info, bytes) = self.snapshots.current.as_ref().ok_or_else(|| io::Error::other("no snapshot"))?;
        if info.meta.index != index {
            return Err(io::Error::other(format!("snapshot {index} was replaced by {}", info.meta.index)));
        }
        let start = usize::try_from(offset).map_err(io::Error::other)?;
        let src = start.checked_add(buf.len()).and_then(|end| bytes.get(start..end));
        buf.copy_from_slice(src.ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?);
        Ok(())
    }

    fn open_snapshot(&mut self) -> io::Result<Box<dyn Read + '_>> {
        let (_, bytes) = self.snapshots.current.as_ref().ok_or_else(|| io::Error::other("no snapshot"))?;
        Ok(Box::new(&bytes[..]))
    }

    fn receive_snapshot(&mut self, chunk: &SnapshotChunk) -> io::Result<()> {
        if chunk.offset == 0 {
            self.snapshots.receiving = Some((chunk.meta.clone(), Vec::new()));
        }
        match &mut self.snapshots.receiving {
            Some((meta, bytes)) if *meta == chunk.meta && chunk.offset == bytes.len() as u64 => {
                bytes.extend_from_slice(&chunk.data);
                Ok(())
            }
            _ => Err(io::Error::other("snapshot chunk out of order")),
        }
    }

    fn install_snapshot(&mut self, order: &InstallSnapshotOrder) -> io::Result<()> {
        match self.snapshots.receiving.take() {
            Some((meta, bytes)) if meta == order.info.meta && bytes.len() as u64 == order.info.size => {
                self.snapshots.make_current(order.info.clone(), bytes);
                Ok(())
            }
            _ => Err(io::Error::other("the received snapshot is not the one to install, or incomplete")),
        }
    }

    fn compact(&mut self, _: LogIndex) -> io::Result<()> {
        Ok(()) // the core's log is the only copy
    }
}
