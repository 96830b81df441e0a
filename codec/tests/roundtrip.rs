//! Every command's body survives encode → decode unchanged.

mod examples;

use bytes::BytesMut;
use fishchat_codec::{Body, Command, DEFAULT_MAX_FRAME_LEN, FrameDecoder};

#[test]
fn every_command_round_trips() {
    let examples = examples::all();
    let mut stream = BytesMut::new();
    for example in &examples {
        example
            .body
            .encode(example.request_id, DEFAULT_MAX_FRAME_LEN, &mut stream)
            .unwrap();
    }
    let decoder = FrameDecoder::default();
    for example in &examples {
        let frame = decoder.decode(&mut stream).unwrap().unwrap();
        assert_eq!(frame.header.request_id, example.request_id);
        assert_eq!(frame.header.command, example.body.command());
        assert_eq!(frame.body().unwrap(), example.body, "{}", example.note);
    }
    assert!(stream.is_empty());
}

#[test]
fn examples_cover_every_command_in_order() {
    let mut covered: Vec<Command> = examples::all().iter().map(|e| e.body.command()).collect();
    // A command may have several examples (a SEND_ACK that succeeds and one that fails).
    covered.dedup();
    let defined: Vec<Command> = (1..=i32::from(u16::MAX))
        .filter_map(|n| Command::try_from(n).ok())
        .collect();
    assert_eq!(covered, defined);
}

#[test]
fn delivery_ack_is_gone_from_the_wire() {
    // 9 was DELIVERY_ACK: a client still sending it must hear UNKNOWN_COMMAND, not have it
    // decoded as something else.
    assert!(Command::try_from(9).is_err());
    let mut buf = BytesMut::from(&[0u8, 0, 0, 8, 1, 0, 0, 9, 0, 0, 0, 1][..]);
    let err = FrameDecoder::default().decode(&mut buf).unwrap_err();
    assert_eq!(err.code(), fishchat_codec::ErrorCode::UnknownCommand);
}

#[test]
fn a_body_for_the_wrong_command_is_a_clear_error() {
    let login = fishchat_codec::pb::LoginRequest {
        token: "t".repeat(3),
        device_id: "d".into(),
    };
    let mut buf = BytesMut::new();
    fishchat_codec::encode_frame(Command::Read, 1, &login, 1024, &mut buf).unwrap();
    let frame = FrameDecoder::default().decode(&mut buf).unwrap().unwrap();
    let err = frame.body().unwrap_err();
    assert_eq!(err.code(), fishchat_codec::ErrorCode::BadBody);
    assert!(
        matches!(Body::decode(Command::Unspecified, frame.body), Err(e) if e.code() == fishchat_codec::ErrorCode::UnknownCommand)
    );
}
