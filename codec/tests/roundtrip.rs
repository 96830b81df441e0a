//! Every command's body survives encode → decode unchanged.

mod examples;

use bytes::BytesMut;
use fishchat_codec::{Body, Command, DEFAULT_MAX_FRAME_LEN, FrameDecoder};

#[test]
fn every_command_round_trips() {
    let examples = examples::all();
    let mut stream = BytesMut::new();
    for (request_id, body) in &examples {
        body.encode(*request_id, DEFAULT_MAX_FRAME_LEN, &mut stream)
            .unwrap();
    }
    let decoder = FrameDecoder::default();
    for (request_id, body) in &examples {
        let frame = decoder.decode(&mut stream).unwrap().unwrap();
        assert_eq!(frame.header.request_id, *request_id);
        assert_eq!(frame.header.command, body.command());
        assert_eq!(&frame.body().unwrap(), body);
    }
    assert!(stream.is_empty());
}

#[test]
fn examples_cover_every_command() {
    let covered: Vec<Command> = examples::all().iter().map(|(_, b)| b.command()).collect();
    let defined: Vec<Command> = (1..=u16::MAX as i32)
        .filter_map(|n| Command::try_from(n).ok())
        .collect();
    assert_eq!(covered, defined);
}

#[test]
fn a_body_for_the_wrong_command_is_a_clear_error() {
    let login = fishchat_codec::pb::LoginRequest {
        token: "t".repeat(3),
        device_id: "d".into(),
    };
    let mut buf = BytesMut::new();
    fishchat_codec::encode_frame(Command::DeliveryAck, 1, &login, 1024, &mut buf).unwrap();
    let frame = FrameDecoder::default().decode(&mut buf).unwrap().unwrap();
    let err = frame.body().unwrap_err();
    assert_eq!(err.code(), fishchat_codec::ErrorCode::BadBody);
    assert!(
        matches!(Body::decode(Command::Unspecified, frame.body), Err(e) if e.code() == fishchat_codec::ErrorCode::UnknownCommand)
    );
}
