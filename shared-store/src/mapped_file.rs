//! A fixed-size file mapped into memory, and the ordered queue of such files
//! that CommitLog and ConsumeQueue are made of.
//!
//! Concurrency contract: one writer at a time (the CommitLog's committer under
//! its commit lock, or the single dispatcher thread) writes at or beyond
//! `wrote`, then publishes the new `wrote` with release ordering; readers only
//! read below an acquired `wrote`.
//! Written bytes are never changed while readers can see them (recovery
//! truncation runs before the store is shared).

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use memmap2::MmapRaw;
use parking_lot::RwLock;

use crate::error::{IoContext, Result, StoreError};

const PAGE: usize = 4096;

/// One mmap'd segment file named by the 20-digit offset of its first byte.
pub(crate) struct MappedFile {
    path: PathBuf,
    from: u64,
    size: u64,
    map: MmapRaw,
    wrote: AtomicU64,
    flushed: AtomicU64,
    /// The file was shorter than a segment when opened (cut while growing or truncated).
    extended: bool,
    /// Position of the BLANK entry that closed the segment, `u64::MAX` while open
    /// (set by the appender, read by the committer: the bytes after it are not
    /// copied).
    closed_at: AtomicU64,
    _file: File,
}

impl MappedFile {
    /// Open or create `path` with exactly `size` bytes. A shorter existing file
    /// is extended (its missing tail reads as zeros) only if `allow_extend`.
    pub(crate) fn open(path: PathBuf, from: u64, size: u64, allow_extend: bool) -> Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .at(&path)?;
        let len = file.metadata().at(&path)?.len();
        let extended = len != 0 && len < size;
        if len == 0 {
            // Reserve the blocks now: a write into a sparse mapping on a full disk
            // would kill the process with SIGBUS instead of returning an error.
            rustix::fs::fallocate(&file, rustix::fs::FallocateFlags::empty(), 0, size)
                .map_err(std::io::Error::from)
                .at(&path)?;
        }
        if len != size {
            if len > size || (len != 0 && !allow_extend) {
                return Err(StoreError::Corruption {
                    file: path,
                    offset: len,
                    reason: format!("file is {len} bytes, segments are {size} bytes"),
                });
            }
            file.set_len(size).at(&path)?;
        }
        let map = MmapRaw::map_raw(&file).at(&path)?;
        Ok(Self {
            path,
            from,
            size,
            map,
            wrote: AtomicU64::new(0),
            flushed: AtomicU64::new(0),
            extended,
            closed_at: AtomicU64::new(u64::MAX),
            _file: file,
        })
    }

    /// Whether the file had to be extended to its full size when opened.
    pub(crate) fn was_extended(&self) -> bool {
        self.extended
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Offset of the file's first byte in the whole log.
    pub(crate) fn from(&self) -> u64 {
        self.from
    }

    pub(crate) fn size(&self) -> u64 {
        self.size
    }

    /// Bytes written and visible to readers.
    pub(crate) fn wrote(&self) -> u64 {
        self.wrote.load(Ordering::Acquire)
    }

    pub(crate) fn set_wrote(&self, pos: u64) {
        self.wrote.store(pos.min(self.size), Ordering::Release);
    }

    pub(crate) fn set_flushed(&self, pos: u64) {
        self.flushed.store(pos.min(self.size), Ordering::Release);
    }

    /// Record that the segment ends with a BLANK entry at `pos`.
    pub(crate) fn set_closed_at(&self, pos: u64) {
        self.closed_at.store(pos, Ordering::Release);
    }

    /// Where the closing BLANK entry sits, if the segment was closed.
    pub(crate) fn closed_at(&self) -> Option<u64> {
        let p = self.closed_at.load(Ordering::Acquire);
        (p != u64::MAX).then_some(p)
    }

    /// Write `data` at `pos` through the file (not the mapping); not yet
    /// visible: call `set_wrote` after. Same contract as [`Self::write_at`].
    pub(crate) fn pwrite(&self, pos: u64, data: &[u8]) -> Result<()> {
        use std::os::unix::fs::FileExt;
        pos.checked_add(data.len() as u64)
            .filter(|e| *e <= self.size)
            .ok_or_else(|| StoreError::Corruption {
                file: self.path.clone(),
                offset: pos,
                reason: format!("write of {} bytes past the end", data.len()),
            })?;
        self._file.write_all_at(data, pos).at(&self.path)
    }

    /// Copy `data` to `pos` (not yet visible: call `set_wrote` after).
    ///
    /// # Safety
    /// The caller is the only writer of this file (holds the owner's append lock
    /// or is the owner's single writer thread) and `pos >= wrote()`, or no reader
    /// can exist yet (recovery).
    pub(crate) unsafe fn write_at(&self, pos: u64, data: &[u8]) -> Result<()> {
        pos.checked_add(data.len() as u64)
            .filter(|e| *e <= self.size)
            .ok_or_else(|| StoreError::Corruption {
                file: self.path.clone(),
                offset: pos,
                reason: format!("write of {} bytes past the end", data.len()),
            })?;
        // SAFETY: bounds checked above; exclusivity is the caller's contract.
        unsafe {
            std::ptr::copy_nonoverlapping(
                data.as_ptr(),
                self.map.as_mut_ptr().add(pos as usize),
                data.len(),
            );
        }
        Ok(())
    }

    /// The bytes `[pos, pos+len)`, if they lie below `limit` (normally `wrote()`).
    pub(crate) fn slice(&self, pos: u64, len: u64, limit: u64) -> Option<&[u8]> {
        let end = pos.checked_add(len)?;
        if end > limit.min(self.size) {
            return None;
        }
        // SAFETY: in bounds; bytes below `wrote` are never written again while
        // the file is shared (see the module contract).
        Some(unsafe {
            std::slice::from_raw_parts(self.map.as_ptr().add(pos as usize), len as usize)
        })
    }

    /// Every byte of the file, for recovery scans before the store is shared.
    pub(crate) fn all(&self) -> &[u8] {
        // SAFETY: whole mapping; only called while no writer runs.
        unsafe { std::slice::from_raw_parts(self.map.as_ptr(), self.size as usize) }
    }

    /// Zero `[pos, size)`, skipping pages that already read as zeros so sparse
    /// files stay sparse. Only called during recovery.
    pub(crate) fn zero_from(&self, pos: u64) -> Result<()> {
        let all = self.all();
        let zeros = [0u8; PAGE];
        let mut data = self.next_data(pos);
        while let Some(start) = data {
            let stop = self.next_hole(start) as usize;
            let mut p = (start.max(pos)) as usize;
            while p < stop.min(all.len()) {
                let end = (((p / PAGE) + 1) * PAGE).min(all.len());
                if !is_zero(&all[p..end]) {
                    // SAFETY: recovery runs single-threaded before the store is shared.
                    unsafe { self.write_at(p as u64, &zeros[..end - p])? };
                }
                p = end;
            }
            data = self.next_data(stop as u64);
        }
        self.flush_range(pos, self.size - pos)
    }

    /// msync the bytes between the last flush and `wrote`; returns the new flushed position.
    pub(crate) fn flush(&self) -> Result<u64> {
        let wrote = self.wrote();
        let flushed = self.flushed.load(Ordering::Acquire);
        if wrote > flushed {
            self.flush_range(flushed, wrote - flushed)?;
            self.flushed.store(wrote, Ordering::Release);
        }
        Ok(wrote)
    }

    /// Start of the next region at or after `pos` that holds data (holes are
    /// skipped without reading them); None if only holes follow.
    pub(crate) fn next_data(&self, pos: u64) -> Option<u64> {
        if pos >= self.size {
            return None;
        }
        match rustix::fs::seek(&self._file, rustix::fs::SeekFrom::Data(pos)) {
            Ok(p) if p < self.size => Some(p),
            Ok(_) => None,
            // Filesystems without SEEK_DATA: treat everything as data.
            Err(e) if e == rustix::io::Errno::NXIO => None,
            Err(_) => Some(pos),
        }
    }

    /// End of the data region starting at `pos` (next hole).
    pub(crate) fn next_hole(&self, pos: u64) -> u64 {
        match rustix::fs::seek(&self._file, rustix::fs::SeekFrom::Hole(pos)) {
            Ok(p) => p.min(self.size),
            Err(_) => self.size,
        }
    }

    /// msync the whole file (files written at random positions, like the index).
    pub(crate) fn flush_all(&self) -> Result<()> {
        self.flush_range(0, self.size)
    }

    pub(crate) fn flush_range(&self, pos: u64, len: u64) -> Result<()> {
        if len == 0 {
            return Ok(());
        }
        self.map
            .flush_range(pos as usize, len as usize)
            .at(&self.path)
    }

    /// Remove the file from disk; the mapping lives until the last reader drops it.
    pub(crate) fn destroy(&self) -> Result<()> {
        match std::fs::remove_file(&self.path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e).at(&self.path),
        }
    }

    /// Time since the file was last modified (zero if the clock says it is in the future).
    pub(crate) fn age(&self) -> Option<std::time::Duration> {
        let m = std::fs::metadata(&self.path).ok()?.modified().ok()?;
        Some(m.elapsed().unwrap_or_default())
    }
}

/// True if every byte is zero; compares 8 bytes at a time (recovery reads
/// whole empty segment tails, so a byte loop costs seconds per GiB).
pub(crate) fn is_zero(b: &[u8]) -> bool {
    let mut words = b.chunks_exact(8);
    let mut acc = 0u64;
    for w in &mut words {
        let mut a = [0u8; 8];
        a.copy_from_slice(w);
        acc |= u64::from_ne_bytes(a);
    }
    acc == 0 && words.remainder().iter().all(|x| *x == 0)
}

/// Name of a segment starting at `offset`.
pub(crate) fn file_name(offset: u64) -> String {
    format!("{offset:020}")
}

/// An ordered list of equally sized segments covering a contiguous offset range.
pub(crate) struct MappedFileQueue {
    dir: PathBuf,
    file_size: u64,
    files: RwLock<Vec<Arc<MappedFile>>>,
}

impl MappedFileQueue {
    /// Load every segment in `dir` (created if missing). Gaps between segments
    /// are corruption; a short last segment is extended (it was cut while
    /// growing, recovery decides what its tail holds), a short inner one is not.
    pub(crate) fn load(dir: PathBuf, file_size: u64) -> Result<Self> {
        std::fs::create_dir_all(&dir).at(&dir)?;
        let mut offsets = Vec::new();
        for entry in std::fs::read_dir(&dir).at(&dir)? {
            let entry = entry.at(&dir)?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.len() == 20 && name.bytes().all(|b| b.is_ascii_digit()) {
                if let Ok(off) = name.parse::<u64>() {
                    offsets.push(off);
                }
            }
        }
        offsets.sort_unstable();
        let mut files = Vec::with_capacity(offsets.len());
        for (i, off) in offsets.iter().enumerate() {
            let path = dir.join(file_name(*off));
            if off % file_size != 0 {
                return Err(StoreError::Corruption {
                    file: path,
                    offset: 0,
                    reason: format!("segment start {off} is not a multiple of {file_size}"),
                });
            }
            if i > 0 && offsets[i - 1] + file_size != *off {
                return Err(StoreError::Corruption {
                    file: path,
                    offset: 0,
                    reason: format!("gap: previous segment starts at {}", offsets[i - 1]),
                });
            }
            let last = i + 1 == offsets.len();
            let f = MappedFile::open(path, *off, file_size, last)?;
            // Until recovery says otherwise, every byte of a loaded file counts as written.
            f.set_wrote(file_size);
            f.set_flushed(file_size);
            files.push(Arc::new(f));
        }
        Ok(Self {
            dir,
            file_size,
            files: RwLock::new(files),
        })
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// Size of every file in the queue.
    pub(crate) fn file_size(&self) -> u64 {
        self.file_size
    }

    pub(crate) fn files(&self) -> Vec<Arc<MappedFile>> {
        self.files.read().clone()
    }

    pub(crate) fn first(&self) -> Option<Arc<MappedFile>> {
        self.files.read().first().cloned()
    }

    pub(crate) fn last(&self) -> Option<Arc<MappedFile>> {
        self.files.read().last().cloned()
    }

    pub(crate) fn len(&self) -> usize {
        self.files.read().len()
    }

    /// The segment holding `offset`.
    pub(crate) fn find(&self, offset: u64) -> Option<Arc<MappedFile>> {
        let files = self.files.read();
        let first = files.first()?;
        if offset < first.from() {
            return None;
        }
        let idx = ((offset - first.from()) / self.file_size) as usize;
        files.get(idx).cloned()
    }

    /// The segment holding `offset`, created (with any missing predecessors
    /// when the queue is empty) if it does not exist yet. Caller is the single writer.
    pub(crate) fn get_or_create(&self, offset: u64) -> Result<Arc<MappedFile>> {
        if let Some(f) = self.find(offset) {
            return Ok(f);
        }
        let start = offset - offset % self.file_size;
        let mut files = self.files.write();
        if let Some(last) = files.last() {
            if last.from() == start {
                return Ok(last.clone());
            }
            if start != last.from() + self.file_size {
                return Err(StoreError::Corruption {
                    file: self.dir.join(file_name(start)),
                    offset: 0,
                    reason: format!("new segment would leave a gap after {}", last.from()),
                });
            }
        }
        let f = Arc::new(MappedFile::open(
            self.dir.join(file_name(start)),
            start,
            self.file_size,
            false,
        )?);
        files.push(f.clone());
        Ok(f)
    }

    /// Lowest offset still stored (start of the first segment).
    pub(crate) fn min_offset(&self) -> u64 {
        self.first().map(|f| f.from()).unwrap_or(0)
    }

    /// One past the last written byte.
    pub(crate) fn max_offset(&self) -> u64 {
        self.last().map(|f| f.from() + f.wrote()).unwrap_or(0)
    }

    /// Drop everything at and after `offset`: later segments are deleted, the
    /// segment holding it is zeroed from there. Recovery only.
    pub(crate) fn truncate(&self, offset: u64) -> Result<()> {
        let mut files = self.files.write();
        while files.last().is_some_and(|f| f.from() > offset) {
            if let Some(f) = files.pop() {
                f.destroy()?;
            }
        }
        if let Some(last) = files.last() {
            let pos = (offset - last.from()).min(last.size());
            if pos < last.size() {
                last.zero_from(pos)?;
            }
            last.set_wrote(pos);
            last.set_flushed(pos);
        }
        Ok(())
    }

    /// Remove the first segment (retention).
    pub(crate) fn remove_first(&self) -> Result<Option<Arc<MappedFile>>> {
        let mut files = self.files.write();
        if files.is_empty() {
            return Ok(None);
        }
        let f = files.remove(0);
        f.destroy()?;
        Ok(Some(f))
    }

    /// Flush every segment from the one holding `from`; returns the new flushed offset.
    pub(crate) fn flush_from(&self, from: u64) -> Result<u64> {
        let files = self.files();
        let mut flushed = from;
        for f in files.iter().filter(|f| f.from() + f.size() > from) {
            let w = f.flush()?;
            flushed = f.from() + w;
        }
        Ok(flushed)
    }

    /// Delete all segments (used when a queue is removed).
    pub(crate) fn destroy_all(&self) -> Result<()> {
        let mut files = self.files.write();
        for f in files.drain(..) {
            f.destroy()?;
        }
        let _ = std::fs::remove_dir(&self.dir);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::is_zero;

    #[test]
    fn is_zero_sees_every_byte() {
        for len in 0..40 {
            let mut v = vec![0u8; len];
            assert!(is_zero(&v));
            for i in 0..len {
                v[i] = 1;
                assert!(!is_zero(&v), "len {len} byte {i}");
                v[i] = 0;
            }
        }
    }
}
