//! Tests of the MQTT codec (`node_a::protocol::codec`): round trips of every
//! packet type in both versions, partial input, every validation rule and its
//! reason code, size limits, the rumqttc defects the codec works around,
//! interoperability with rumqttc's own client-side packets, and a "never
//! panics" loop over random and mutated input.

use bytes::{Bytes, BytesMut};
use node_a::protocol::codec::{decode, encode, CodecError};
use node_a::protocol::packet::*;
use rumqttc::mqttbytes::v4 as r4;
use rumqttc::v5::mqttbytes::v5 as r5;

const MAX: usize = 1 << 20;
const V4: Protocol = Protocol::V4;
const V5: Protocol = Protocol::V5;

// ---------------------------------------------------------------------------
// helpers
// ---------------------------------------------------------------------------

fn enc(p: &Packet, v: Protocol) -> BytesMut {
    let mut b = BytesMut::new();
    encode(p, v, &mut b, None).unwrap_or_else(|e| panic!("encode {p:?} for {v:?}: {e}"));
    b
}

/// The decoder state in which `p` is read: CONNECT before anything else.
fn state_for(p: &Packet, v: Protocol) -> Option<Protocol> {
    match p {
        Packet::Connect(_) => None,
        _ => Some(v),
    }
}

fn dec(bytes: &[u8], state: Option<Protocol>) -> Result<Option<Packet>, CodecError> {
    let mut b = BytesMut::from(bytes);
    decode(&mut b, state, MAX)
}

/// Decodes exactly one whole packet.
fn dec_one(bytes: &[u8], state: Option<Protocol>) -> Packet {
    let mut b = BytesMut::from(bytes);
    let p = decode(&mut b, state, MAX)
        .unwrap_or_else(|e| panic!("decode {bytes:02x?}: {e}"))
        .unwrap_or_else(|| panic!("decode {bytes:02x?}: incomplete"));
    assert!(b.is_empty(), "bytes left over after {p:?}: {b:02x?}");
    p
}

fn err(bytes: &[u8], state: Option<Protocol>) -> CodecError {
    match dec(bytes, state) {
        Err(e) => e,
        other => panic!("expected an error for {bytes:02x?}, got {other:?}"),
    }
}

/// A packet: first byte + remaining length + body.
fn frame(byte1: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![byte1];
    let mut len = body.len();
    loop {
        let mut b = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            b |= 0x80;
        }
        out.push(b);
        if len == 0 {
            break;
        }
    }
    out.extend_from_slice(body);
    out
}

/// A length-prefixed string / binary.
fn s(v: &[u8]) -> Vec<u8> {
    let mut out = (v.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(v);
    out
}

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

/// A v5 CONNECT body with the given flags, properties block and payload.
fn connect5(flags: u8, props: &[u8], payload: &[u8]) -> Vec<u8> {
    frame(
        0x10,
        &cat(&[&s(b"MQTT"), &[5, flags, 0, 60], props, payload]),
    )
}

fn connect4(flags: u8, payload: &[u8]) -> Vec<u8> {
    frame(0x10, &cat(&[&s(b"MQTT"), &[4, flags, 0, 60], payload]))
}

fn user() -> UserProperties {
    vec![
        ("k".into(), "v".into()),
        ("k".into(), "v2".into()),
        ("ü".into(), String::new()),
    ]
}

fn will_props() -> PublishProperties {
    PublishProperties {
        payload_format_indicator: Some(1),
        message_expiry_interval: Some(60),
        content_type: Some("text/plain".into()),
        response_topic: Some("resp/1".into()),
        correlation_data: Some(Bytes::from_static(b"corr\x00")),
        user_properties: user(),
        ..Default::default()
    }
}

fn ack(v: Protocol, pkid: u16, reason: u8) -> Ack {
    if v == V5 {
        Ack {
            pkid,
            reason,
            reason_string: Some("because".into()),
            user_properties: user(),
        }
    } else {
        Ack {
            pkid,
            ..Ack::default()
        }
    }
}

/// Valid packets of every type with every field the version supports.
fn samples(v: Protocol) -> Vec<Packet> {
    let v5 = v == V5;
    let up = if v5 { user() } else { Vec::new() };
    let mut out = vec![
        Packet::Connect(Box::new(Connect {
            protocol: Some(v),
            client_id: "c1".into(),
            clean_start: true,
            keep_alive: 60,
            ..Connect::default()
        })),
        Packet::Connect(Box::new(Connect {
            protocol: Some(v),
            client_id: String::new(),
            clean_start: false,
            keep_alive: 65535,
            session_expiry_interval: v5.then_some(3600),
            receive_maximum: v5.then_some(100),
            maximum_packet_size: v5.then_some(65536),
            topic_alias_maximum: v5.then_some(10),
            request_response_information: v5.then_some(1),
            request_problem_information: v5.then_some(0),
            user_properties: up.clone(),
            authentication_method: v5.then(|| "SCRAM-SHA-1".into()),
            authentication_data: v5.then(|| Bytes::from_static(b"\x00\x01")),
            will: Some(Will {
                topic: "dev/1/status".into(),
                payload: Bytes::from_static(b"offline\xff"),
                qos: QoS::AtLeastOnce,
                retain: true,
                delay_interval: if v5 { 30 } else { 0 },
                properties: if v5 {
                    will_props()
                } else {
                    PublishProperties::default()
                },
            }),
            username: Some("user".into()),
            password: Some(Bytes::from_static(b"\xff\x00binary")),
        })),
        // Empty user name and password are present, not absent.
        Packet::Connect(Box::new(Connect {
            protocol: Some(v),
            client_id: "c2".into(),
            will: Some(Will {
                topic: "w".into(),
                qos: QoS::ExactlyOnce,
                ..Will::default()
            }),
            username: Some(String::new()),
            password: Some(Bytes::new()),
            ..Connect::default()
        })),
        Packet::ConnAck(ConnAck {
            session_present: true,
            reason: 0,
            properties: if v5 {
                ConnAckProperties {
                    session_expiry_interval: Some(7200),
                    receive_maximum: Some(1000),
                    maximum_qos: Some(1),
                    retain_available: Some(1),
                    maximum_packet_size: Some(1 << 20),
                    assigned_client_identifier: Some("auto-1".into()),
                    topic_alias_maximum: Some(16),
                    reason_string: Some("welcome".into()),
                    user_properties: user(),
                    wildcard_subscription_available: Some(1),
                    subscription_identifiers_available: Some(1),
                    shared_subscription_available: Some(0),
                    server_keep_alive: Some(30),
                    response_information: Some("resp/".into()),
                    server_reference: Some("other:1883".into()),
                    authentication_method: Some("SCRAM-SHA-1".into()),
                    authentication_data: Some(Bytes::from_static(b"server-final")),
                }
            } else {
                ConnAckProperties::default()
            },
        }),
        Packet::ConnAck(ConnAck {
            session_present: false,
            reason: reason::BAD_USER_NAME_OR_PASSWORD,
            properties: ConnAckProperties::default(),
        }),
        Packet::Publish(Publish {
            topic: "a/b".into(),
            payload: Bytes::from_static(b"hello"),
            ..Publish::default()
        }),
        Packet::Publish(Publish {
            dup: true,
            qos: QoS::AtLeastOnce,
            retain: true,
            topic: "$SYS/ü/x".into(),
            pkid: 1,
            payload: Bytes::new(),
            properties: PublishProperties::default(),
        }),
        Packet::Publish(Publish {
            qos: QoS::ExactlyOnce,
            topic: "t".repeat(300),
            pkid: 65535,
            payload: Bytes::from(vec![0xAB; 1000]),
            properties: if v5 {
                PublishProperties {
                    payload_format_indicator: Some(0),
                    message_expiry_interval: Some(u32::MAX),
                    topic_alias: Some(3),
                    response_topic: Some("r/t".into()),
                    correlation_data: Some(Bytes::from_static(b"\x01\x02")),
                    user_properties: user(),
                    subscription_identifiers: vec![1, 127, 128, 16_383, 16_384, 268_435_455],
                    content_type: Some("application/json".into()),
                }
            } else {
                PublishProperties::default()
            },
            ..Publish::default()
        }),
        Packet::PubAck(ack(v, 1, reason::NO_MATCHING_SUBSCRIBERS)),
        Packet::PubAck(Ack {
            pkid: 2,
            ..Ack::default()
        }),
        Packet::PubRec(ack(v, 3, reason::QUOTA_EXCEEDED)),
        Packet::PubRel(ack(v, 4, reason::PACKET_IDENTIFIER_NOT_FOUND)),
        Packet::PubComp(ack(v, 65535, 0)),
        Packet::Subscribe(Subscribe {
            pkid: 10,
            filters: vec![
                SubscribeFilter {
                    filter: "a/+/c".into(),
                    qos: QoS::AtLeastOnce,
                    no_local: v5,
                    retain_as_published: v5,
                    retain_handling: if v5 { 2 } else { 0 },
                },
                SubscribeFilter {
                    filter: "$share/g/x/#".into(),
                    qos: QoS::ExactlyOnce,
                    retain_handling: if v5 { 1 } else { 0 },
                    ..SubscribeFilter::default()
                },
                SubscribeFilter {
                    filter: "#".into(),
                    ..SubscribeFilter::default()
                },
            ],
            subscription_identifier: v5.then_some(268_435_455),
            user_properties: up.clone(),
        }),
        Packet::SubAck(SubAck {
            pkid: 10,
            reasons: if v5 {
                vec![
                    0, 1, 2, 0x80, 0x83, 0x87, 0x8F, 0x91, 0x97, 0x9E, 0xA1, 0xA2,
                ]
            } else {
                vec![0, 1, 2, 0x80]
            },
            reason_string: v5.then(|| "partly".into()),
        }),
        Packet::Unsubscribe(Unsubscribe {
            pkid: 11,
            filters: vec!["a/+/c".into(), "$share/g/x/#".into()],
            user_properties: up.clone(),
        }),
        Packet::UnsubAck(UnsubAck {
            pkid: 11,
            reasons: if v5 { vec![0, 0x11, 0x8F] } else { Vec::new() },
        }),
        Packet::PingReq,
        Packet::PingResp,
        Packet::Disconnect(Disconnect::default()),
    ];
    if v5 {
        out.extend([
            Packet::Connect(Box::new(Connect {
                protocol: Some(v),
                client_id: "pw-only".into(),
                password: Some(Bytes::from_static(b"secret")),
                ..Connect::default()
            })),
            Packet::Publish(Publish {
                topic: String::new(),
                payload: Bytes::from_static(b"by alias"),
                properties: PublishProperties {
                    topic_alias: Some(3),
                    ..PublishProperties::default()
                },
                ..Publish::default()
            }),
            Packet::PubAck(Ack {
                pkid: 5,
                reason: reason::NOT_AUTHORIZED,
                ..Ack::default()
            }),
            Packet::Disconnect(Disconnect {
                reason: reason::DISCONNECT_WITH_WILL,
                session_expiry_interval: Some(0),
                reason_string: Some("bye".into()),
                server_reference: Some("elsewhere".into()),
                user_properties: user(),
            }),
            Packet::Disconnect(Disconnect {
                reason: reason::SESSION_TAKEN_OVER,
                ..Disconnect::default()
            }),
            Packet::Auth(Auth::default()),
            Packet::Auth(Auth {
                reason: reason::CONTINUE_AUTHENTICATION,
                method: Some("SCRAM-SHA-1".into()),
                data: Some(Bytes::from_static(b"client-first\x00")),
                reason_string: Some("step 2".into()),
                user_properties: user(),
            }),
        ]);
    }
    out
}

fn type_name(p: &Packet) -> &'static str {
    match p {
        Packet::Connect(_) => "CONNECT",
        Packet::ConnAck(_) => "CONNACK",
        Packet::Publish(_) => "PUBLISH",
        Packet::PubAck(_) => "PUBACK",
        Packet::PubRec(_) => "PUBREC",
        Packet::PubRel(_) => "PUBREL",
        Packet::PubComp(_) => "PUBCOMP",
        Packet::Subscribe(_) => "SUBSCRIBE",
        Packet::SubAck(_) => "SUBACK",
        Packet::Unsubscribe(_) => "UNSUBSCRIBE",
        Packet::UnsubAck(_) => "UNSUBACK",
        Packet::PingReq => "PINGREQ",
        Packet::PingResp => "PINGRESP",
        Packet::Disconnect(_) => "DISCONNECT",
        Packet::Auth(_) => "AUTH",
    }
}

// ---------------------------------------------------------------------------
// round trips and partial input
// ---------------------------------------------------------------------------

fn roundtrip_all(v: Protocol) -> usize {
    let samples = samples(v);
    let mut types: Vec<_> = samples.iter().map(type_name).collect();
    types.sort_unstable();
    types.dedup();
    let expected = if v == V5 { 15 } else { 14 };
    assert_eq!(types.len(), expected, "packet types covered: {types:?}");
    for p in &samples {
        let bytes = enc(p, v);
        let back = dec_one(&bytes, state_for(p, v));
        assert_eq!(&back, p, "round trip for {v:?} of {bytes:02x?}");
        // Encoding is deterministic and appends.
        let mut two = BytesMut::from(&b"xy"[..]);
        encode(p, v, &mut two, None).unwrap();
        assert_eq!(&two[2..], &bytes[..]);
    }
    samples.len()
}

#[test]
fn roundtrip_every_packet_type_v4() {
    assert!(roundtrip_all(V4) >= 14);
}

#[test]
fn roundtrip_every_packet_type_v5() {
    assert!(roundtrip_all(V5) >= 15);
}

#[test]
fn large_publish_uses_multi_byte_remaining_length() {
    for v in [V4, V5] {
        for size in [127, 128, 16_383, 16_384, 70_000, 2_100_000] {
            let p = Packet::Publish(Publish {
                qos: QoS::AtLeastOnce,
                pkid: 9,
                topic: "big".into(),
                payload: Bytes::from(vec![7u8; size]),
                ..Publish::default()
            });
            let bytes = enc(&p, v);
            let mut buf = BytesMut::from(&bytes[..]);
            assert_eq!(decode(&mut buf, Some(v), 4 << 20).unwrap(), Some(p));
        }
    }
}

/// Feeds a packet one byte at a time: every proper prefix is "incomplete" and
/// consumes nothing, the last byte yields the packet.
fn feed_bytewise(bytes: &[u8], state: Option<Protocol>) -> Packet {
    let mut buf = BytesMut::new();
    for (i, &b) in bytes.iter().enumerate() {
        buf.extend_from_slice(&[b]);
        let before = buf.len();
        match decode(&mut buf, state, MAX) {
            Ok(None) => assert_eq!(buf.len(), before, "prefix {i} consumed bytes"),
            Ok(Some(p)) => {
                assert_eq!(i + 1, bytes.len(), "decoded from a {}-byte prefix", i + 1);
                assert!(buf.is_empty());
                return p;
            }
            Err(e) => panic!("prefix of {} bytes of {bytes:02x?}: {e}", i + 1),
        }
    }
    panic!("never decoded {bytes:02x?}");
}

#[test]
fn every_prefix_is_incomplete_and_consumes_nothing() {
    for v in [V4, V5] {
        let mut samples = samples(v);
        samples.push(Packet::Publish(Publish {
            topic: "big".into(),
            payload: Bytes::from(vec![1u8; 20_000]),
            ..Publish::default()
        }));
        for p in samples {
            let bytes = enc(&p, v);
            assert_eq!(feed_bytewise(&bytes, state_for(&p, v)), p);
            // And prefixes given all at once, from scratch.
            for cut in 0..bytes.len().min(300) {
                let mut buf = BytesMut::from(&bytes[..cut]);
                assert_eq!(decode(&mut buf, state_for(&p, v), MAX), Ok(None));
                assert_eq!(&buf[..], &bytes[..cut]);
            }
        }
    }
}

#[test]
fn a_stream_of_packets_decodes_in_order() {
    for v in [V4, V5] {
        let samples = samples(v);
        let mut stream = BytesMut::new();
        let connect = &samples[1];
        encode(connect, v, &mut stream, None).unwrap();
        let rest: Vec<_> = samples
            .iter()
            .filter(|p| !matches!(p, Packet::Connect(_)))
            .cloned()
            .collect();
        for p in &rest {
            encode(p, v, &mut stream, None).unwrap();
        }
        // Like a server: no protocol until CONNECT, then the CONNECT's protocol.
        let first = decode(&mut stream, None, MAX).unwrap().unwrap();
        assert_eq!(&first, connect);
        let Packet::Connect(c) = first else {
            unreachable!()
        };
        for p in &rest {
            assert_eq!(
                decode(&mut stream, c.protocol, MAX).unwrap().as_ref(),
                Some(p)
            );
        }
        assert!(stream.is_empty());
        assert_eq!(decode(&mut stream, c.protocol, MAX), Ok(None));
    }
}

// ---------------------------------------------------------------------------
// validation → reason codes
// ---------------------------------------------------------------------------

const MALFORMED: u8 = 0x81;
const PROTOCOL: u8 = 0x82;
const UNSUPPORTED: u8 = 0x84;
const TOO_LARGE: u8 = 0x95;
const TOPIC_NAME: u8 = 0x90;
const TOPIC_ALIAS: u8 = 0x94;

fn publish5(byte1: u8, topic: &[u8], pkid: Option<u16>, props: &[u8]) -> Vec<u8> {
    let pkid = pkid.map(|p| p.to_be_bytes().to_vec()).unwrap_or_default();
    frame(byte1, &cat(&[&s(topic), &pkid, props, b"payload"]))
}

fn publish4(byte1: u8, topic: &[u8], pkid: Option<u16>) -> Vec<u8> {
    let pkid = pkid.map(|p| p.to_be_bytes().to_vec()).unwrap_or_default();
    frame(byte1, &cat(&[&s(topic), &pkid, b"payload"]))
}

fn subscribe5(pkid: u16, props: &[u8], filters: &[(&[u8], u8)]) -> Vec<u8> {
    let mut body = pkid.to_be_bytes().to_vec();
    body.extend_from_slice(props);
    for (f, o) in filters {
        body.extend(s(f));
        body.push(*o);
    }
    frame(0x82, &body)
}

fn subscribe4(pkid: u16, filters: &[(&[u8], u8)]) -> Vec<u8> {
    let mut body = pkid.to_be_bytes().to_vec();
    for (f, o) in filters {
        body.extend(s(f));
        body.push(*o);
    }
    frame(0x82, &body)
}

#[test]
fn validation_cases_yield_their_reason_codes() {
    let c5 = |flags: u8, props: &[u8], payload: &[u8]| connect5(flags, props, payload);
    let id = s(b"c1");
    let cases: Vec<(&str, Vec<u8>, Option<Protocol>, u8)> = vec![
        // --- state ---
        ("first packet not CONNECT", vec![0xC0, 0x00], None, PROTOCOL),
        (
            "first packet PUBLISH",
            publish4(0x30, b"a", None),
            None,
            PROTOCOL,
        ),
        ("second CONNECT", connect4(0x02, &id), Some(V4), PROTOCOL),
        ("second CONNECT v5", c5(0x02, &[0], &id), Some(V5), PROTOCOL),
        // --- framing ---
        (
            "5-byte remaining length",
            vec![0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01],
            Some(V5),
            MALFORMED,
        ),
        (
            "5-byte remaining length, early",
            vec![0x30, 0x80, 0x80, 0x80, 0x80],
            Some(V4),
            MALFORMED,
        ),
        ("packet type 0", vec![0x00, 0x00], Some(V5), MALFORMED),
        ("AUTH in 3.1.1", vec![0xF0, 0x00], Some(V4), MALFORMED),
        // --- fixed header flags ---
        (
            "CONNECT flags",
            cat(&[&[0x11], &connect4(0x02, &id)[1..]]),
            None,
            MALFORMED,
        ),
        (
            "SUBSCRIBE flags 0000",
            cat(&[&[0x80], &subscribe4(1, &[(b"a", 0)])[1..]]),
            Some(V4),
            MALFORMED,
        ),
        (
            "SUBSCRIBE flags 0011",
            cat(&[&[0x83], &subscribe4(1, &[(b"a", 0)])[1..]]),
            Some(V4),
            MALFORMED,
        ),
        (
            "UNSUBSCRIBE flags",
            frame(0xA0, &cat(&[&[0, 1], &s(b"a")])),
            Some(V4),
            MALFORMED,
        ),
        (
            "PUBREL flags",
            vec![0x60, 0x02, 0x00, 0x01],
            Some(V4),
            MALFORMED,
        ),
        (
            "PUBACK flags",
            vec![0x42, 0x02, 0x00, 0x01],
            Some(V5),
            MALFORMED,
        ),
        ("PINGREQ flags", vec![0xC1, 0x00], Some(V4), MALFORMED),
        ("DISCONNECT flags", vec![0xE2, 0x00], Some(V5), MALFORMED),
        // --- PUBLISH ---
        (
            "QoS 3",
            publish5(0x36, b"a", Some(1), &[0]),
            Some(V5),
            MALFORMED,
        ),
        (
            "QoS 3 v4",
            publish4(0x36, b"a", Some(1)),
            Some(V4),
            MALFORMED,
        ),
        ("QoS 3, first byte only", vec![0x36], Some(V4), MALFORMED),
        (
            "QoS 0 with DUP",
            publish5(0x38, b"a", None, &[0]),
            Some(V5),
            MALFORMED,
        ),
        (
            "QoS 0 with DUP v4",
            publish4(0x38, b"a", None),
            Some(V4),
            MALFORMED,
        ),
        (
            "QoS 1 pkid 0",
            publish5(0x32, b"a", Some(0), &[0]),
            Some(V5),
            PROTOCOL,
        ),
        (
            "QoS 2 pkid 0 v4",
            publish4(0x34, b"a", Some(0)),
            Some(V4),
            PROTOCOL,
        ),
        (
            "topic with +",
            publish5(0x30, b"a/+", None, &[0]),
            Some(V5),
            TOPIC_NAME,
        ),
        (
            "topic with #",
            publish5(0x30, b"a/#", None, &[0]),
            Some(V5),
            TOPIC_NAME,
        ),
        (
            "topic with U+0000",
            publish5(0x30, b"a\0b", None, &[0]),
            Some(V5),
            MALFORMED,
        ),
        (
            "topic not UTF-8",
            publish5(0x30, b"\xff\xfe", None, &[0]),
            Some(V5),
            MALFORMED,
        ),
        (
            "empty topic, no alias",
            publish5(0x30, b"", None, &[0]),
            Some(V5),
            TOPIC_NAME,
        ),
        (
            "topic with + v4",
            publish4(0x30, b"a/+", None),
            Some(V4),
            MALFORMED,
        ),
        (
            "topic with # v4",
            publish4(0x30, b"#", None),
            Some(V4),
            MALFORMED,
        ),
        (
            "topic with U+0000 v4",
            publish4(0x30, b"\0", None),
            Some(V4),
            MALFORMED,
        ),
        (
            "topic not UTF-8 v4",
            publish4(0x30, b"\xc3", None),
            Some(V4),
            MALFORMED,
        ),
        (
            "empty topic v4",
            publish4(0x30, b"", None),
            Some(V4),
            MALFORMED,
        ),
        (
            "topic alias 0",
            publish5(0x30, b"a", None, &[3, 0x23, 0, 0]),
            Some(V5),
            TOPIC_ALIAS,
        ),
        (
            "subscription id 0 in PUBLISH",
            publish5(0x30, b"a", None, &[2, 0x0B, 0]),
            Some(V5),
            PROTOCOL,
        ),
        (
            "payload format 2",
            publish5(0x30, b"a", None, &[2, 0x01, 2]),
            Some(V5),
            PROTOCOL,
        ),
        (
            "duplicate content type",
            publish5(
                0x30,
                b"a",
                None,
                &cat(&[&[8, 0x03], &s(b"a"), &[0x03], &s(b"b")]),
            ),
            Some(V5),
            PROTOCOL,
        ),
        (
            "session expiry in PUBLISH",
            publish5(0x30, b"a", None, &[5, 0x11, 0, 0, 0, 1]),
            Some(V5),
            MALFORMED,
        ),
        (
            "unknown property 0x7F",
            publish5(0x30, b"a", None, &[2, 0x7F, 0]),
            Some(V5),
            MALFORMED,
        ),
        // the property length says 2, the topic alias property needs 3
        (
            "property overruns its block",
            publish5(0x30, b"a", None, &[2, 0x23, 0, 1]),
            Some(V5),
            MALFORMED,
        ),
        (
            "property block overruns packet",
            frame(0x30, &cat(&[&s(b"a"), &[9, 0x23, 0]])),
            Some(V5),
            MALFORMED,
        ),
        (
            "user property not UTF-8",
            publish5(0x30, b"a", None, &cat(&[&[6, 0x26], &s(b"\xff"), &s(b"")])),
            Some(V5),
            MALFORMED,
        ),
        (
            "topic length overruns packet",
            frame(0x30, &[0, 9, b'a']),
            Some(V4),
            MALFORMED,
        ),
        // --- SUBSCRIBE ---
        (
            "SUBSCRIBE without filters",
            subscribe5(1, &[0], &[]),
            Some(V5),
            PROTOCOL,
        ),
        (
            "SUBSCRIBE without filters v4",
            subscribe4(1, &[]),
            Some(V4),
            PROTOCOL,
        ),
        (
            "SUBSCRIBE pkid 0",
            subscribe5(0, &[0], &[(b"a", 0)]),
            Some(V5),
            PROTOCOL,
        ),
        (
            "SUBSCRIBE pkid 0 v4",
            subscribe4(0, &[(b"a", 0)]),
            Some(V4),
            PROTOCOL,
        ),
        (
            "options bit 6",
            subscribe5(1, &[0], &[(b"a", 0x40)]),
            Some(V5),
            MALFORMED,
        ),
        (
            "options bit 7",
            subscribe5(1, &[0], &[(b"a", 0x80)]),
            Some(V5),
            MALFORMED,
        ),
        (
            "options bit 2 v4",
            subscribe4(1, &[(b"a", 0x04)]),
            Some(V4),
            MALFORMED,
        ),
        (
            "options bit 7 v4",
            subscribe4(1, &[(b"a", 0x80)]),
            Some(V4),
            MALFORMED,
        ),
        (
            "options QoS 3",
            subscribe5(1, &[0], &[(b"a", 0x03)]),
            Some(V5),
            MALFORMED,
        ),
        (
            "options QoS 3 v4",
            subscribe4(1, &[(b"a", 0x03)]),
            Some(V4),
            MALFORMED,
        ),
        (
            "retain handling 3",
            subscribe5(1, &[0], &[(b"a", 0x30)]),
            Some(V5),
            PROTOCOL,
        ),
        (
            "subscription identifier 0",
            subscribe5(1, &[2, 0x0B, 0], &[(b"a", 0)]),
            Some(V5),
            PROTOCOL,
        ),
        (
            "two subscription identifiers",
            subscribe5(1, &[4, 0x0B, 1, 0x0B, 2], &[(b"a", 0)]),
            Some(V5),
            PROTOCOL,
        ),
        (
            "no local on shared",
            subscribe5(1, &[0], &[(b"$share/g/a", 0x04)]),
            Some(V5),
            PROTOCOL,
        ),
        (
            "filter not UTF-8",
            subscribe5(1, &[0], &[(b"\xff", 0)]),
            Some(V5),
            MALFORMED,
        ),
        (
            "filter with U+0000 v4",
            subscribe4(1, &[(b"a\0", 0)]),
            Some(V4),
            MALFORMED,
        ),
        (
            "filter without options",
            frame(0x82, &cat(&[&[0, 1, 0], &s(b"a")])),
            Some(V5),
            MALFORMED,
        ),
        // --- UNSUBSCRIBE ---
        (
            "UNSUBSCRIBE without filters",
            frame(0xA2, &[0, 1, 0]),
            Some(V5),
            PROTOCOL,
        ),
        (
            "UNSUBSCRIBE without filters v4",
            frame(0xA2, &[0, 1]),
            Some(V4),
            PROTOCOL,
        ),
        (
            "UNSUBSCRIBE pkid 0",
            frame(0xA2, &cat(&[&[0, 0, 0], &s(b"a")])),
            Some(V5),
            PROTOCOL,
        ),
        (
            "UNSUBSCRIBE pkid 0 v4",
            frame(0xA2, &cat(&[&[0, 0], &s(b"a")])),
            Some(V4),
            PROTOCOL,
        ),
        (
            "UNSUBSCRIBE U+0000 v4",
            frame(0xA2, &cat(&[&[0, 1], &s(b"\0")])),
            Some(V4),
            MALFORMED,
        ),
        // --- CONNECT ---
        (
            "CONNECT reserved flag",
            c5(0x03, &[0], &id),
            None,
            MALFORMED,
        ),
        (
            "CONNECT reserved flag v4",
            connect4(0x01, &id),
            None,
            MALFORMED,
        ),
        (
            "receive maximum 0",
            c5(0x02, &[3, 0x21, 0, 0], &id),
            None,
            PROTOCOL,
        ),
        (
            "maximum packet size 0",
            c5(0x02, &[5, 0x27, 0, 0, 0, 0], &id),
            None,
            PROTOCOL,
        ),
        (
            "request problem information 2",
            c5(0x02, &[2, 0x17, 2], &id),
            None,
            PROTOCOL,
        ),
        (
            "duplicate session expiry",
            c5(0x02, &[10, 0x11, 0, 0, 0, 1, 0x11, 0, 0, 0, 2], &id),
            None,
            PROTOCOL,
        ),
        (
            "topic alias in CONNECT",
            c5(0x02, &[3, 0x23, 0, 1], &id),
            None,
            MALFORMED,
        ),
        (
            "auth data without method",
            c5(0x02, &[3, 0x16, 0, 0], &id),
            None,
            PROTOCOL,
        ),
        (
            "CONNECT property overrun",
            c5(0x02, &[2, 0x11, 0, 0, 0, 1], &id),
            None,
            MALFORMED,
        ),
        (
            "password without user name v4",
            connect4(0x42, &cat(&[&id, &s(b"pw")])),
            None,
            MALFORMED,
        ),
        (
            "will QoS without will flag",
            c5(0x0A, &[0], &id),
            None,
            MALFORMED,
        ),
        (
            "will retain without will flag v4",
            connect4(0x22, &id),
            None,
            MALFORMED,
        ),
        (
            "will QoS 3",
            connect4(0x1E, &cat(&[&id, &s(b"w"), &s(b"p")])),
            None,
            MALFORMED,
        ),
        (
            "will topic with wildcard",
            c5(0x06, &[0], &cat(&[&id, &[0], &s(b"w/#"), &s(b"p")])),
            None,
            TOPIC_NAME,
        ),
        (
            "will topic with wildcard v4",
            connect4(0x06, &cat(&[&id, &s(b"w/+"), &s(b"p")])),
            None,
            MALFORMED,
        ),
        (
            "empty will topic",
            c5(0x06, &[0], &cat(&[&id, &[0], &s(b""), &s(b"p")])),
            None,
            TOPIC_NAME,
        ),
        (
            "topic alias in will",
            c5(
                0x06,
                &[0],
                &cat(&[&id, &[3, 0x23, 0, 1], &s(b"w"), &s(b"p")]),
            ),
            None,
            MALFORMED,
        ),
        (
            "client id not UTF-8",
            connect4(0x02, &s(b"\xc0\x80")),
            None,
            MALFORMED,
        ),
        (
            "client id with U+0000",
            c5(0x02, &[0], &s(b"a\0")),
            None,
            MALFORMED,
        ),
        (
            "missing will payload",
            connect4(0x06, &cat(&[&id, &s(b"w")])),
            None,
            MALFORMED,
        ),
        (
            "missing password",
            c5(0xC2, &[0], &cat(&[&id, &s(b"u")])),
            None,
            MALFORMED,
        ),
        (
            "trailing bytes after CONNECT",
            connect4(0x02, &cat(&[&id, b"x"])),
            None,
            MALFORMED,
        ),
        (
            "MQIsdp level 3",
            frame(0x10, &cat(&[&s(b"MQIsdp"), &[3, 2, 0, 60], &id])),
            None,
            UNSUPPORTED,
        ),
        (
            "MQTT level 3",
            frame(0x10, &cat(&[&s(b"MQTT"), &[3, 2, 0, 60], &id])),
            None,
            UNSUPPORTED,
        ),
        (
            "MQTT level 6",
            frame(0x10, &cat(&[&s(b"MQTT"), &[6, 2, 0, 60], &id])),
            None,
            UNSUPPORTED,
        ),
        (
            "protocol name MQTX",
            frame(0x10, &cat(&[&s(b"MQTX"), &[4, 2, 0, 60], &id])),
            None,
            PROTOCOL,
        ),
        (
            "CONNECT cut after the name",
            frame(0x10, &s(b"MQTT")),
            None,
            MALFORMED,
        ),
        // --- acks ---
        (
            "PUBACK length 3 v4",
            vec![0x40, 0x03, 0, 1, 0],
            Some(V4),
            MALFORMED,
        ),
        ("PUBACK length 1", vec![0x40, 0x01, 0], Some(V5), MALFORMED),
        ("PUBACK pkid 0", vec![0x40, 0x02, 0, 0], Some(V5), PROTOCOL),
        (
            "PUBCOMP pkid 0 v4",
            vec![0x70, 0x02, 0, 0],
            Some(V4),
            PROTOCOL,
        ),
        (
            "PUBACK reason 0x01",
            vec![0x40, 0x03, 0, 1, 0x01],
            Some(V5),
            MALFORMED,
        ),
        (
            "PUBREL reason 0x10",
            vec![0x62, 0x03, 0, 1, 0x10],
            Some(V5),
            MALFORMED,
        ),
        (
            "PUBACK bytes after properties",
            vec![0x40, 0x05, 0, 1, 0, 0, 9],
            Some(V5),
            MALFORMED,
        ),
        (
            "PUBACK subscription id",
            vec![0x40, 0x06, 0, 1, 0, 2, 0x0B, 1],
            Some(V5),
            MALFORMED,
        ),
        (
            "SUBACK reason 0x03",
            vec![0x90, 0x04, 0, 1, 0, 0x03],
            Some(V5),
            MALFORMED,
        ),
        (
            "SUBACK reason 0x03 v4",
            vec![0x90, 0x03, 0, 1, 0x03],
            Some(V4),
            MALFORMED,
        ),
        (
            "SUBACK without reasons",
            vec![0x90, 0x03, 0, 1, 0],
            Some(V5),
            PROTOCOL,
        ),
        (
            "UNSUBACK without reasons",
            vec![0xB0, 0x03, 0, 1, 0],
            Some(V5),
            PROTOCOL,
        ),
        (
            "UNSUBACK length 3 v4",
            vec![0xB0, 0x03, 0, 1, 0],
            Some(V4),
            MALFORMED,
        ),
        (
            "UNSUBACK reason 0x10",
            vec![0xB0, 0x04, 0, 1, 0, 0x10],
            Some(V5),
            MALFORMED,
        ),
        // --- CONNACK ---
        (
            "CONNACK reserved flags",
            vec![0x20, 0x03, 0x02, 0, 0],
            Some(V5),
            MALFORMED,
        ),
        (
            "CONNACK reserved flags v4",
            vec![0x20, 0x02, 0x02, 0],
            Some(V4),
            MALFORMED,
        ),
        (
            "CONNACK return code 6 v4",
            vec![0x20, 0x02, 0, 6],
            Some(V4),
            MALFORMED,
        ),
        (
            "CONNACK reason 0x8B",
            vec![0x20, 0x03, 0, 0x8B, 0],
            Some(V5),
            MALFORMED,
        ),
        (
            "CONNACK session present on failure",
            vec![0x20, 0x03, 1, 0x87, 0],
            Some(V5),
            PROTOCOL,
        ),
        (
            "CONNACK session present on failure v4",
            vec![0x20, 0x02, 1, 5],
            Some(V4),
            PROTOCOL,
        ),
        (
            "CONNACK maximum QoS 2",
            vec![0x20, 0x05, 0, 0, 2, 0x24, 2],
            Some(V5),
            PROTOCOL,
        ),
        // --- PING / DISCONNECT / AUTH ---
        (
            "PINGREQ with body",
            vec![0xC0, 0x01, 0],
            Some(V5),
            MALFORMED,
        ),
        (
            "PINGRESP with body v4",
            vec![0xD0, 0x01, 0],
            Some(V4),
            MALFORMED,
        ),
        (
            "DISCONNECT with body v4",
            vec![0xE0, 0x01, 0],
            Some(V4),
            MALFORMED,
        ),
        (
            "DISCONNECT reason 0x05",
            vec![0xE0, 0x01, 0x05],
            Some(V5),
            MALFORMED,
        ),
        (
            "DISCONNECT topic alias",
            vec![0xE0, 0x05, 0, 3, 0x23, 0, 1],
            Some(V5),
            MALFORMED,
        ),
        (
            "DISCONNECT property overrun",
            vec![0xE0, 0x04, 0, 5, 0x11, 0],
            Some(V5),
            MALFORMED,
        ),
        (
            "AUTH reason 0x01",
            vec![0xF0, 0x02, 0x01, 0],
            Some(V5),
            MALFORMED,
        ),
        (
            "AUTH data without method",
            vec![0xF0, 0x06, 0x18, 4, 0x16, 0, 1, 9],
            Some(V5),
            PROTOCOL,
        ),
        (
            "AUTH duplicate method",
            frame(0xF0, &cat(&[&[0x18, 8, 0x15], &s(b"a"), &[0x15], &s(b"b")])),
            Some(V5),
            PROTOCOL,
        ),
    ];
    let mut failures = Vec::new();
    for (name, bytes, state, code) in &cases {
        match dec(bytes, *state) {
            Err(e) if e.reason_code() == *code => {}
            other => failures.push(format!(
                "{name}: expected reason {code:#04x}, got {other:?} for {bytes:02x?}"
            )),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(cases.len() > 100);
}

#[test]
fn valid_edge_cases_decode() {
    // Empty topic with a topic alias (v5).
    let p = dec_one(&publish5(0x30, b"", None, &[3, 0x23, 0, 7]), Some(V5));
    let Packet::Publish(p) = p else { panic!() };
    assert_eq!((p.topic.as_str(), p.properties.topic_alias), ("", Some(7)));
    // Several subscription identifiers in a PUBLISH (server to client).
    let p = dec_one(
        &publish5(0x30, b"a", None, &[4, 0x0B, 1, 0x0B, 2]),
        Some(V5),
    );
    let Packet::Publish(p) = p else { panic!() };
    assert_eq!(p.properties.subscription_identifiers, vec![1, 2]);
    // Semantically invalid filters are decoded as they are, for per-filter
    // SUBACK reason codes (0x8F) from the broker.
    for v in [V4, V5] {
        let bytes = if v == V5 {
            subscribe5(
                1,
                &[0],
                &[(b"a/#/b", 0), (b"a+", 1), (b"", 0), (b"$share//x", 0)],
            )
        } else {
            subscribe4(1, &[(b"a/#/b", 0), (b"a+", 1), (b"", 0), (b"$share//x", 0)])
        };
        let Packet::Subscribe(s) = dec_one(&bytes, Some(v)) else {
            panic!()
        };
        let filters: Vec<_> = s.filters.iter().map(|f| f.filter.as_str()).collect();
        assert_eq!(filters, ["a/#/b", "a+", "", "$share//x"]);
    }
    // v5 acks: short forms.
    assert_eq!(
        dec_one(&[0x40, 0x02, 0, 1], Some(V5)),
        Packet::PubAck(Ack {
            pkid: 1,
            ..Ack::default()
        })
    );
    assert_eq!(
        dec_one(&[0x50, 0x03, 0, 1, 0x10], Some(V5)),
        Packet::PubRec(Ack {
            pkid: 1,
            reason: 0x10,
            ..Ack::default()
        })
    );
    // A binary (non-UTF-8) password in 3.1.1.
    let bytes = connect4(0xC2, &cat(&[&s(b"id"), &s(b"u"), &s(b"\xff\xfe")]));
    let Packet::Connect(c) = dec_one(&bytes, None) else {
        panic!()
    };
    assert_eq!(c.password.as_deref(), Some(&b"\xff\xfe"[..]));
    assert_eq!(c.protocol, Some(V4));
    // Non-minimal variable byte integers are accepted (lenient).
    assert_eq!(dec_one(&[0xC0, 0x80, 0x00], Some(V4)), Packet::PingReq);
}

#[test]
fn reason_codes_of_errors() {
    assert_eq!(CodecError::Malformed("x").reason_code(), 0x81);
    assert_eq!(CodecError::Protocol("x").reason_code(), 0x82);
    assert_eq!(
        CodecError::PacketTooLarge { size: 2, max: 1 }.reason_code(),
        0x95
    );
    assert_eq!(
        CodecError::UnsupportedProtocolVersion(3).reason_code(),
        0x84
    );
    assert_eq!(CodecError::TopicNameInvalid("x").reason_code(), 0x90);
    assert_eq!(CodecError::TopicAliasInvalid.reason_code(), 0x94);
    assert_eq!(CodecError::StringTooLong(70_000).reason_code(), 0x83);
    assert_eq!(CodecError::Encode("x").reason_code(), 0x83);
}

// ---------------------------------------------------------------------------
// size limits
// ---------------------------------------------------------------------------

#[test]
fn max_incoming_is_enforced_from_the_fixed_header() {
    for v in [V4, V5] {
        let p = Packet::Publish(Publish {
            topic: "t".into(),
            payload: Bytes::from(vec![0; 200]),
            ..Publish::default()
        });
        let bytes = enc(&p, v);
        let total = bytes.len();
        // Only the fixed header has arrived: refused before the body is buffered.
        let mut head = BytesMut::from(&bytes[..3]);
        assert_eq!(
            decode(&mut head, Some(v), total - 1),
            Err(CodecError::PacketTooLarge {
                size: total,
                max: total - 1
            })
        );
        let mut whole = BytesMut::from(&bytes[..]);
        assert_eq!(decode(&mut whole, Some(v), total).unwrap(), Some(p));
    }
    // The limit counts the fixed header: a CONNECT before the protocol is known.
    let c = connect4(0x02, &s(b"id"));
    assert!(matches!(
        dec_with_max(&c, None, c.len() - 1),
        Err(CodecError::PacketTooLarge { .. })
    ));
    assert!(dec_with_max(&c, None, c.len()).unwrap().is_some());
    // Declared 256 MB: refused at once, nothing buffered.
    let huge = [0x30, 0xFF, 0xFF, 0xFF, 0x7F];
    assert_eq!(
        dec_with_max(&huge, Some(V5), MAX)
            .unwrap_err()
            .reason_code(),
        TOO_LARGE
    );
}

fn dec_with_max(
    bytes: &[u8],
    state: Option<Protocol>,
    max: usize,
) -> Result<Option<Packet>, CodecError> {
    let mut b = BytesMut::from(bytes);
    decode(&mut b, state, max)
}

#[test]
fn max_outgoing_refuses_and_writes_nothing() {
    for v in [V4, V5] {
        for p in samples(v) {
            if matches!(p, Packet::Auth(_)) && v == V4 {
                continue;
            }
            let size = enc(&p, v).len() as u32;
            let mut buf = BytesMut::from(&b"prior"[..]);
            assert_eq!(
                encode(&p, v, &mut buf, Some(size - 1)),
                Err(CodecError::PacketTooLarge {
                    size: size as usize,
                    max: size as usize - 1
                })
            );
            assert_eq!(&buf[..], b"prior", "{p:?}");
            encode(&p, v, &mut buf, Some(size)).unwrap();
            assert_eq!(buf.len(), 5 + size as usize);
        }
    }
}

#[test]
fn encode_errors_write_nothing() {
    let long = "x".repeat(65_536);
    let ok_len = "x".repeat(65_535);
    let long_user = vec![(long.clone(), "v".to_string())];
    let cases: Vec<(&str, Packet, Protocol)> = vec![
        (
            "long topic",
            Packet::Publish(Publish {
                topic: long.clone(),
                ..Publish::default()
            }),
            V4,
        ),
        (
            "long user property key (PUBLISH)",
            Packet::Publish(Publish {
                topic: "a".into(),
                properties: PublishProperties {
                    user_properties: long_user.clone(),
                    ..PublishProperties::default()
                },
                ..Publish::default()
            }),
            V5,
        ),
        (
            "long correlation data",
            Packet::Publish(Publish {
                topic: "a".into(),
                properties: PublishProperties {
                    correlation_data: Some(Bytes::from(long.clone())),
                    ..PublishProperties::default()
                },
                ..Publish::default()
            }),
            V5,
        ),
        (
            "long client id",
            Packet::Connect(Box::new(Connect {
                client_id: long.clone(),
                ..Connect::default()
            })),
            V4,
        ),
        (
            "long password",
            Packet::Connect(Box::new(Connect {
                username: Some("u".into()),
                password: Some(Bytes::from(long.clone())),
                ..Connect::default()
            })),
            V5,
        ),
        (
            "long will payload",
            Packet::Connect(Box::new(Connect {
                will: Some(Will {
                    topic: "w".into(),
                    payload: Bytes::from(long.clone()),
                    ..Will::default()
                }),
                ..Connect::default()
            })),
            V4,
        ),
        (
            "long reason string (PUBACK via rumqttc)",
            Packet::PubAck(Ack {
                pkid: 1,
                reason_string: Some(long.clone()),
                ..Ack::default()
            }),
            V5,
        ),
        (
            "long filter v4",
            Packet::Subscribe(Subscribe {
                pkid: 1,
                filters: vec![SubscribeFilter {
                    filter: long.clone(),
                    ..SubscribeFilter::default()
                }],
                ..Subscribe::default()
            }),
            V4,
        ),
        (
            "long unsubscribe filter v5",
            Packet::Unsubscribe(Unsubscribe {
                pkid: 1,
                filters: vec![long.clone()],
                ..Unsubscribe::default()
            }),
            V5,
        ),
        (
            "long CONNACK reason string",
            Packet::ConnAck(ConnAck {
                properties: ConnAckProperties {
                    reason_string: Some(long.clone()),
                    ..ConnAckProperties::default()
                },
                ..ConnAck::default()
            }),
            V5,
        ),
        (
            "long DISCONNECT user property",
            Packet::Disconnect(Disconnect {
                user_properties: long_user.clone(),
                ..Disconnect::default()
            }),
            V5,
        ),
        (
            "long AUTH data",
            Packet::Auth(Auth {
                data: Some(Bytes::from(long.clone())),
                ..Auth::default()
            }),
            V5,
        ),
        (
            "PUBLISH QoS 1 pkid 0",
            Packet::Publish(Publish {
                qos: QoS::AtLeastOnce,
                topic: "a".into(),
                ..Publish::default()
            }),
            V5,
        ),
        (
            "PUBLISH QoS 2 pkid 0 v4",
            Packet::Publish(Publish {
                qos: QoS::ExactlyOnce,
                topic: "a".into(),
                ..Publish::default()
            }),
            V4,
        ),
        (
            "PUBLISH QoS 0 with DUP",
            Packet::Publish(Publish {
                dup: true,
                topic: "a".into(),
                ..Publish::default()
            }),
            V4,
        ),
        (
            "PUBLISH wildcard topic",
            Packet::Publish(Publish {
                topic: "a/#".into(),
                ..Publish::default()
            }),
            V5,
        ),
        (
            "PUBLISH empty topic without alias",
            Packet::Publish(Publish::default()),
            V5,
        ),
        (
            "PUBLISH empty topic v4 (no aliases)",
            Packet::Publish(Publish {
                properties: PublishProperties {
                    topic_alias: Some(1),
                    ..PublishProperties::default()
                },
                ..Publish::default()
            }),
            V4,
        ),
        (
            "subscription identifier 0",
            Packet::Publish(Publish {
                topic: "a".into(),
                properties: PublishProperties {
                    subscription_identifiers: vec![0],
                    ..PublishProperties::default()
                },
                ..Publish::default()
            }),
            V5,
        ),
        (
            "subscription identifier too large",
            Packet::Subscribe(Subscribe {
                pkid: 1,
                filters: vec![SubscribeFilter::default()],
                subscription_identifier: Some(268_435_456),
                ..Subscribe::default()
            }),
            V5,
        ),
        ("PUBACK pkid 0", Packet::PubAck(Ack::default()), V4),
        (
            "SUBSCRIBE without filters",
            Packet::Subscribe(Subscribe {
                pkid: 1,
                ..Subscribe::default()
            }),
            V5,
        ),
        (
            "retain handling 3",
            Packet::Subscribe(Subscribe {
                pkid: 1,
                filters: vec![SubscribeFilter {
                    retain_handling: 3,
                    ..SubscribeFilter::default()
                }],
                ..Subscribe::default()
            }),
            V5,
        ),
        (
            "UNSUBSCRIBE without filters",
            Packet::Unsubscribe(Unsubscribe {
                pkid: 1,
                ..Unsubscribe::default()
            }),
            V4,
        ),
        (
            "PUBACK reason 0x92",
            Packet::PubAck(Ack {
                pkid: 1,
                reason: 0x92,
                ..Ack::default()
            }),
            V5,
        ),
        (
            "PUBREL reason 0x10",
            Packet::PubRel(Ack {
                pkid: 1,
                reason: 0x10,
                ..Ack::default()
            }),
            V5,
        ),
        (
            "SUBACK reason 0x03 v4",
            Packet::SubAck(SubAck {
                pkid: 1,
                reasons: vec![3],
                ..SubAck::default()
            }),
            V4,
        ),
        (
            "SUBACK reason 0x11 v5",
            Packet::SubAck(SubAck {
                pkid: 1,
                reasons: vec![0x11],
                ..SubAck::default()
            }),
            V5,
        ),
        (
            "UNSUBACK without reasons v5",
            Packet::UnsubAck(UnsubAck {
                pkid: 1,
                reasons: vec![],
            }),
            V5,
        ),
        (
            "CONNACK reason 0x8B v5",
            Packet::ConnAck(ConnAck {
                reason: 0x8B,
                ..ConnAck::default()
            }),
            V5,
        ),
        (
            "DISCONNECT reason 0x01",
            Packet::Disconnect(Disconnect {
                reason: 0x01,
                ..Disconnect::default()
            }),
            V5,
        ),
        ("AUTH in 3.1.1", Packet::Auth(Auth::default()), V4),
        (
            "AUTH reason 0x80",
            Packet::Auth(Auth {
                reason: 0x80,
                ..Auth::default()
            }),
            V5,
        ),
        (
            "password without user name v4",
            Packet::Connect(Box::new(Connect {
                password: Some(Bytes::from_static(b"pw")),
                ..Connect::default()
            })),
            V4,
        ),
        (
            "will with a topic alias",
            Packet::Connect(Box::new(Connect {
                will: Some(Will {
                    topic: "w".into(),
                    properties: PublishProperties {
                        topic_alias: Some(1),
                        ..PublishProperties::default()
                    },
                    ..Will::default()
                }),
                ..Connect::default()
            })),
            V5,
        ),
    ];
    for (name, p, v) in &cases {
        let mut buf = BytesMut::from(&b"prior"[..]);
        let r = encode(p, *v, &mut buf, None);
        assert!(r.is_err(), "{name}: encoded");
        assert_eq!(&buf[..], b"prior", "{name}: wrote something");
    }
    // The string limit is exactly 65535 bytes.
    let p = Packet::Publish(Publish {
        topic: ok_len.clone(),
        ..Publish::default()
    });
    assert_eq!(dec_one(&enc(&p, V4), Some(V4)), p);
    let mut buf = BytesMut::new();
    assert_eq!(
        encode(
            &Packet::Publish(Publish {
                topic: long,
                ..Publish::default()
            }),
            V5,
            &mut buf,
            None
        ),
        Err(CodecError::StringTooLong(65_536))
    );
}

// ---------------------------------------------------------------------------
// DISCONNECT, AUTH, CONNACK for 3.1.1 clients (rumqttc defects 1, 3, 4)
// ---------------------------------------------------------------------------

#[test]
fn disconnect_v5_short_forms_decode() {
    assert_eq!(
        dec_one(&[0xE0, 0x00], Some(V5)),
        Packet::Disconnect(Disconnect::default())
    );
    assert_eq!(
        dec_one(&[0xE0, 0x01, 0x8E], Some(V5)),
        Packet::Disconnect(Disconnect {
            reason: 0x8E,
            ..Disconnect::default()
        })
    );
    assert_eq!(
        dec_one(&[0xE0, 0x02, 0x04, 0x00], Some(V5)),
        Packet::Disconnect(Disconnect {
            reason: 0x04,
            ..Disconnect::default()
        })
    );
    assert_eq!(
        dec_one(&[0xE0, 0x00], Some(V4)),
        Packet::Disconnect(Disconnect::default())
    );
}

#[test]
fn disconnect_v5_encodes_reason_and_property_length() {
    let d = |reason| {
        Packet::Disconnect(Disconnect {
            reason,
            ..Disconnect::default()
        })
    };
    assert_eq!(&enc(&d(0x8E), V5)[..], [0xE0, 0x02, 0x8E, 0x00]);
    assert_eq!(&enc(&d(0x00), V5)[..], [0xE0, 0x02, 0x00, 0x00]);
    // 3.1.1 has no reason code.
    assert_eq!(&enc(&d(0x8E), V4)[..], [0xE0, 0x00]);
    let with_props = Packet::Disconnect(Disconnect {
        reason: 0x8B,
        reason_string: Some("bye".into()),
        ..Disconnect::default()
    });
    assert_eq!(
        &enc(&with_props, V5)[..],
        [0xE0, 0x08, 0x8B, 0x06, 0x1F, 0x00, 0x03, b'b', b'y', b'e']
    );
}

#[test]
fn rumqttc_disconnect_bytes_are_what_we_work_around() {
    // rumqttc's own v5 writer emits a wrong remaining length for a bare reason:
    // we read the DISCONNECT and then refuse the stray byte.
    let mut b = BytesMut::new();
    r5::Disconnect::new(r5::DisconnectReasonCode::SessionTakenOver)
        .write(&mut b)
        .unwrap();
    assert_eq!(&b[..], [0xE0, 0x01, 0x8E, 0x00]);
    assert_eq!(
        decode(&mut b, Some(V5), MAX).unwrap(),
        Some(Packet::Disconnect(Disconnect {
            reason: 0x8E,
            ..Disconnect::default()
        }))
    );
    assert_eq!(
        decode(&mut b, Some(V5), MAX).unwrap_err().reason_code(),
        0x81
    );
    // And its reader refuses the `E0 00` its own client sends.
    let mut b = BytesMut::from(&[0xE0, 0x00][..]);
    assert!(r5::Packet::read(&mut b, None).is_err());
}

#[test]
fn auth_roundtrip_and_short_form() {
    let full = Packet::Auth(Auth {
        reason: reason::RE_AUTHENTICATE,
        method: Some("SCRAM-SHA-256".into()),
        data: Some(Bytes::from_static(b"\x00\x01\x02")),
        reason_string: Some("again".into()),
        user_properties: user(),
    });
    let bytes = enc(&full, V5);
    assert_eq!(bytes[0], 0xF0);
    assert_eq!(dec_one(&bytes, Some(V5)), full);
    assert_eq!(feed_bytewise(&bytes, Some(V5)), full);
    assert_eq!(
        dec_one(&[0xF0, 0x00], Some(V5)),
        Packet::Auth(Auth::default())
    );
    assert_eq!(
        dec_one(&[0xF0, 0x01, 0x18], Some(V5)),
        Packet::Auth(Auth {
            reason: 0x18,
            ..Auth::default()
        })
    );
    assert_eq!(
        &enc(&Packet::Auth(Auth::default()), V5)[..],
        [0xF0, 0x02, 0x00, 0x00]
    );
    // Exact bytes of a method + data AUTH.
    let a = Packet::Auth(Auth {
        reason: 0x18,
        method: Some("M".into()),
        data: Some(Bytes::from_static(b"D")),
        ..Auth::default()
    });
    assert_eq!(
        &enc(&a, V5)[..],
        [0xF0, 0x0A, 0x18, 0x08, 0x15, 0x00, 0x01, b'M', 0x16, 0x00, 0x01, b'D']
    );
}

#[test]
fn connack_for_v3_clients_maps_every_reason() {
    let all_v5_connack_reasons = [
        0x00, 0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8A, 0x8C, 0x90, 0x95,
        0x97, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9F, 0x8B,
    ];
    for reason in all_v5_connack_reasons {
        let expected: u8 = match reason {
            0x00 => 0,
            0x84 => 1,
            0x85 => 2,
            0x88 | 0x89 | 0x8B => 3,
            0x86 => 4,
            0x87 | 0x8C => 5,
            _ => 3,
        };
        let p = Packet::ConnAck(ConnAck {
            session_present: true,
            reason,
            properties: ConnAckProperties {
                reason_string: Some("dropped in 3.1.1".into()),
                ..ConnAckProperties::default()
            },
        });
        let bytes = enc(&p, V4);
        // Session present is only kept on success.
        assert_eq!(
            &bytes[..],
            [0x20, 0x02, u8::from(expected == 0), expected],
            "reason {reason:#04x}"
        );
        // A 3.1.1 client (rumqttc's) parses it.
        let mut b = bytes.clone();
        let r4::Packet::ConnAck(c) = r4::Packet::read(&mut b, 1024).unwrap() else {
            panic!()
        };
        assert_eq!(c.code as u8, expected);
        // And our own reader gives the canonical v5 reason back.
        let Packet::ConnAck(back) = dec_one(&bytes, Some(V4)) else {
            panic!()
        };
        let canonical = [0x00, 0x84, 0x85, 0x88, 0x86, 0x87][usize::from(expected)];
        assert_eq!(back.reason, canonical);
    }
}

#[test]
fn unsupported_protocol_gets_a_connack_every_client_can_parse() {
    for (name, level) in [(&b"MQIsdp"[..], 3u8), (&b"MQTT"[..], 3), (&b"MQTT"[..], 6)] {
        let bytes = frame(0x10, &cat(&[&s(name), &[level, 2, 0, 60], &s(b"old")]));
        let e = err(&bytes, None);
        assert_eq!(e, CodecError::UnsupportedProtocolVersion(level));
        assert_eq!(e.reason_code(), 0x84);
        let refusal = Packet::ConnAck(ConnAck {
            reason: e.reason_code(),
            ..ConnAck::default()
        });
        assert_eq!(&enc(&refusal, V4)[..], [0x20, 0x02, 0x00, 0x01]);
    }
}

#[test]
fn level_5_connect_is_read_as_v5() {
    // rumqttc's v4 reader would parse this as 3.1.1 (defect 5).
    let bytes = connect5(0x02, &[5, 0x11, 0, 0, 0, 9], &s(b"id"));
    let Packet::Connect(c) = dec_one(&bytes, None) else {
        panic!()
    };
    assert_eq!(c.protocol, Some(V5));
    assert_eq!(c.session_expiry_interval, Some(9));
    assert_eq!(c.client_id, "id");
}

// ---------------------------------------------------------------------------
// interoperability with rumqttc's (client-side) packets
// ---------------------------------------------------------------------------

#[test]
fn rumqttc_client_packets_decode() {
    // v4 CONNECT with will and login.
    let mut c = r4::Connect::new("dev-1");
    c.keep_alive = 30;
    c.set_login("user", "pass");
    c.last_will = Some(r4::LastWill::new(
        "dev/1/lwt",
        "gone",
        rumqttc::QoS::AtLeastOnce,
        true,
    ));
    let mut b = BytesMut::new();
    c.write(&mut b).unwrap();
    let Packet::Connect(got) = dec_one(&b, None) else {
        panic!()
    };
    assert_eq!(got.protocol, Some(V4));
    assert_eq!(
        (got.client_id.as_str(), got.keep_alive, got.clean_start),
        ("dev-1", 30, true)
    );
    assert_eq!(got.username.as_deref(), Some("user"));
    assert_eq!(got.password.as_deref(), Some(&b"pass"[..]));
    let w = got.will.unwrap();
    assert_eq!(
        (w.topic.as_str(), w.qos, w.retain),
        ("dev/1/lwt", QoS::AtLeastOnce, true)
    );

    // v5 CONNECT with properties, will properties and login.
    let connect = r5::Connect {
        keep_alive: 10,
        client_id: "dev-5".into(),
        clean_start: false,
        properties: Some(r5::ConnectProperties {
            session_expiry_interval: Some(600),
            receive_maximum: Some(20),
            max_packet_size: Some(4096),
            topic_alias_max: Some(5),
            request_response_info: Some(1),
            request_problem_info: Some(0),
            user_properties: vec![("a".into(), "b".into())],
            authentication_method: None,
            authentication_data: None,
        }),
    };
    let will = r5::LastWill::new(
        "dev/5/lwt",
        "bye",
        rumqttc::v5::mqttbytes::QoS::ExactlyOnce,
        false,
        Some(r5::LastWillProperties {
            delay_interval: Some(15),
            payload_format_indicator: Some(1),
            message_expiry_interval: Some(100),
            content_type: Some("text/plain".into()),
            response_topic: Some("r".into()),
            correlation_data: Some(Bytes::from_static(b"c")),
            user_properties: vec![("x".into(), "y".into())],
        }),
    );
    let login = r5::Login::new("u5", "p5");
    let mut b = BytesMut::new();
    r5::Packet::Connect(connect, Some(will), Some(login))
        .write(&mut b, None)
        .unwrap();
    let Packet::Connect(got) = dec_one(&b, None) else {
        panic!()
    };
    assert_eq!(got.protocol, Some(V5));
    assert_eq!(got.session_expiry_interval, Some(600));
    assert_eq!(got.receive_maximum, Some(20));
    assert_eq!(got.maximum_packet_size, Some(4096));
    assert_eq!(got.topic_alias_maximum, Some(5));
    assert_eq!(
        got.user_properties,
        vec![("a".to_string(), "b".to_string())]
    );
    let w = got.will.as_ref().unwrap();
    assert_eq!(w.delay_interval, 15);
    assert_eq!(w.qos, QoS::ExactlyOnce);
    assert_eq!(w.properties.content_type.as_deref(), Some("text/plain"));
    assert_eq!(w.properties.correlation_data.as_deref(), Some(&b"c"[..]));
    assert_eq!(got.username.as_deref(), Some("u5"));
    assert_eq!(got.password.as_deref(), Some(&b"p5"[..]));

    // v5 PUBLISH with properties.
    let mut publish = r5::Publish::new(
        "a/b",
        rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
        "data",
        Some(r5::PublishProperties {
            payload_format_indicator: Some(1),
            message_expiry_interval: Some(5),
            topic_alias: Some(2),
            response_topic: Some("re".into()),
            correlation_data: Some(Bytes::from_static(b"id")),
            user_properties: vec![("k".into(), "v".into())],
            subscription_identifiers: vec![],
            content_type: Some("t".into()),
        }),
    );
    publish.pkid = 7;
    let mut b = BytesMut::new();
    publish.write(&mut b).unwrap();
    let Packet::Publish(got) = dec_one(&b, Some(V5)) else {
        panic!()
    };
    assert_eq!(
        (got.topic.as_str(), got.pkid, &got.payload[..]),
        ("a/b", 7, &b"data"[..])
    );
    assert_eq!(got.properties.topic_alias, Some(2));
    assert_eq!(got.properties.content_type.as_deref(), Some("t"));

    // v5 SUBSCRIBE with options.
    let sub = r5::Subscribe {
        pkid: 3,
        filters: vec![r5::Filter {
            path: "x/#".into(),
            qos: rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
            nolocal: true,
            preserve_retain: true,
            retain_forward_rule: r5::RetainForwardRule::OnNewSubscribe,
        }],
        properties: Some(r5::SubscribeProperties {
            id: Some(42),
            user_properties: vec![],
        }),
    };
    let mut b = BytesMut::new();
    sub.write(&mut b).unwrap();
    assert_eq!(
        dec_one(&b, Some(V5)),
        Packet::Subscribe(Subscribe {
            pkid: 3,
            filters: vec![SubscribeFilter {
                filter: "x/#".into(),
                qos: QoS::AtLeastOnce,
                no_local: true,
                retain_as_published: true,
                retain_handling: 1,
            }],
            subscription_identifier: Some(42),
            user_properties: vec![],
        })
    );
}

#[test]
fn our_server_packets_parse_in_rumqttc() {
    for p in samples(V5) {
        if matches!(
            p,
            Packet::Connect(_) | Packet::Disconnect(_) | Packet::Auth(_)
        ) {
            continue; // rumqttc's reader cannot read these (defects 1, 3) / not sent by us
        }
        let mut b = enc(&p, V5);
        let got = r5::Packet::read(&mut b, None)
            .unwrap_or_else(|e| panic!("rumqttc v5 cannot read our {p:?}: {e}"));
        assert!(b.is_empty(), "{got:?}");
        if let (Packet::Publish(ours), r5::Packet::Publish(theirs)) = (&p, &got) {
            assert_eq!(&theirs.topic[..], ours.topic.as_bytes());
            // rumqttc's reader miscounts subscription identifiers (see
            // rumqttc_v5_reader_miscounts_subscription_identifiers): its payload
            // is only right with at most one.
            if ours.properties.subscription_identifiers.len() <= 1 {
                assert_eq!(theirs.payload, ours.payload);
            }
        }
    }
    for p in samples(V4) {
        if matches!(p, Packet::Connect(_)) {
            continue; // rumqttc's v4 reader refuses binary passwords (defect 7)
        }
        let mut b = enc(&p, V4);
        let got = r4::Packet::read(&mut b, MAX)
            .unwrap_or_else(|e| panic!("rumqttc v4 cannot read our {p:?}: {e}"));
        assert!(b.is_empty(), "{got:?}");
    }
}

/// A client-side rumqttc defect, for the record: its v5 property reader counts
/// the identifier byte of a subscription identifier twice, so with several
/// identifiers (which the broker sends for overlapping subscriptions) the last
/// ones end up in the payload. Our bytes are right: the same happens to
/// rumqttc's own writer's bytes, and our reader gets them all.
#[test]
fn rumqttc_v5_reader_miscounts_subscription_identifiers() {
    let ids = vec![1usize, 1, 1, 1, 1, 1];
    let p = r5::Publish::new(
        "t",
        rumqttc::v5::mqttbytes::QoS::AtMostOnce,
        "PAY",
        Some(r5::PublishProperties {
            subscription_identifiers: ids,
            ..Default::default()
        }),
    );
    let mut b = BytesMut::new();
    p.write(&mut b).unwrap();
    let ours = dec_one(&b, Some(V5));
    let Packet::Publish(ours) = ours else {
        panic!()
    };
    assert_eq!(ours.properties.subscription_identifiers, vec![1; 6]);
    assert_eq!(&ours.payload[..], b"PAY");
    let r5::Packet::Publish(theirs) = r5::Packet::read(&mut b, None).unwrap() else {
        panic!()
    };
    assert_ne!(&theirs.payload[..], b"PAY");
}

// ---------------------------------------------------------------------------
// never panics
// ---------------------------------------------------------------------------

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Decodes like a server (`state` None: CONNECT first), until incomplete or an
/// error; every packet decoded must re-encode and decode to itself.
fn drive(bytes: &[u8], mut state: Option<Protocol>) -> usize {
    let mut buf = BytesMut::from(bytes);
    let mut n = 0;
    while let Ok(Some(p)) = decode(&mut buf, state, 4096) {
        n += 1;
        let reading_state = state;
        if let Packet::Connect(c) = &p {
            state = c.protocol;
        }
        let v = state.expect("a protocol after CONNECT");
        let mut out = BytesMut::new();
        encode(&p, v, &mut out, None)
            .unwrap_or_else(|e| panic!("decoded {p:?} does not re-encode: {e}"));
        let again = decode(&mut out, reading_state, usize::MAX)
            .unwrap_or_else(|e| panic!("re-encoded {p:?} does not decode: {e} ({out:02x?})"));
        assert_eq!(again.as_ref(), Some(&p));
        assert!(out.is_empty());
    }
    n
}

#[test]
fn never_panics_on_random_and_mutated_input() {
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    let mut corpus: Vec<(Vec<u8>, Option<Protocol>)> = Vec::new();
    for v in [V4, V5] {
        let samples = samples(v);
        let connect = enc(&samples[1], v);
        for p in &samples {
            let bytes = enc(p, v).to_vec();
            corpus.push((bytes.clone(), state_for(p, v)));
            if !matches!(p, Packet::Connect(_)) {
                // A session: CONNECT then the packet, read from the start.
                corpus.push((cat(&[&connect, &bytes]), None));
            }
        }
    }
    let mut decoded = 0usize;
    let iterations = 200_000;
    for i in 0..iterations {
        let (mut bytes, state) = if i % 5 == 0 {
            let len = rng.below(48);
            let bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            let state = [None, Some(V4), Some(V5)][rng.below(3)];
            (bytes, state)
        } else {
            corpus[rng.below(corpus.len())].clone()
        };
        for _ in 0..=rng.below(4) {
            if bytes.is_empty() {
                bytes.push(rng.next() as u8);
                continue;
            }
            let at = rng.below(bytes.len());
            match rng.below(6) {
                0 => bytes[at] ^= 1 << rng.below(8),
                1 => bytes[at] = rng.next() as u8,
                2 => bytes.insert(at, rng.next() as u8),
                3 => {
                    bytes.remove(at);
                }
                4 => bytes.truncate(at),
                _ => {
                    let end = (at + 1 + rng.below(8)).min(bytes.len());
                    let chunk = bytes[at..end].to_vec();
                    bytes.splice(at..at, chunk);
                }
            }
        }
        decoded += drive(&bytes, state);
    }
    // The mutations leave plenty of packets valid: the oracle was exercised.
    assert!(decoded > iterations / 10, "only {decoded} packets decoded");
}

// ---------------------------------------------------------------------------
// fuzz seed corpus (node-a/fuzz/corpus/decode)
// ---------------------------------------------------------------------------

fn seed_corpus() -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for (v, tag) in [(V4, "v4"), (V5, "v5")] {
        let samples = samples(v);
        let connect = enc(&samples[1], v).to_vec();
        let mut session = connect.clone();
        let mut stream = Vec::new();
        for p in &samples {
            if !matches!(p, Packet::Connect(_)) {
                let b = enc(p, v);
                session.extend_from_slice(&b);
                stream.extend_from_slice(&b);
            }
        }
        out.push((format!("{tag}-session"), session));
        out.push((format!("{tag}-stream"), stream));
        out.push((format!("{tag}-connect"), connect));
        for (i, p) in samples.iter().enumerate() {
            let name = match p {
                Packet::Publish(_) if i == 7 => "publish-qos2",
                Packet::Subscribe(_) => "subscribe",
                Packet::ConnAck(c) if c.reason == 0 => "connack",
                Packet::PubRec(_) => "pubrec",
                Packet::Auth(a) if a.method.is_some() => "auth",
                Packet::Disconnect(d) if d.reason_string.is_some() => "disconnect",
                _ => continue,
            };
            out.push((format!("{tag}-{name}"), enc(p, v).to_vec()));
        }
    }
    out
}

/// Writes the seed corpus: `cargo test -p node-a --test codec -- --ignored write_fuzz_seed_corpus`.
#[test]
#[ignore = "writes node-a/fuzz/corpus/decode; run by hand when the samples change"]
fn write_fuzz_seed_corpus() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/decode");
    std::fs::create_dir_all(&dir).unwrap();
    for (name, bytes) in seed_corpus() {
        std::fs::write(dir.join(name), bytes).unwrap();
    }
}

#[test]
fn fuzz_seed_corpus_is_valid() {
    let corpus = seed_corpus();
    assert!((10..=20).contains(&corpus.len()), "{} seeds", corpus.len());
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/decode");
    for (name, bytes) in &corpus {
        // The checked-in seeds are what the samples encode to today.
        if dir.is_dir() {
            let on_disk = std::fs::read(dir.join(name)).unwrap_or_default();
            assert!(
                on_disk == *bytes,
                "fuzz seed {name} is stale: run the ignored test write_fuzz_seed_corpus"
            );
        }
        let state = if name.ends_with("-session") || name.ends_with("-connect") {
            None
        } else {
            Some(if name.starts_with("v4") { V4 } else { V5 })
        };
        let mut buf = BytesMut::from(&bytes[..]);
        let mut st = state;
        while !buf.is_empty() {
            let p = decode(&mut buf, st, MAX)
                .unwrap_or_else(|e| panic!("seed {name}: {e}"))
                .unwrap_or_else(|| panic!("seed {name}: incomplete"));
            if let Packet::Connect(c) = p {
                st = c.protocol;
            }
        }
    }
}
