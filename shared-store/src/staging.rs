//! The staging ring: where appends land before the committer copies them into
//! the CommitLog segment with `pwrite`.
//!
//! Why not store straight into the segment's mapping (as RocketMQ does without
//! `transientStorePoolEnable`): the first store into each page of a fresh
//! segment faults, and the kernel zeroes the page before our copy lands, so
//! every byte is written twice; each msync then write-protects the flushed
//! pages, which costs TLB shootdowns on the writer's core. Whole-page `pwrite`s
//! skip the zeroing and leave no writable mapping to protect.
//!
//! Why a file and not RocketMQ's off-heap buffers: the ring is a shared mapping
//! of `<store>/staging`, so what an append put there survives a crash of the
//! process (it sits in the page cache, like a store into the segment would).
//! Recovery re-appends what the committer had not copied yet; every entry
//! carries its own CommitLog offset and body CRC, so stale bytes from an
//! earlier lap of the ring are never taken for new ones. The ring's pages are
//! reused lap after lap, so after the first lap they stay resident: no faults,
//! no zeroing.
//!
//! Layout: one 4 KiB header page (magic, ring size, committed offset), then
//! the ring; CommitLog offset `o` lives at ring position `o % size`.

use std::path::{Path, PathBuf};

use crate::error::{IoContext, Result, StoreError};
use crate::mapped_file::MappedFile;

const HEADER: u64 = 4096;
const MAGIC: &[u8; 8] = b"FMQSTAGE";
const POS_SIZE: usize = 8;
const POS_COMMITTED: usize = 16;

/// The ring and its header: a [`MappedFile`], so it is `fallocate`d like a
/// segment (a store into a sparse mapping on a full disk would be SIGBUS).
pub(crate) struct Staging {
    file: MappedFile,
    size: u64,
}

impl Staging {
    /// Open `path` with a ring of `size` bytes. Returns the ring and, when the
    /// file held a ring before, a copy of it as it was (ring size and bytes,
    /// committed offset) so recovery can replay what was never committed.
    pub(crate) fn open(path: PathBuf, size: u64) -> Result<(Self, Option<OldRing>)> {
        let old = read_old(&path)?;
        if old.as_ref().is_some_and(|o| o.size() != size) {
            // Resized by configuration: the old bytes are copied out above.
            std::fs::remove_file(&path).at(&path)?;
        }
        // Not prefaulted: a store that stays small touches only what it uses;
        // a busy one pays the faults on the first lap only.
        let file = MappedFile::open(path, 0, HEADER + size, false)?;
        let ring = Self { file, size };
        // SAFETY: no appender or committer exists yet.
        unsafe {
            ring.file.write_at(0, MAGIC)?;
            ring.file.write_at(POS_SIZE as u64, &size.to_le_bytes())?;
        }
        // Synced once, so an OS crash cannot leave a ring without its header.
        ring.file.flush_range(0, HEADER)?;
        Ok((ring, old))
    }

    /// Ring size in bytes.
    pub(crate) fn size(&self) -> u64 {
        self.size
    }

    /// Copy `data` to the ring at CommitLog offset `offset`, wrapping at the end.
    ///
    /// # Safety
    /// The caller is the single appender (holds the append lock), and the
    /// committer is done with every byte this overwrites: `offset + len <=
    /// copied + size`.
    pub(crate) unsafe fn write(&self, offset: u64, data: &[u8]) {
        let pos = offset % self.size;
        let first = (data.len() as u64).min(self.size - pos) as usize;
        // SAFETY: both pieces lie inside the ring (bounds are checked again by
        // `write_at`, which cannot fail here); exclusivity is the caller's.
        unsafe {
            let _ = self.file.write_at(HEADER + pos, &data[..first]);
            let _ = self.file.write_at(HEADER, &data[first..]);
        }
    }

    /// The ring bytes of `[offset, offset+len)` as one or two slices (two when
    /// the range wraps).
    ///
    /// # Safety
    /// The range was appended and is not overwritten while the slices live
    /// (the committer reads below the published append end and above
    /// `copied`, which the appender never overwrites).
    pub(crate) unsafe fn slices(&self, offset: u64, len: u64) -> (&[u8], &[u8]) {
        let pos = offset % self.size;
        let first = len.min(self.size - pos);
        let end = HEADER + self.size;
        (
            self.file
                .slice(HEADER + pos, first, end)
                .unwrap_or_default(),
            self.file
                .slice(HEADER, len - first, end)
                .unwrap_or_default(),
        )
    }

    /// Record how far the committer has copied (read back by recovery).
    pub(crate) fn set_committed(&self, offset: u64) {
        // SAFETY: the header word is only written by the committer (under its
        // lock) and read by recovery before any committer exists.
        let _ = unsafe {
            self.file
                .write_at(POS_COMMITTED as u64, &offset.to_le_bytes())
        };
    }
}

/// What a ring file held when the store opened.
pub(crate) struct OldRing {
    /// Offset through which the committer had copied into the CommitLog.
    pub(crate) committed: u64,
    ring: Vec<u8>,
}

impl OldRing {
    /// The `len` bytes at CommitLog offset `offset`, unwrapped (None if the
    /// range is longer than the ring).
    pub(crate) fn read(&self, offset: u64, len: u64) -> Option<Vec<u8>> {
        let size = self.ring.len() as u64;
        if size == 0 || len > size {
            return None;
        }
        let pos = (offset % size) as usize;
        let mut out = Vec::with_capacity(len as usize);
        let first = (len as usize).min(self.ring.len() - pos);
        out.extend_from_slice(&self.ring[pos..pos + first]);
        out.extend_from_slice(&self.ring[..len as usize - first]);
        Some(out)
    }

    /// Ring size.
    pub(crate) fn size(&self) -> u64 {
        self.ring.len() as u64
    }
}

/// Read an existing ring file whole (recovery only; the ring is bounded by
/// `commitLogStagingSize`). A file that is not a ring is an error, never
/// silently replaced: it may be someone else's data.
fn read_old(path: &Path) -> Result<Option<OldRing>> {
    let mut bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).at(path),
    };
    if bytes.len() < HEADER as usize || &bytes[..8] != MAGIC {
        return Err(StoreError::Corruption {
            file: path.to_path_buf(),
            offset: 0,
            reason: "not a staging ring (bad header)".into(),
        });
    }
    let word = |p: usize| {
        let mut a = [0u8; 8];
        a.copy_from_slice(&bytes[p..p + 8]);
        u64::from_le_bytes(a)
    };
    let size = word(POS_SIZE);
    if size != bytes.len() as u64 - HEADER {
        return Err(StoreError::Corruption {
            file: path.to_path_buf(),
            offset: POS_SIZE as u64,
            reason: format!(
                "header says the ring is {size} bytes, the file holds {}",
                bytes.len() as u64 - HEADER
            ),
        });
    }
    let committed = word(POS_COMMITTED);
    Ok(Some(OldRing {
        committed,
        ring: bytes.split_off(HEADER as usize),
    }))
}

/// Smallest ring for `max_message_size`: an entry plus the blank and gap that
/// can precede it at a segment's end must fit twice.
pub(crate) fn min_size(max_message_size: usize) -> u64 {
    let entry = max_message_size as u64 + (64 << 10);
    (2 * entry).div_ceil(4096) * 4096
}
