//! RocketMQ's remoting frame: `[total length i32][serialize type u8 | header
//! length u24][header][body]`, total length counting everything after itself.
//! Headers come as JSON (serialize type 0) or RocketMQ's binary layout (1),
//! which the C++ client can send; a response uses the request's type.
//!
//! Written here because no crate on crates.io offers the codec alone (the
//! rocketmq-rust crates bundle it with their whole runtime and need nightly).

use std::collections::BTreeMap;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use serde_json::Value;

/// Flag bit set on responses.
pub const FLAG_RESPONSE: i32 = 1;
/// Flag bit set on one-way requests (no response expected).
pub const FLAG_ONEWAY: i32 = 1 << 1;
/// JSON header serialization.
pub const SERIALIZE_JSON: u8 = 0;
/// RocketMQ's binary header serialization.
pub const SERIALIZE_ROCKETMQ: u8 = 1;
/// Version we report (RocketMQ 4.9.4's `MQVersion` ordinal).
pub const OUR_VERSION: i32 = 401;

/// Why a frame could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    /// Length fields out of range or inconsistent.
    #[error("bad frame: {0}")]
    Bad(String),
    /// Frame larger than allowed.
    #[error("frame of {0} bytes over the limit of {1}")]
    TooLarge(usize, usize),
}

/// One request or response.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Command {
    /// Request or response code.
    pub code: i32,
    /// Client language ("JAVA", "CPP", ...).
    pub language: String,
    /// Client version.
    pub version: i32,
    /// Request id; a response carries its request's.
    pub opaque: i32,
    /// Flag bits ([`FLAG_RESPONSE`], [`FLAG_ONEWAY`]).
    pub flag: i32,
    /// Remark (error text on responses).
    pub remark: Option<String>,
    /// Header fields, as strings (clients send some as JSON numbers or booleans).
    pub ext: BTreeMap<String, String>,
    /// Body.
    pub body: Bytes,
    /// Serialization the header came in (responses use the same).
    pub serialize: u8,
}

impl Command {
    /// A request with `code`.
    pub fn request(code: i32) -> Self {
        Self {
            code,
            language: "JAVA".into(),
            version: OUR_VERSION,
            ..Self::default()
        }
    }

    /// A response to `req` with `code` and optional remark.
    pub fn response_to(req: &Command, code: i32, remark: Option<String>) -> Self {
        Self {
            code,
            language: "JAVA".into(),
            version: OUR_VERSION,
            opaque: req.opaque,
            flag: FLAG_RESPONSE,
            remark,
            ext: BTreeMap::new(),
            body: Bytes::new(),
            serialize: req.serialize,
        }
    }

    /// Whether this is a response.
    pub fn is_response(&self) -> bool {
        self.flag & FLAG_RESPONSE != 0
    }

    /// Whether the sender expects no response.
    pub fn is_oneway(&self) -> bool {
        self.flag & FLAG_ONEWAY != 0
    }

    /// A header field.
    pub fn field(&self, k: &str) -> Option<&str> {
        self.ext.get(k).map(String::as_str)
    }

    /// Set a header field.
    pub fn set(&mut self, k: &str, v: impl ToString) -> &mut Self {
        self.ext.insert(k.to_owned(), v.to_string());
        self
    }

    /// Encode into `out` as one frame.
    pub fn encode(&self, out: &mut BytesMut) {
        let header = match self.serialize {
            SERIALIZE_ROCKETMQ => self.binary_header(),
            _ => self.json_header(),
        };
        let total = 4 + header.len() + self.body.len();
        out.reserve(4 + total);
        out.put_i32(total as i32);
        out.put_u32(((self.serialize as u32) << 24) | (header.len() as u32 & 0x00ff_ffff));
        out.put_slice(&header);
        out.put_slice(&self.body);
    }

    fn json_header(&self) -> Vec<u8> {
        let mut m = serde_json::Map::new();
        m.insert("code".into(), self.code.into());
        m.insert("language".into(), self.language.clone().into());
        m.insert("version".into(), self.version.into());
        m.insert("opaque".into(), self.opaque.into());
        m.insert("flag".into(), self.flag.into());
        if let Some(r) = &self.remark {
            m.insert("remark".into(), r.clone().into());
        }
        // Always present, even empty: the C++ client crashes on a response
        // without it. Values are strings: it ignores numbers.
        let ext: serde_json::Map<String, Value> = self
            .ext
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        m.insert("extFields".into(), Value::Object(ext));
        m.insert("serializeTypeCurrentRPC".into(), "JSON".into());
        serde_json::to_vec(&Value::Object(m)).unwrap_or_default()
    }

    fn binary_header(&self) -> Vec<u8> {
        let mut b = BytesMut::new();
        b.put_i16(self.code as i16);
        b.put_u8(language_code(&self.language));
        b.put_i16(self.version as i16);
        b.put_i32(self.opaque);
        b.put_i32(self.flag);
        match &self.remark {
            Some(r) => {
                b.put_i32(r.len() as i32);
                b.put_slice(r.as_bytes());
            }
            None => b.put_i32(0),
        }
        let mut ext = BytesMut::new();
        for (k, v) in &self.ext {
            ext.put_i16(k.len() as i16);
            ext.put_slice(k.as_bytes());
            ext.put_i32(v.len() as i32);
            ext.put_slice(v.as_bytes());
        }
        b.put_i32(ext.len() as i32);
        b.put_slice(&ext);
        b.to_vec()
    }
}

fn language_code(l: &str) -> u8 {
    match l {
        "JAVA" => 0,
        "CPP" => 1,
        "DOTNET" => 2,
        "PYTHON" => 3,
        "DELPHI" => 4,
        "ERLANG" => 5,
        "RUBY" => 6,
        "OTHER" => 7,
        "HTTP" => 8,
        "GO" => 9,
        "PHP" => 10,
        "OMS" => 11,
        "RUST" => 12,
        _ => 7,
    }
}

fn language_name(c: u8) -> &'static str {
    match c {
        0 => "JAVA",
        1 => "CPP",
        2 => "DOTNET",
        3 => "PYTHON",
        4 => "DELPHI",
        5 => "ERLANG",
        6 => "RUBY",
        8 => "HTTP",
        9 => "GO",
        10 => "PHP",
        11 => "OMS",
        12 => "RUST",
        _ => "OTHER",
    }
}

/// Take one frame off `buf` if complete. `max` bounds the frame size.
pub fn decode(buf: &mut BytesMut, max: usize) -> Result<Option<Command>, FrameError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let total = i32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
    if total < 4 {
        return Err(FrameError::Bad(format!("total length {total}")));
    }
    let total = total as usize;
    if total > max {
        return Err(FrameError::TooLarge(total, max));
    }
    if buf.len() < 4 + total {
        buf.reserve(4 + total - buf.len());
        return Ok(None);
    }
    buf.advance(4);
    let mut frame = buf.split_to(total).freeze();
    let mark = frame.get_u32();
    let serialize = (mark >> 24) as u8;
    let header_len = (mark & 0x00ff_ffff) as usize;
    if header_len > frame.len() {
        return Err(FrameError::Bad(format!(
            "header length {header_len} over the frame's {}",
            frame.len()
        )));
    }
    let header = frame.split_to(header_len);
    let mut cmd = match serialize {
        SERIALIZE_JSON => parse_json_header(&header)?,
        SERIALIZE_ROCKETMQ => parse_binary_header(header)?,
        other => return Err(FrameError::Bad(format!("serialize type {other}"))),
    };
    cmd.serialize = serialize;
    cmd.body = frame;
    Ok(Some(cmd))
}

/// JSON values as the strings RocketMQ's header classes would parse them from
/// (the C++ client writes some numbers and booleans unquoted).
fn as_field(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Null => None,
        other => Some(other.to_string()),
    }
}

fn parse_json_header(h: &[u8]) -> Result<Command, FrameError> {
    let v: Value =
        serde_json::from_slice(h).map_err(|e| FrameError::Bad(format!("JSON header: {e}")))?;
    let Value::Object(m) = v else {
        return Err(FrameError::Bad("JSON header is not an object".into()));
    };
    let int = |k: &str| -> i32 {
        match m.get(k) {
            Some(Value::Number(n)) => n.as_i64().unwrap_or(0) as i32,
            Some(Value::String(s)) => s.trim().parse().unwrap_or(0),
            _ => 0,
        }
    };
    let code = match m.get("code") {
        Some(Value::Number(_)) | Some(Value::String(_)) => int("code"),
        _ => return Err(FrameError::Bad("JSON header has no code".into())),
    };
    let mut ext = BTreeMap::new();
    if let Some(Value::Object(e)) = m.get("extFields") {
        for (k, v) in e {
            if let Some(s) = as_field(v) {
                ext.insert(k.clone(), s);
            }
        }
    }
    Ok(Command {
        code,
        language: m
            .get("language")
            .and_then(Value::as_str)
            .unwrap_or("OTHER")
            .to_owned(),
        version: int("version"),
        opaque: int("opaque"),
        flag: int("flag"),
        remark: m.get("remark").and_then(Value::as_str).map(str::to_owned),
        ext,
        body: Bytes::new(),
        serialize: SERIALIZE_JSON,
    })
}

fn take_str(h: &mut Bytes, len: usize, what: &str) -> Result<String, FrameError> {
    if h.len() < len {
        return Err(FrameError::Bad(format!("binary header: {what} truncated")));
    }
    let b = h.split_to(len);
    String::from_utf8(b.to_vec())
        .map_err(|_| FrameError::Bad(format!("binary header: {what} not UTF-8")))
}

fn parse_binary_header(mut h: Bytes) -> Result<Command, FrameError> {
    if h.len() < 2 + 1 + 2 + 4 + 4 + 4 {
        return Err(FrameError::Bad("binary header truncated".into()));
    }
    let code = h.get_i16() as i32;
    let language = language_name(h.get_u8()).to_owned();
    let version = h.get_i16() as i32;
    let opaque = h.get_i32();
    let flag = h.get_i32();
    let remark_len = h.get_i32();
    let remark = if remark_len > 0 {
        Some(take_str(&mut h, remark_len as usize, "remark")?)
    } else {
        None
    };
    if h.len() < 4 {
        return Err(FrameError::Bad("binary header: ext length missing".into()));
    }
    let ext_len = h.get_i32();
    if ext_len < 0 || ext_len as usize > h.len() {
        return Err(FrameError::Bad(format!(
            "binary header: ext length {ext_len}"
        )));
    }
    let mut e = h.split_to(ext_len as usize);
    let mut ext = BTreeMap::new();
    while e.has_remaining() {
        if e.len() < 2 {
            return Err(FrameError::Bad("binary header: ext key truncated".into()));
        }
        let kl = e.get_i16();
        if kl < 0 {
            return Err(FrameError::Bad("binary header: negative key length".into()));
        }
        let k = take_str(&mut e, kl as usize, "ext key")?;
        if e.len() < 4 {
            return Err(FrameError::Bad("binary header: ext value truncated".into()));
        }
        let vl = e.get_i32();
        if vl < 0 {
            return Err(FrameError::Bad(
                "binary header: negative value length".into(),
            ));
        }
        let v = take_str(&mut e, vl as usize, "ext value")?;
        ext.insert(k, v);
    }
    Ok(Command {
        code,
        language,
        version,
        opaque,
        flag,
        remark,
        ext,
        body: Bytes::new(),
        serialize: SERIALIZE_ROCKETMQ,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(serialize: u8) {
        let mut c = Command::request(10);
        c.opaque = 42;
        c.remark = Some("hi".into());
        c.set("topic", "orders").set("queueId", 3);
        c.body = Bytes::from_static(b"body");
        c.serialize = serialize;
        let mut b = BytesMut::new();
        c.encode(&mut b);
        let mut partial = BytesMut::from(&b[..b.len() - 1]);
        assert_eq!(decode(&mut partial, 1 << 20), Ok(None));
        let d = decode(&mut b, 1 << 20).expect("ok").expect("frame");
        assert!(b.is_empty());
        assert_eq!(d, c);
    }

    #[test]
    fn json_and_binary_headers_round_trip() {
        round_trip(SERIALIZE_JSON);
        round_trip(SERIALIZE_ROCKETMQ);
    }

    #[test]
    fn cpp_style_json_header_is_accepted() {
        // As the C++ client writes it: numbers unquoted, no serializeTypeCurrentRPC,
        // a trailing newline inside the header length.
        let h = b"{\"code\":10,\"extFields\":{\"AccessKey\":\"\",\"queueId\":3,\"sysFlag\":0,\"unitMode\":false},\"flag\":0,\"language\":\"CPP\",\"opaque\":7,\"remark\":\"\",\"version\":63}\n";
        let mut b = BytesMut::new();
        b.put_i32((4 + h.len() + 2) as i32);
        b.put_u32(h.len() as u32);
        b.put_slice(h);
        b.put_slice(b"xy");
        let d = decode(&mut b, 1 << 20).expect("ok").expect("frame");
        assert_eq!(d.code, 10);
        assert_eq!(d.language, "CPP");
        assert_eq!(d.field("queueId"), Some("3"));
        assert_eq!(d.field("unitMode"), Some("false"));
        assert_eq!(&d.body[..], b"xy");
    }

    #[test]
    fn malformed_frames_are_errors_not_panics() {
        for raw in [
            &[0u8, 0, 0, 2][..],
            &[0, 0, 0, 8, 0, 0, 0, 9, 1, 2, 3, 4][..],
            &[0, 0, 0, 8, 9, 0, 0, 0, 1, 2, 3, 4][..],
            &[0, 0, 0, 8, 0, 0, 0, 4, b'n', b'u', b'l', b'l'][..],
            &[0, 0, 0, 8, 1, 0, 0, 4, 0, 1, 2, 3][..],
        ] {
            let mut b = BytesMut::from(raw);
            assert!(decode(&mut b, 1 << 20).is_err(), "{raw:?}");
        }
        let mut b = BytesMut::from(&[0x7f, 0, 0, 0][..]);
        assert!(matches!(
            decode(&mut b, 1 << 20),
            Err(FrameError::TooLarge(..))
        ));
    }
}
