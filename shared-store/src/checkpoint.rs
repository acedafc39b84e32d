//! The checkpoint: how far the CommitLog is known flushed (`physic`) and how
//! far ConsumeQueues and the index are flushed (`logics`, a CommitLog offset).
//!
//! RocketMQ stores timestamps here; we store offsets, which say exactly where
//! recovery must start. Two slots are written alternately, each with a sequence
//! number and a CRC, so a torn checkpoint write leaves the previous one intact.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::error::{IoContext, Result};

const MAGIC: &[u8; 8] = b"FMQCKPT1";
const SLOT: u64 = 64;

/// Offsets recorded by the last checkpoint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CheckpointData {
    /// CommitLog bytes below this are flushed.
    pub physic: u64,
    /// CommitLog entries below this are in flushed ConsumeQueues and index files.
    pub logics: u64,
    /// Wall clock of the write (ms).
    pub timestamp: i64,
}

pub(crate) struct Checkpoint {
    path: PathBuf,
    file: File,
    seq: u64,
}

impl Checkpoint {
    /// Open the file, returning the newest valid record (None if missing or torn).
    pub(crate) fn open(path: &Path) -> Result<(Self, Option<CheckpointData>)> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .at(path)?;
        let mut best: Option<(u64, CheckpointData)> = None;
        for slot in 0..2u64 {
            let mut b = [0u8; SLOT as usize];
            if file.read_exact_at(&mut b, slot * SLOT).is_err() {
                continue;
            }
            if let Some((seq, data)) = decode(&b) {
                if best.is_none_or(|(s, _)| seq > s) {
                    best = Some((seq, data));
                }
            }
        }
        let seq = best.map(|(s, _)| s).unwrap_or(0);
        Ok((
            Self {
                path: path.to_path_buf(),
                file,
                seq,
            },
            best.map(|(_, d)| d),
        ))
    }

    /// Write and fdatasync a new record into the older slot.
    pub(crate) fn write(&mut self, data: CheckpointData) -> Result<()> {
        self.seq += 1;
        let b = encode(self.seq, &data);
        self.file
            .write_all_at(&b, (self.seq % 2) * SLOT)
            .at(&self.path)?;
        self.file.sync_data().at(&self.path)
    }
}

fn encode(seq: u64, d: &CheckpointData) -> [u8; SLOT as usize] {
    let mut b = [0u8; SLOT as usize];
    b[..8].copy_from_slice(MAGIC);
    b[8..16].copy_from_slice(&seq.to_be_bytes());
    b[16..24].copy_from_slice(&d.physic.to_be_bytes());
    b[24..32].copy_from_slice(&d.logics.to_be_bytes());
    b[32..40].copy_from_slice(&d.timestamp.to_be_bytes());
    let crc = crc32fast::hash(&b[..40]);
    b[40..44].copy_from_slice(&crc.to_be_bytes());
    b
}

fn decode(b: &[u8; SLOT as usize]) -> Option<(u64, CheckpointData)> {
    if &b[..8] != MAGIC {
        return None;
    }
    let crc = u32::from_be_bytes([b[40], b[41], b[42], b[43]]);
    if crc32fast::hash(&b[..40]) != crc {
        return None;
    }
    let u = |r: std::ops::Range<usize>| {
        let mut a = [0u8; 8];
        a.copy_from_slice(&b[r]);
        u64::from_be_bytes(a)
    };
    Some((
        u(8..16),
        CheckpointData {
            physic: u(16..24),
            logics: u(24..32),
            timestamp: u(32..40) as i64,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newest_valid_slot_wins_and_torn_slot_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("checkpoint");
        let (mut c, d) = Checkpoint::open(&p).unwrap();
        assert_eq!(d, None);
        let a = CheckpointData {
            physic: 10,
            logics: 5,
            timestamp: 1,
        };
        let b = CheckpointData {
            physic: 20,
            logics: 15,
            timestamp: 2,
        };
        c.write(a).unwrap();
        c.write(b).unwrap();
        assert_eq!(Checkpoint::open(&p).unwrap().1, Some(b));
        // Tear the newest record: the older one must be used.
        let f = OpenOptions::new().write(true).open(&p).unwrap();
        f.write_all_at(&[0xff], 17).unwrap();
        assert_eq!(Checkpoint::open(&p).unwrap().1, Some(a));
    }
}
