//! RocketMQ's stored message format v1, byte for byte.
//!
//! Layout (big-endian): TOTALSIZE i32, MAGICCODE i32, BODYCRC i32, QUEUEID i32,
//! FLAG i32, QUEUEOFFSET i64, PHYSICALOFFSET i64, SYSFLAG i32, BORNTIMESTAMP i64,
//! BORNHOST (4+4 or 16+4 bytes), STORETIMESTAMP i64, STOREHOST (4+4 or 16+4),
//! RECONSUMETIMES i32, PREPARED TX OFFSET i64, BODY (i32 len + bytes),
//! TOPIC (u8 len + bytes), PROPERTIES (i16 len + bytes).
//! A PULL_MESSAGE body is these bytes as stored, so they must match exactly.

use std::borrow::Cow;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::{Result, StoreError};

/// Magic code of a v1 message entry (`0xdaa320a7`).
pub const MESSAGE_MAGIC_CODE: i32 = 0xdaa3_20a7_u32 as i32;
/// Magic code of the blank filler at the end of a CommitLog segment.
pub const BLANK_MAGIC_CODE: i32 = 0xcbd4_3194_u32 as i32;
/// A segment always keeps room for a blank marker (size + magic).
pub const END_FILE_MIN_BLANK_LENGTH: usize = 8;

/// Separator between a property name and its value.
pub const NAME_VALUE_SEPARATOR: char = '\u{1}';
/// Separator after each property.
pub const PROPERTY_SEPARATOR: char = '\u{2}';

/// Body is compressed.
pub const SYSFLAG_COMPRESSED: i32 = 0x1;
/// TAGS holds several tags.
pub const SYSFLAG_MULTI_TAGS: i32 = 0x2;
/// Transaction half message.
pub const SYSFLAG_TRANSACTION_PREPARED: i32 = 0x4;
/// Transaction commit.
pub const SYSFLAG_TRANSACTION_COMMIT: i32 = 0x8;
/// Transaction rollback.
pub const SYSFLAG_TRANSACTION_ROLLBACK: i32 = 0xc;
/// Born host is IPv6.
pub const SYSFLAG_BORNHOST_V6: i32 = 1 << 4;
/// Store host is IPv6.
pub const SYSFLAG_STOREHOST_V6: i32 = 1 << 5;

/// Well-known property names (RocketMQ's `MessageConst`).
pub mod property {
    /// Space separated lookup keys.
    pub const KEYS: &str = "KEYS";
    /// The tag used for ConsumeQueue filtering.
    pub const TAGS: &str = "TAGS";
    /// Client-made unique id (msgId).
    pub const UNIQ_KEY: &str = "UNIQ_CLIENT_MESSAGE_ID_KEYIDX";
    /// Light queues this entry is also indexed into, comma separated.
    pub const INNER_MULTI_DISPATCH: &str = "INNER_MULTI_DISPATCH";
    /// Queue offsets in those light queues, comma separated, same order.
    pub const INNER_MULTI_QUEUE_OFFSET: &str = "INNER_MULTI_QUEUE_OFFSET";
    /// Delay level of a scheduled message.
    pub const DELAY: &str = "DELAY";
    /// Full MQTT topic of a message published by a device.
    pub const MQTT_TOPIC: &str = "MQTT_TOPIC";
}

/// Prefix of light message queues.
pub const LMQ_PREFIX: &str = "%LMQ%";
/// Longest topic name the v1 format can hold (one length byte, RocketMQ caps at 127).
pub const TOPIC_MAX_LEN: usize = 127;
/// Longest properties string (i16 length).
pub const PROPERTIES_MAX_LEN: usize = i16::MAX as usize;

/// Field positions inside an encoded entry (IPv4 born host).
pub(crate) const POS_QUEUE_OFFSET: usize = 20;
pub(crate) const POS_PHYSICAL_OFFSET: usize = 28;
pub(crate) const POS_SYSFLAG: usize = 36;
pub(crate) const POS_BORN_HOST: usize = 48;

/// Ordered message properties; order is kept so re-encoding is byte-identical.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Properties(Vec<(String, String)>);

impl Properties {
    /// No properties.
    pub fn new() -> Self {
        Self(Vec::new())
    }

    /// The value of `name`, if set.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Set `name` to `value`, replacing an earlier value in place.
    pub fn insert(&mut self, name: impl Into<String>, value: impl Into<String>) {
        let name = name.into();
        let value = value.into();
        match self.0.iter_mut().find(|(k, _)| *k == name) {
            Some(slot) => slot.1 = value,
            None => self.0.push((name, value)),
        }
    }

    /// Remove `name`, returning its value.
    pub fn remove(&mut self, name: &str) -> Option<String> {
        let i = self.0.iter().position(|(k, _)| k == name)?;
        Some(self.0.remove(i).1)
    }

    /// All pairs in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Number of properties.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Encode as RocketMQ does: `name\u0001value\u0002` for each pair.
    pub fn encode(&self) -> String {
        let mut s = String::new();
        for (k, v) in &self.0 {
            s.push_str(k);
            s.push(NAME_VALUE_SEPARATOR);
            s.push_str(v);
            s.push(PROPERTY_SEPARATOR);
        }
        s
    }

    /// Decode RocketMQ's properties string; pairs without a separator are skipped
    /// as the Java client does.
    pub fn decode(s: &str) -> Self {
        let mut out = Vec::new();
        for item in s.split(PROPERTY_SEPARATOR) {
            if let Some((k, v)) = item.split_once(NAME_VALUE_SEPARATOR) {
                out.push((k.to_string(), v.to_string()));
            }
        }
        Self(out)
    }
}

impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for Properties {
    fn from_iter<T: IntoIterator<Item = (K, V)>>(iter: T) -> Self {
        let mut p = Properties::new();
        for (k, v) in iter {
            p.insert(k, v);
        }
        p
    }
}

/// A message as handed to [`crate::MessageStore::put_message`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// RocketMQ topic.
    pub topic: String,
    /// Queue id inside the topic.
    pub queue_id: i32,
    /// Opaque user flag.
    pub flag: i32,
    /// System flags (`SYSFLAG_*`); host v6 bits are derived from the addresses.
    pub sys_flag: i32,
    /// Producer's clock, ms since the epoch.
    pub born_timestamp: i64,
    /// Producer address.
    pub born_host: SocketAddr,
    /// Times this message went through a retry topic.
    pub reconsume_times: i32,
    /// Commit-log offset of the half message this one resolves.
    pub prepared_transaction_offset: i64,
    /// Payload.
    pub body: Bytes,
    /// Properties (TAGS, KEYS, UNIQ_KEY, MQTT_TOPIC, ...).
    pub properties: Properties,
}

impl Message {
    /// A message with defaults for everything but topic, queue and body.
    pub fn new(topic: impl Into<String>, queue_id: i32, body: impl Into<Bytes>) -> Self {
        Self {
            topic: topic.into(),
            queue_id,
            flag: 0,
            sys_flag: 0,
            born_timestamp: now_millis(),
            born_host: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0),
            reconsume_times: 0,
            prepared_transaction_offset: 0,
            body: body.into(),
            properties: Properties::new(),
        }
    }

    /// The TAGS property, if any.
    pub fn tags(&self) -> Option<&str> {
        self.properties.get(property::TAGS)
    }
}

/// A message read back from the store, with the fields the store assigned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    /// The message as it was put (with host v6 bits in `sys_flag`).
    pub message: Message,
    /// Total encoded size.
    pub store_size: i32,
    /// CRC stored for the body.
    pub body_crc: i32,
    /// Offset in its ConsumeQueue.
    pub queue_offset: i64,
    /// Offset in the CommitLog.
    pub physical_offset: i64,
    /// Broker clock at append, ms.
    pub store_timestamp: i64,
    /// Address of the storing broker.
    pub store_host: SocketAddr,
}

/// Milliseconds since the Unix epoch.
pub fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// RocketMQ's body CRC: CRC32 (IEEE) with the sign bit cleared.
pub fn body_crc(body: &[u8]) -> i32 {
    (crc32fast::hash(body) & 0x7fff_ffff) as i32
}

/// Java's `String.hashCode` over UTF-16 code units; RocketMQ's tag hash.
pub fn java_string_hash(s: &str) -> i32 {
    let mut h: i32 = 0;
    for unit in s.encode_utf16() {
        h = h.wrapping_mul(31).wrapping_add(unit as i32);
    }
    h
}

/// The ConsumeQueue tag code of a TAGS value (0 when there is no tag).
pub fn tag_hash(tags: Option<&str>) -> i64 {
    match tags {
        Some(t) if !t.is_empty() => java_string_hash(t) as i64,
        _ => 0,
    }
}

fn host_len(addr: &SocketAddr) -> usize {
    match addr {
        SocketAddr::V4(_) => 8,
        SocketAddr::V6(_) => 20,
    }
}

fn put_host(buf: &mut BytesMut, addr: &SocketAddr) {
    match addr.ip() {
        IpAddr::V4(ip) => buf.put_slice(&ip.octets()),
        IpAddr::V6(ip) => buf.put_slice(&ip.octets()),
    }
    buf.put_i32(addr.port() as i32);
}

/// Size of the encoded entry; errors when a field exceeds the format.
pub fn encoded_len(msg: &Message, store_host: &SocketAddr) -> Result<usize> {
    let props = msg.properties.encode();
    check_limits(msg, props.len())?;
    Ok(fixed_len(msg, store_host) + msg.body.len() + msg.topic.len() + props.len())
}

fn fixed_len(msg: &Message, store_host: &SocketAddr) -> usize {
    4 + 4
        + 4
        + 4
        + 4
        + 8
        + 8
        + 4
        + 8
        + host_len(&msg.born_host)
        + 8
        + host_len(store_host)
        + 4
        + 8
        + 4
        + 1
        + 2
}

fn check_limits(msg: &Message, props_len: usize) -> Result<()> {
    if msg.topic.is_empty() || msg.topic.len() > TOPIC_MAX_LEN {
        return Err(StoreError::MessageIllegal(format!(
            "topic length {} not in 1..={TOPIC_MAX_LEN}",
            msg.topic.len()
        )));
    }
    if props_len > PROPERTIES_MAX_LEN {
        return Err(StoreError::MessageIllegal(format!(
            "properties length {props_len} over {PROPERTIES_MAX_LEN}"
        )));
    }
    if msg.body.len() > i32::MAX as usize {
        return Err(StoreError::MessageIllegal("body too large".into()));
    }
    Ok(())
}

/// Encode `msg` into RocketMQ's v1 layout. Queue offset, physical offset and
/// store timestamp are written as given; the CommitLog patches the first two
/// under its append lock.
pub fn encode(
    msg: &Message,
    queue_offset: i64,
    physical_offset: i64,
    store_timestamp: i64,
    store_host: &SocketAddr,
) -> Result<BytesMut> {
    let props = msg.properties.encode();
    check_limits(msg, props.len())?;
    let total = fixed_len(msg, store_host) + msg.body.len() + msg.topic.len() + props.len();
    let total_i32 = i32::try_from(total)
        .map_err(|_| StoreError::MessageIllegal(format!("message of {total} bytes")))?;
    let mut sys_flag = msg.sys_flag & !(SYSFLAG_BORNHOST_V6 | SYSFLAG_STOREHOST_V6);
    if msg.born_host.is_ipv6() {
        sys_flag |= SYSFLAG_BORNHOST_V6;
    }
    if store_host.is_ipv6() {
        sys_flag |= SYSFLAG_STOREHOST_V6;
    }
    let mut buf = BytesMut::with_capacity(total);
    buf.put_i32(total_i32);
    buf.put_i32(MESSAGE_MAGIC_CODE);
    buf.put_i32(body_crc(&msg.body));
    buf.put_i32(msg.queue_id);
    buf.put_i32(msg.flag);
    buf.put_i64(queue_offset);
    buf.put_i64(physical_offset);
    buf.put_i32(sys_flag);
    buf.put_i64(msg.born_timestamp);
    put_host(&mut buf, &msg.born_host);
    buf.put_i64(store_timestamp);
    put_host(&mut buf, store_host);
    buf.put_i32(msg.reconsume_times);
    buf.put_i64(msg.prepared_transaction_offset);
    buf.put_i32(msg.body.len() as i32);
    buf.put_slice(&msg.body);
    buf.put_u8(msg.topic.len() as u8);
    buf.put_slice(msg.topic.as_bytes());
    buf.put_i16(props.len() as i16);
    buf.put_slice(props.as_bytes());
    debug_assert_eq!(buf.len(), total);
    Ok(buf)
}

/// Offset of STORETIMESTAMP inside an entry with the given sys flag.
pub fn store_timestamp_pos(sys_flag: i32) -> usize {
    let born = if sys_flag & SYSFLAG_BORNHOST_V6 != 0 {
        20
    } else {
        8
    };
    POS_BORN_HOST + born
}

/// A cursor that refuses to read past the end instead of panicking.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|e| *e <= self.buf.len())
            .ok_or_else(|| {
                StoreError::Malformed(format!(
                    "need {n} bytes at {} of {}",
                    self.pos,
                    self.buf.len()
                ))
            })?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn i32(&mut self) -> Result<i32> {
        let b = self.take(4)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn i64(&mut self) -> Result<i64> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(i64::from_be_bytes(a))
    }
    fn i16(&mut self) -> Result<i16> {
        let b = self.take(2)?;
        Ok(i16::from_be_bytes([b[0], b[1]]))
    }
    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    fn host(&mut self, v6: bool) -> Result<SocketAddr> {
        let ip = if v6 {
            let b = self.take(16)?;
            let mut a = [0u8; 16];
            a.copy_from_slice(b);
            IpAddr::V6(Ipv6Addr::from(a))
        } else {
            let b = self.take(4)?;
            IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]))
        };
        let port = self.i32()?;
        Ok(SocketAddr::new(ip, port as u16))
    }
}

/// What the shape check of an entry found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryCheck {
    /// A valid message of this many bytes.
    Message(usize),
    /// A blank filler: the rest of the segment is empty.
    Blank,
}

/// Like [`check_entry`], and the entry's PHYSICALOFFSET field must equal
/// `physical_offset`, where it was found (catches damage outside the body,
/// which RocketMQ's body-only CRC does not cover).
pub fn check_entry_at(buf: &[u8], physical_offset: u64) -> Result<EntryCheck> {
    let r = check_entry(buf)?;
    if let EntryCheck::Message(_) = r {
        let mut a = [0u8; 8];
        a.copy_from_slice(&buf[POS_PHYSICAL_OFFSET..POS_PHYSICAL_OFFSET + 8]);
        let stored = i64::from_be_bytes(a);
        if stored != physical_offset as i64 {
            return Err(StoreError::Malformed(format!(
                "entry at {physical_offset} says it is at {stored}"
            )));
        }
    }
    Ok(r)
}

/// Validate the entry at the start of `buf` (magic, sizes, body CRC) without
/// allocating. Used by recovery, where every byte must be accounted for.
pub fn check_entry(buf: &[u8]) -> Result<EntryCheck> {
    let mut c = Cursor { buf, pos: 0 };
    let total = c.i32()?;
    let magic = c.i32()?;
    if magic == BLANK_MAGIC_CODE {
        return Ok(EntryCheck::Blank);
    }
    if magic != MESSAGE_MAGIC_CODE {
        return Err(StoreError::Malformed(format!("bad magic code {magic:#x}")));
    }
    if total < 0 || total as usize > buf.len() {
        return Err(StoreError::Malformed(format!("bad total size {total}")));
    }
    let total = total as usize;
    let crc = c.i32()?;
    c.take(4 + 4 + 8 + 8)?;
    let sys_flag = c.i32()?;
    c.take(8)?;
    c.host(sys_flag & SYSFLAG_BORNHOST_V6 != 0)?;
    c.take(8)?;
    c.host(sys_flag & SYSFLAG_STOREHOST_V6 != 0)?;
    c.take(4 + 8)?;
    let body_len = c.i32()?;
    if body_len < 0 {
        return Err(StoreError::Malformed(format!(
            "negative body length {body_len}"
        )));
    }
    let body = c.take(body_len as usize)?;
    let topic_len = c.u8()? as usize;
    c.take(topic_len)?;
    let props_len = c.i16()?;
    if props_len < 0 {
        return Err(StoreError::Malformed(format!(
            "negative properties length {props_len}"
        )));
    }
    c.take(props_len as usize)?;
    if c.pos != total {
        return Err(StoreError::Malformed(format!(
            "fields take {} bytes, total size says {total}",
            c.pos
        )));
    }
    if body_crc(body) != crc {
        return Err(StoreError::Malformed("body CRC mismatch".into()));
    }
    Ok(EntryCheck::Message(total))
}

/// Decode one stored entry (our own decoder; tests cross-check it with an
/// independent RocketMQ implementation).
pub fn decode(buf: &[u8]) -> Result<StoredMessage> {
    let mut c = Cursor { buf, pos: 0 };
    let store_size = c.i32()?;
    let magic = c.i32()?;
    if magic != MESSAGE_MAGIC_CODE {
        return Err(StoreError::Malformed(format!("bad magic code {magic:#x}")));
    }
    let body_crc_stored = c.i32()?;
    let queue_id = c.i32()?;
    let flag = c.i32()?;
    let queue_offset = c.i64()?;
    let physical_offset = c.i64()?;
    let sys_flag = c.i32()?;
    let born_timestamp = c.i64()?;
    let born_host = c.host(sys_flag & SYSFLAG_BORNHOST_V6 != 0)?;
    let store_timestamp = c.i64()?;
    let store_host = c.host(sys_flag & SYSFLAG_STOREHOST_V6 != 0)?;
    let reconsume_times = c.i32()?;
    let prepared_transaction_offset = c.i64()?;
    let body_len = c.i32()?;
    if body_len < 0 {
        return Err(StoreError::Malformed(format!(
            "negative body length {body_len}"
        )));
    }
    let body = Bytes::copy_from_slice(c.take(body_len as usize)?);
    let topic_len = c.u8()? as usize;
    let topic = std::str::from_utf8(c.take(topic_len)?)
        .map_err(|e| StoreError::Malformed(format!("topic not UTF-8: {e}")))?
        .to_string();
    let props_len = c.i16()?;
    if props_len < 0 {
        return Err(StoreError::Malformed(format!(
            "negative properties length {props_len}"
        )));
    }
    let props = std::str::from_utf8(c.take(props_len as usize)?)
        .map_err(|e| StoreError::Malformed(format!("properties not UTF-8: {e}")))?;
    if store_size < 0 || c.pos != store_size as usize {
        return Err(StoreError::Malformed(format!(
            "fields take {} bytes, total size says {store_size}",
            c.pos
        )));
    }
    Ok(StoredMessage {
        message: Message {
            topic,
            queue_id,
            flag,
            sys_flag,
            born_timestamp,
            born_host,
            reconsume_times,
            prepared_transaction_offset,
            body,
            properties: Properties::decode(props),
        },
        store_size,
        body_crc: body_crc_stored,
        queue_offset,
        physical_offset,
        store_timestamp,
        store_host,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn java_hash_matches_java() {
        // Values computed by java.lang.String.hashCode.
        assert_eq!(java_string_hash(""), 0);
        assert_eq!(java_string_hash("TagA"), 2_598_919);
        assert_eq!(java_string_hash("hello"), 99_162_322);
        assert_eq!(java_string_hash("polygenelubricants"), i32::MIN);
    }

    #[test]
    fn dispatch_view_finds_the_same_properties_as_decode() {
        let mut m = Message::new("T", 3, &b"body"[..]);
        m.properties.insert("TAGS", "paid");
        m.properties.insert("KEYS", "k1 k2");
        m.properties.insert("UNIQ_KEY", "u");
        m.properties.insert("EMPTY", "");
        let host: SocketAddr = "127.0.0.1:10911".parse().unwrap();
        let bytes = encode(&m, 7, 0, 0, &host).unwrap();
        let info = dispatch_info(&bytes).unwrap();
        assert_eq!(
            (info.topic.as_ref(), info.queue_id, info.queue_offset),
            ("T", 3, 7)
        );
        for k in ["TAGS", "KEYS", "UNIQ_KEY", "EMPTY", "MISSING", "TAG", ""] {
            assert_eq!(info.property(k), m.properties.get(k), "property {k:?}");
        }
    }

    #[test]
    fn decode_rejects_truncated_entry() {
        let mut m = Message::new("T", 0, &b"body"[..]);
        m.properties.insert("TAGS", "a");
        let host: SocketAddr = "127.0.0.1:10911".parse().unwrap();
        let bytes = encode(&m, 1, 2, 3, &host).unwrap();
        for cut in 0..bytes.len() {
            assert!(decode(&bytes[..cut]).is_err());
            assert!(check_entry(&bytes[..cut]).is_err());
        }
        assert!(decode(&bytes).is_ok());
    }
}

/// What the dispatcher needs from an entry, borrowed from the entry's bytes:
/// the dispatcher runs once per message, so it allocates nothing for entries
/// whose text is valid UTF-8 and looks up only the properties it needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DispatchInfo<'a> {
    pub(crate) size: usize,
    pub(crate) topic: Cow<'a, str>,
    pub(crate) queue_id: i32,
    pub(crate) queue_offset: i64,
    pub(crate) sys_flag: i32,
    pub(crate) store_timestamp: i64,
    properties: Cow<'a, str>,
}

impl DispatchInfo<'_> {
    /// Prepared and rolled-back transaction entries get no ConsumeQueue entry.
    pub(crate) fn is_consumable(&self) -> bool {
        let tx = self.sys_flag & SYSFLAG_TRANSACTION_ROLLBACK;
        tx != SYSFLAG_TRANSACTION_PREPARED && tx != SYSFLAG_TRANSACTION_ROLLBACK
    }

    /// The first value of property `name` (as [`Properties::get`] on the
    /// decoded properties).
    pub(crate) fn property(&self, name: &str) -> Option<&str> {
        self.properties.split(PROPERTY_SEPARATOR).find_map(|item| {
            let (k, v) = item.split_once(NAME_VALUE_SEPARATOR)?;
            (k == name).then_some(v)
        })
    }
}

/// Parse the dispatcher's view of a (already validated) entry.
pub(crate) fn dispatch_info(buf: &[u8]) -> Result<DispatchInfo<'_>> {
    let mut c = Cursor { buf, pos: 0 };
    let size = c.i32()?;
    c.take(8)?;
    let queue_id = c.i32()?;
    c.take(4)?;
    let queue_offset = c.i64()?;
    c.take(8)?;
    let sys_flag = c.i32()?;
    c.take(8)?;
    c.host(sys_flag & SYSFLAG_BORNHOST_V6 != 0)?;
    let store_timestamp = c.i64()?;
    c.host(sys_flag & SYSFLAG_STOREHOST_V6 != 0)?;
    c.take(12)?;
    let body_len = c.i32()?;
    c.take(usize::try_from(body_len).map_err(|_| StoreError::Malformed("body length".into()))?)?;
    let topic_len = c.u8()? as usize;
    let topic = String::from_utf8_lossy(c.take(topic_len)?);
    let props_len = c.i16()?;
    let props = c.take(
        usize::try_from(props_len)
            .map_err(|_| StoreError::Malformed("properties length".into()))?,
    )?;
    Ok(DispatchInfo {
        size: usize::try_from(size).map_err(|_| StoreError::Malformed("size".into()))?,
        topic,
        queue_id,
        queue_offset,
        sys_flag,
        store_timestamp,
        properties: String::from_utf8_lossy(props),
    })
}
