//! The default storage: nothing is written anywhere.

use std::io;

use super::{Recovered, Storage};
use crate::core::{Entry, HardState, LogIndex};

/// Memory-only storage (ExRaft's mode, and quorate's default): the core's in-memory log is
/// the only copy, so every batch counts as durable at once and a restarted process starts
/// empty. Such a node must rejoin under a new id after a restart: it has forgotten its
/// votes and its log.
#[derive(Debug, Default)]
pub struct MemoryStorage {
    appended: u64,
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
}
