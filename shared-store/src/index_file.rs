//! IndexFile: RocketMQ's hash index for lookup by message key and unique key
//! within a time range. Layout: a 40-byte header (begin/end store timestamp,
//! begin/end CommitLog offset, used slot count, entry count), `slots` 4-byte
//! hash slots holding the newest entry number, then 20-byte entries (key hash,
//! CommitLog offset, seconds since the file's begin timestamp, previous entry).

use std::path::PathBuf;

use crate::error::{IoContext, Result};
use crate::mapped_file::MappedFile;
use crate::message::java_string_hash;

const HEADER: u64 = 40;
const SLOT: u64 = 4;
const ENTRY: u64 = 20;

fn key_hash(key: &str) -> i32 {
    let h = java_string_hash(key);
    if h == i32::MIN {
        0
    } else {
        h.abs()
    }
}

/// Format ms since the epoch as RocketMQ names index files: yyyyMMddHHmmssSSS (UTC).
pub(crate) fn timestamp_name(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let millis = ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}{m:02}{d:02}{:02}{:02}{:02}{millis:03}",
        sod / 3600,
        (sod % 3600) / 60,
        sod % 60
    )
}

/// One index file. All access goes through [`IndexService`]'s lock.
struct IndexFile {
    map: MappedFile,
    slots: u32,
    max_entries: u32,
}

#[derive(Debug, Clone, Copy, Default)]
struct Header {
    begin_ts: i64,
    end_ts: i64,
    begin_phy: i64,
    end_phy: i64,
    slot_count: i32,
    index_count: i32,
}

impl IndexFile {
    fn file_size(slots: u32, max_entries: u32) -> u64 {
        HEADER + slots as u64 * SLOT + max_entries as u64 * ENTRY
    }

    fn open(path: PathBuf, slots: u32, max_entries: u32) -> Result<Self> {
        let size = Self::file_size(slots, max_entries);
        let map = MappedFile::open(path, 0, size, false)?;
        map.set_wrote(size);
        let f = Self {
            map,
            slots,
            max_entries,
        };
        let mut h = f.header();
        if h.index_count <= 0 {
            h.index_count = 1;
            f.write_header(&h)?;
        }
        Ok(f)
    }

    fn read_i32(&self, pos: u64) -> i32 {
        let f = &self.map;
        f.slice(pos, 4, f.size())
            .map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
            .unwrap_or(0)
    }

    fn read_i64(&self, pos: u64) -> i64 {
        let f = &self.map;
        f.slice(pos, 8, f.size())
            .map(|b| {
                let mut a = [0u8; 8];
                a.copy_from_slice(b);
                i64::from_be_bytes(a)
            })
            .unwrap_or(0)
    }

    fn write(&self, pos: u64, data: &[u8]) -> Result<()> {
        // SAFETY: IndexService's write lock excludes every reader and writer.
        unsafe { self.map.write_at(pos, data) }
    }

    fn header(&self) -> Header {
        Header {
            begin_ts: self.read_i64(0),
            end_ts: self.read_i64(8),
            begin_phy: self.read_i64(16),
            end_phy: self.read_i64(24),
            slot_count: self.read_i32(32),
            index_count: self.read_i32(36),
        }
    }

    fn write_header(&self, h: &Header) -> Result<()> {
        let mut b = [0u8; 40];
        b[0..8].copy_from_slice(&h.begin_ts.to_be_bytes());
        b[8..16].copy_from_slice(&h.end_ts.to_be_bytes());
        b[16..24].copy_from_slice(&h.begin_phy.to_be_bytes());
        b[24..32].copy_from_slice(&h.end_phy.to_be_bytes());
        b[32..36].copy_from_slice(&h.slot_count.to_be_bytes());
        b[36..40].copy_from_slice(&h.index_count.to_be_bytes());
        self.write(0, &b)
    }

    fn is_full(&self) -> bool {
        self.header().index_count as u32 >= self.max_entries
    }

    fn put(&self, key: &str, phy: i64, store_ts: i64) -> Result<bool> {
        let mut h = self.header();
        if h.index_count as u32 >= self.max_entries {
            return Ok(false);
        }
        let hash = key_hash(key);
        let slot_pos = HEADER + (hash as u32 % self.slots) as u64 * SLOT;
        let mut prev = self.read_i32(slot_pos);
        if prev <= 0 || prev >= h.index_count {
            prev = 0;
        }
        if h.index_count == 1 {
            h.begin_ts = store_ts;
            h.begin_phy = phy;
        }
        let diff = ((store_ts - h.begin_ts) / 1000).clamp(0, i32::MAX as i64) as i32;
        let entry_pos = HEADER + self.slots as u64 * SLOT + h.index_count as u64 * ENTRY;
        let mut e = [0u8; 20];
        e[..4].copy_from_slice(&hash.to_be_bytes());
        e[4..12].copy_from_slice(&phy.to_be_bytes());
        e[12..16].copy_from_slice(&diff.to_be_bytes());
        e[16..20].copy_from_slice(&prev.to_be_bytes());
        self.write(entry_pos, &e)?;
        self.write(slot_pos, &h.index_count.to_be_bytes())?;
        if prev == 0 {
            h.slot_count += 1;
        }
        h.index_count += 1;
        h.end_phy = phy;
        h.end_ts = store_ts;
        self.write_header(&h)?;
        Ok(true)
    }

    fn query(&self, key: &str, max: usize, begin: i64, end: i64, out: &mut Vec<i64>) {
        let h = self.header();
        let hash = key_hash(key);
        let slot_pos = HEADER + (hash as u32 % self.slots) as u64 * SLOT;
        let mut cur = self.read_i32(slot_pos);
        let mut steps = 0;
        while cur > 0 && cur < h.index_count && out.len() < max && steps < self.max_entries {
            let pos = HEADER + self.slots as u64 * SLOT + cur as u64 * ENTRY;
            let eh = self.read_i32(pos);
            let phy = self.read_i64(pos + 4);
            let diff = self.read_i32(pos + 12);
            let prev = self.read_i32(pos + 16);
            let ts = h.begin_ts + diff as i64 * 1000;
            // Entry times have one-second resolution: widen the window by that.
            if eh == hash && ts + 999 >= begin && ts <= end && !out.contains(&phy) {
                out.push(phy);
            }
            if prev >= cur {
                break;
            }
            cur = prev;
            steps += 1;
        }
    }
}

/// All index files, newest last.
pub(crate) struct IndexService {
    dir: PathBuf,
    slots: u32,
    max_entries: u32,
    files: Vec<IndexFile>,
    /// Entries below this CommitLog offset are already indexed.
    indexed_below: u64,
}

impl IndexService {
    pub(crate) fn load(dir: PathBuf, slots: u32, max_entries: u32) -> Result<Self> {
        std::fs::create_dir_all(&dir).at(&dir)?;
        let mut names = Vec::new();
        for e in std::fs::read_dir(&dir).at(&dir)? {
            let e = e.at(&dir)?;
            if let Some(n) = e.file_name().to_str() {
                if n.len() == 17 && n.bytes().all(|b| b.is_ascii_digit()) {
                    names.push(n.to_string());
                }
            }
        }
        names.sort();
        let mut files = Vec::new();
        for n in names {
            files.push(IndexFile::open(dir.join(n), slots, max_entries)?);
        }
        let indexed_below = files
            .last()
            .map(|f| {
                let h = f.header();
                if h.index_count > 1 {
                    h.end_phy as u64 + 1
                } else {
                    0
                }
            })
            .unwrap_or(0);
        Ok(Self {
            dir,
            slots,
            max_entries,
            files,
            indexed_below,
        })
    }

    /// After a crash, index entries at or past `offset` may be missing: index
    /// them again (duplicates are removed at query time).
    pub(crate) fn reindex_from(&mut self, offset: u64) {
        self.indexed_below = self.indexed_below.min(offset);
    }

    /// Index `keys` of the message at `phy` (each as `topic#key`).
    pub(crate) fn build(
        &mut self,
        topic: &str,
        keys: &[&str],
        phy: u64,
        store_ts: i64,
    ) -> Result<()> {
        if phy < self.indexed_below || keys.is_empty() {
            return Ok(());
        }
        for key in keys.iter().filter(|k| !k.is_empty()) {
            let full = format!("{topic}#{key}");
            loop {
                if self.files.last().is_none_or(|f| f.is_full()) {
                    let mut name_ms = store_ts;
                    let mut path = self.dir.join(timestamp_name(name_ms));
                    while path.exists() {
                        name_ms += 1;
                        path = self.dir.join(timestamp_name(name_ms));
                    }
                    self.files
                        .push(IndexFile::open(path, self.slots, self.max_entries)?);
                }
                let Some(f) = self.files.last() else { break };
                if f.put(&full, phy as i64, store_ts)? {
                    break;
                }
            }
        }
        self.indexed_below = phy + 1;
        Ok(())
    }

    /// CommitLog offsets of messages whose `key` hash matches, newest first.
    pub(crate) fn query(
        &self,
        topic: &str,
        key: &str,
        max: usize,
        begin: i64,
        end: i64,
    ) -> Vec<i64> {
        let full = format!("{topic}#{key}");
        let mut out = Vec::new();
        for f in self.files.iter().rev() {
            let h = f.header();
            if h.index_count <= 1 {
                continue;
            }
            if h.end_ts < begin - 1000 || h.begin_ts > end {
                continue;
            }
            f.query(&full, max, begin, end, &mut out);
            if out.len() >= max {
                break;
            }
        }
        out
    }

    pub(crate) fn flush(&self) -> Result<()> {
        for f in &self.files {
            f.map.flush_all()?;
        }
        Ok(())
    }

    /// Delete index files whose every entry points below `commit_log_min`.
    pub(crate) fn clean(&mut self, commit_log_min: u64) -> Result<usize> {
        let mut n = 0;
        while self.files.len() > 1 {
            let h = self.files[0].header();
            if (h.end_phy as u64) < commit_log_min {
                let f = self.files.remove(0);
                f.map.destroy()?;
                n += 1;
            } else {
                break;
            }
        }
        Ok(n)
    }
}
