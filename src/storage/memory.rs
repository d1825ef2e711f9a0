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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::{Membership, Term};

    fn meta(index: u64) -> SnapshotMeta {
        SnapshotMeta { index: LogIndex(index), term: Term(1), membership: Membership::default() }
    }

    /// A save that finishes after a newer snapshot was installed does not replace it: the
    /// current snapshot is the newest, the one the core sends.
    #[test]
    fn a_save_overtaken_by_an_install_does_not_replace_it() {
        let mut s = MemoryStorage::default();
        s.save_snapshot(meta(10), Snapshot::new(|w| w.write_all(b"old"))).unwrap();
        let chunk = SnapshotChunk { meta: meta(20), offset: 0, data: b"newer".to_vec() };
        s.receive_snapshot(&chunk).unwrap();
        let info = SnapshotInfo { meta: meta(20), size: 5 };
        s.install_snapshot(&InstallSnapshotOrder { info, keep_log_after: false }).unwrap();
        let saved = loop {
            if let Some(saved) = s.poll_snapshot() {
                break saved.unwrap();
            }
            std::thread::yield_now();
        };
        assert_eq!(saved.meta.index, LogIndex(10));
        let mut buf = [0; 5];
        s.read_snapshot(LogIndex(20), 0, &mut buf).unwrap();
        assert_eq!(&buf, b"newer");
        assert!(s.read_snapshot(LogIndex(10), 0, &mut [0; 3]).is_err());
    }

    /// Chunks of another snapshot, or out of order, are refused, and so is installing
    /// anything but the complete received snapshot.
    #[test]
    fn only_the_complete_received_snapshot_installs() {
        let mut s = MemoryStorage::default();
        s.receive_snapshot(&SnapshotChunk { meta: meta(5), offset: 0, data: vec![1, 2] }).unwrap();
        assert!(s.receive_snapshot(&SnapshotChunk { meta: meta(6), offset: 2, data: vec![3] }).is_err());
        assert!(s.receive_snapshot(&SnapshotChunk { meta: meta(5), offset: 3, data: vec![3] }).is_err());
        let incomplete = SnapshotInfo { meta: meta(5), size: 3 };
        assert!(s.install_snapshot(&InstallSnapshotOrder { info: incomplete, keep_log_after: false }).is_err());
    }
}
