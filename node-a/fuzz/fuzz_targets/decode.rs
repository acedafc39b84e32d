//! Fuzzes `node_a::protocol::codec::decode` the way a server reads a socket:
//! the same bytes are decoded from the start of a connection (no protocol until
//! CONNECT) and as an established MQTT 3.1.1 and MQTT 5 connection, packet after
//! packet until the decoder wants more bytes or refuses the input.
//!
//! Oracles besides "no panic": `Ok(None)` consumes nothing, and every packet
//! that decodes re-encodes and decodes to itself.

#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use node_a::protocol::codec::{decode, encode};
use node_a::protocol::{Packet, Protocol};

fn drive(data: &[u8], mut state: Option<Protocol>) {
    let mut buf = BytesMut::from(data);
    loop {
        let before = buf.len();
        match decode(&mut buf, state, 1 << 20) {
            Ok(Some(p)) => {
                let reading = state;
                if let Packet::Connect(c) = &p {
                    state = c.protocol;
                }
                let v = state.expect("a protocol is known after CONNECT");
                let mut out = BytesMut::new();
                if let Err(e) = encode(&p, v, &mut out, None) {
                    panic!("decoded {p:?} does not re-encode: {e}");
                }
                match decode(&mut out, reading, usize::MAX) {
                    Ok(Some(again)) => assert_eq!(again, p, "round trip changed the packet"),
                    other => panic!("re-encoded {p:?} decodes to {other:?}"),
                }
                assert!(out.is_empty(), "re-encoding left bytes over");
            }
            Ok(None) => {
                assert_eq!(buf.len(), before, "Ok(None) consumed bytes");
                break;
            }
            Err(_) => break,
        }
    }
}

fuzz_target!(|data: &[u8]| {
    drive(data, None);
    drive(data, Some(Protocol::V4));
    drive(data, Some(Protocol::V5));
});
