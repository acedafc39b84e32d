//! offsetMsgId: the store address and CommitLog offset of a message, as the
//! 32 (IPv4) or 56 (IPv6) upper-case hex characters RocketMQ clients expect.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::error::{Result, StoreError};

/// Encode `host` + `offset` as RocketMQ's offsetMsgId.
pub fn encode_offset_msg_id(host: &SocketAddr, offset: i64) -> String {
    let mut raw = Vec::with_capacity(28);
    match host.ip() {
        IpAddr::V4(ip) => raw.extend_from_slice(&ip.octets()),
        IpAddr::V6(ip) => raw.extend_from_slice(&ip.octets()),
    }
    raw.extend_from_slice(&(host.port() as i32).to_be_bytes());
    raw.extend_from_slice(&offset.to_be_bytes());
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut s = String::with_capacity(raw.len() * 2);
    for b in raw {
        s.push(HEX[(b >> 4) as usize] as char);
        s.push(HEX[(b & 15) as usize] as char);
    }
    s
}

/// Decode an offsetMsgId into the store address and CommitLog offset.
pub fn decode_offset_msg_id(id: &str) -> Result<(SocketAddr, i64)> {
    let bad = || StoreError::Malformed(format!("not an offsetMsgId: {id:?}"));
    if id.len() != 32 && id.len() != 56 {
        return Err(bad());
    }
    let mut raw = Vec::with_capacity(id.len() / 2);
    for i in (0..id.len()).step_by(2) {
        let pair = id.get(i..i + 2).ok_or_else(bad)?;
        raw.push(u8::from_str_radix(pair, 16).map_err(|_| bad())?);
    }
    let ip_len = if raw.len() == 16 { 4 } else { 16 };
    let ip = if ip_len == 4 {
        IpAddr::V4(Ipv4Addr::new(raw[0], raw[1], raw[2], raw[3]))
    } else {
        let mut a = [0u8; 16];
        a.copy_from_slice(&raw[..16]);
        IpAddr::V6(Ipv6Addr::from(a))
    };
    let mut p = [0u8; 4];
    p.copy_from_slice(&raw[ip_len..ip_len + 4]);
    let port = i32::from_be_bytes(p);
    let mut o = [0u8; 8];
    o.copy_from_slice(&raw[ip_len + 4..ip_len + 12]);
    let port = u16::try_from(port).map_err(|_| bad())?;
    Ok((SocketAddr::new(ip, port), i64::from_be_bytes(o)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_value() {
        // 127.0.0.1:10911 offset 0x1234, as RocketMQ's MessageDecoder.createMessageId makes it.
        let host: SocketAddr = "127.0.0.1:10911".parse().unwrap();
        let id = encode_offset_msg_id(&host, 0x1234);
        assert_eq!(id, "7F00000100002A9F0000000000001234");
        assert_eq!(decode_offset_msg_id(&id).unwrap(), (host, 0x1234));
        assert!(decode_offset_msg_id("zz").is_err());
        assert!(decode_offset_msg_id("7F000001FFFFFFFF0000000000001234").is_err());
    }
}
