//! The few MQTT 3.1.1 packets the bench speaks, encoded and decoded by hand:
//! CONNECT, SUBSCRIBE, PUBLISH (QoS 0), PINGREQ and DISCONNECT out; CONNACK,
//! SUBACK, PUBLISH and PINGRESP in. They are small enough that a crate would
//! cost more to vet than to write, and the decoder must never panic on the
//! bytes a broker sends.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Packet type nibbles (MQTT 3.1.1 §2.2.1).
const CONNECT: u8 = 1;
const CONNACK: u8 = 2;
const PUBLISH: u8 = 3;
const SUBSCRIBE: u8 = 8;
const SUBACK: u8 = 9;
const PINGREQ: u8 = 12;
const PINGRESP: u8 = 13;
const DISCONNECT: u8 = 14;

/// The largest remaining length MQTT can express (four length bytes).
pub const MAX_REMAINING: usize = 268_435_455;

/// A packet from the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    /// CONNACK: the session-present flag and the return code (0 = accepted).
    ConnAck {
        /// The broker kept a session for this client id.
        session_present: bool,
        /// 0 accepted; 1..=5 refused (§3.2.2.3).
        code: u8,
    },
    /// SUBACK: the packet id it answers and one return code per topic (0x80 = failure).
    SubAck {
        /// The SUBSCRIBE's packet id.
        packet_id: u16,
        /// Granted QoS per topic, or 0x80.
        codes: Bytes,
    },
    /// PUBLISH: a message on a topic (the packet id of QoS 1 and 2 is skipped).
    Publish {
        /// The topic name.
        topic: Bytes,
        /// The application payload.
        payload: Bytes,
    },
    /// PINGRESP.
    PingResp,
    /// Any other well-framed packet, by its type nibble (a broker sends none to this client).
    Other(u8),
}

/// Why bytes from the broker are not a valid packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError(pub &'static str);

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "malformed MQTT packet: {}", self.0)
    }
}

impl std::error::Error for DecodeError {}

/// CONNECT with a clean session, no will, no credentials.
pub fn connect(client_id: &str, keepalive_secs: u16, out: &mut BytesMut) {
    let mut body = BytesMut::with_capacity(12 + client_id.len());
    put_str(&mut body, b"MQTT");
    body.put_u8(4); // protocol level 3.1.1
    body.put_u8(0x02); // clean session
    body.put_u16(keepalive_secs);
    put_str(&mut body, client_id.as_bytes());
    put_packet(out, CONNECT << 4, &body);
}

/// SUBSCRIBE to one topic filter at `qos`.
pub fn subscribe(packet_id: u16, filter: &str, qos: u8, out: &mut BytesMut) {
    let mut body = BytesMut::with_capacity(5 + filter.len());
    body.put_u16(packet_id);
    put_str(&mut body, filter.as_bytes());
    body.put_u8(qos & 0x03);
    put_packet(out, (SUBSCRIBE << 4) | 0x02, &body);
}

/// PUBLISH at QoS 0, not retained.
pub fn publish(topic: &str, payload: &[u8], out: &mut BytesMut) {
    let mut body = BytesMut::with_capacity(2 + topic.len() + payload.len());
    put_str(&mut body, topic.as_bytes());
    body.put_slice(payload);
    put_packet(out, PUBLISH << 4, &body);
}

/// PINGREQ.
pub fn pingreq(out: &mut BytesMut) {
    put_packet(out, PINGREQ << 4, &[]);
}

/// DISCONNECT.
pub fn disconnect(out: &mut BytesMut) {
    put_packet(out, DISCONNECT << 4, &[]);
}

fn put_str(out: &mut BytesMut, s: &[u8]) {
    // MQTT strings are at most 65,535 bytes; the bench's topics and ids are short.
    let len = u16::try_from(s.len()).unwrap_or(u16::MAX);
    out.put_u16(len);
    out.put_slice(&s[..usize::from(len)]);
}

fn put_packet(out: &mut BytesMut, first: u8, body: &[u8]) {
    out.put_u8(first);
    let mut len = body.len().min(MAX_REMAINING);
    loop {
        let mut byte = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            byte |= 0x80;
        }
        out.put_u8(byte);
        if len == 0 {
            break;
        }
    }
    out.put_slice(body);
}

/// Takes one whole packet off the front of `input`: `Ok(None)` until one is
/// there; an error for bytes that are no MQTT packet or one longer than `max_len`.
pub fn decode(input: &mut BytesMut, max_len: usize) -> Result<Option<Packet>, DecodeError> {
    let Some(&first) = input.first() else {
        return Ok(None);
    };
    let mut remaining = 0usize;
    let mut header = 1;
    loop {
        let Some(&byte) = input.get(header) else {
            return Ok(None);
        };
        remaining |= usize::from(byte & 0x7f) << (7 * (header - 1));
        header += 1;
        if byte & 0x80 == 0 {
            break;
        }
        if header > 4 {
            return Err(DecodeError("remaining length longer than four bytes"));
        }
    }
    if remaining > max_len {
        return Err(DecodeError("packet longer than the limit"));
    }
    if input.len() < header + remaining {
        return Ok(None);
    }
    input.advance(header);
    let body = input.split_to(remaining).freeze();
    parse(first, body).map(Some)
}

fn parse(first: u8, mut body: Bytes) -> Result<Packet, DecodeError> {
    let flags = first & 0x0f;
    match first >> 4 {
        CONNACK => {
            if body.len() != 2 || flags != 0 {
                return Err(DecodeError("CONNACK"));
            }
            Ok(Packet::ConnAck {
                session_present: body[0] & 0x01 != 0,
                code: body[1],
            })
        }
        SUBACK => {
            if body.len() < 3 || flags != 0 {
                return Err(DecodeError("SUBACK"));
            }
            let packet_id = body.get_u16();
            Ok(Packet::SubAck {
                packet_id,
                codes: body,
            })
        }
        PUBLISH => {
            let qos = (flags >> 1) & 0x03;
            if qos == 3 || body.len() < 2 {
                return Err(DecodeError("PUBLISH"));
            }
            let topic_len = usize::from(body.get_u16());
            let id_len = if qos > 0 { 2 } else { 0 };
            if body.len() < topic_len + id_len {
                return Err(DecodeError("PUBLISH topic"));
            }
            let topic = body.split_to(topic_len);
            body.advance(id_len);
            Ok(Packet::Publish {
                topic,
                payload: body,
            })
        }
        PINGRESP => {
            if !body.is_empty() || flags != 0 {
                return Err(DecodeError("PINGRESP"));
            }
            Ok(Packet::PingResp)
        }
        0 | 15 => Err(DecodeError("reserved packet type")),
        other => Ok(Packet::Other(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(bytes: &[u8]) -> Result<Option<Packet>, DecodeError> {
        decode(&mut BytesMut::from(bytes), MAX_REMAINING)
    }

    #[test]
    fn connect_is_the_3_1_1_layout() {
        let mut out = BytesMut::new();
        connect("c1", 30, &mut out);
        assert_eq!(
            &out[..],
            &[
                0x10, 14, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 30, 0, 2, b'c', b'1'
            ]
        );
    }

    #[test]
    fn subscribe_ping_and_disconnect_are_the_3_1_1_layout() {
        let mut out = BytesMut::new();
        subscribe(7, "u/1", 0, &mut out);
        assert_eq!(&out[..], &[0x82, 8, 0, 7, 0, 3, b'u', b'/', b'1', 0]);
        out.clear();
        pingreq(&mut out);
        disconnect(&mut out);
        assert_eq!(&out[..], &[0xc0, 0, 0xe0, 0]);
    }

    #[test]
    fn a_publish_round_trips_at_every_length_width() {
        for len in [0, 1, 120, 127, 128, 16_383, 16_384, 2_097_152] {
            let payload = vec![0xa5; len];
            let mut out = BytesMut::new();
            publish("u/42", &payload, &mut out);
            let packet = decode(&mut out, MAX_REMAINING)
                .expect("valid")
                .expect("whole");
            assert_eq!(
                packet,
                Packet::Publish {
                    topic: Bytes::from_static(b"u/42"),
                    payload: Bytes::from(payload)
                }
            );
            assert!(out.is_empty());
        }
    }

    #[test]
    fn broker_packets_decode_and_partial_input_waits() {
        let mut input = BytesMut::from(&[0x20, 2, 0, 0, 0x90, 3, 0, 1, 0, 0xd0, 0, 0x32][..]);
        let max = MAX_REMAINING;
        assert_eq!(
            decode(&mut input, max),
            Ok(Some(Packet::ConnAck {
                session_present: false,
                code: 0
            }))
        );
        assert_eq!(
            decode(&mut input, max),
            Ok(Some(Packet::SubAck {
                packet_id: 1,
                codes: Bytes::from_static(&[0])
            }))
        );
        assert_eq!(decode(&mut input, max), Ok(Some(Packet::PingResp)));
        assert_eq!(decode(&mut input, max), Ok(None));
        // A QoS 1 publish (flags 0x2) carries a packet id after the topic.
        input.extend_from_slice(&[7, 0, 1, b't', 0, 9, b'h', b'i']);
        assert_eq!(
            decode(&mut input, max),
            Ok(Some(Packet::Publish {
                topic: Bytes::from_static(b"t"),
                payload: Bytes::from_static(b"hi")
            }))
        );
    }

    #[test]
    fn malformed_packets_are_errors() {
        assert!(one(&[0x20, 3, 0, 0, 0]).is_err(), "CONNACK of 3 bytes");
        assert!(one(&[0x90, 2, 0, 1]).is_err(), "SUBACK without codes");
        assert!(one(&[0x36, 2, 0, 0]).is_err(), "PUBLISH at QoS 3");
        assert!(one(&[0x30, 2, 0, 9]).is_err(), "topic past the end");
        assert!(one(&[0xd0, 1, 0]).is_err(), "PINGRESP with a body");
        assert!(one(&[0x00, 0]).is_err(), "reserved type 0");
        assert!(
            one(&[0x30, 0xff, 0xff, 0xff, 0xff, 0x01]).is_err(),
            "5 length bytes"
        );
        assert!(
            decode(&mut BytesMut::from(&[0x30, 0x80, 0x01][..]), 100).is_err(),
            "over the limit"
        );
    }

    #[test]
    fn garbage_never_panics() {
        // A deterministic xorshift stream of byte strings, each decoded to the end.
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..20_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let len = (state % 24) as usize;
            let bytes: Vec<u8> = (0..len)
                .map(|i| (state.rotate_left(i as u32 * 8) & 0xff) as u8)
                .collect();
            let mut input = BytesMut::from(&bytes[..]);
            while let Ok(Some(_)) = decode(&mut input, 1 << 20) {}
        }
    }
}
