//! Property tests of the stream decoder: no byte sequence panics it or makes
//! it allocate past the cap, and no split of a valid stream changes what it
//! decodes.

use bytes::{Bytes, BytesMut};
use fishchat_codec::{
    Body, Command, DecodeError, Frame, FrameDecoder, HEADER_LEN, LENGTH_LEN, encode_frame,
};
use proptest::prelude::*;

const MAX: u32 = 1024;

/// Splits `data` at the given fractions (each in 0..=1000 per mille), in order.
fn chunks(data: &[u8], cuts: &[u16]) -> Vec<Vec<u8>> {
    let mut points: Vec<usize> = cuts
        .iter()
        .map(|c| data.len() * usize::from(*c) / 1000)
        .collect();
    points.sort_unstable();
    let mut out = Vec::new();
    let mut start = 0;
    for p in points.into_iter().chain([data.len()]) {
        out.push(data[start..p].to_vec());
        start = p;
    }
    out
}

/// Feeds `chunks` to a decoder as reads would, collecting frames until the
/// first error. Checks after every call that the decoder's own reservations
/// never grew the buffer past what one maximum frame needs.
fn feed(decoder: &FrameDecoder, chunks: &[Vec<u8>]) -> (Vec<Frame>, Option<DecodeError>) {
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    let bound = 2 * (LENGTH_LEN + decoder.max_frame_len() as usize);
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        loop {
            let before = buf.capacity();
            let result = decoder.decode(&mut buf);
            assert!(
                buf.capacity() <= before.max(bound),
                "decoder grew the buffer from {before} to {} (bound {bound})",
                buf.capacity()
            );
            match result {
                Ok(Some(frame)) => frames.push(frame),
                Ok(None) => break,
                Err(err) => return (frames, Some(err)),
            }
        }
    }
    (frames, None)
}

fn command() -> impl Strategy<Value = Command> {
    let all: Vec<Command> = (1..=64).filter_map(|n| Command::try_from(n).ok()).collect();
    proptest::sample::select(all)
}

fn frame() -> impl Strategy<Value = (Command, u32, Vec<u8>)> {
    (
        command(),
        any::<u32>(),
        proptest::collection::vec(any::<u8>(), 0..200),
    )
}

/// Encodes a raw body (already protobuf or not) as a frame: the decoder does
/// not look into bodies, so any bytes make a valid frame.
struct Raw<'a>(&'a [u8]);

impl prost::Message for Raw<'_> {
    fn encode_raw(&self, buf: &mut impl bytes::BufMut) {
        buf.put_slice(self.0);
    }
    fn merge_field(
        &mut self,
        _: u32,
        _: prost::encoding::WireType,
        _: &mut impl bytes::Buf,
        _: prost::encoding::DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        unreachable!("only encoded")
    }
    fn encoded_len(&self) -> usize {
        self.0.len()
    }
    fn clear(&mut self) {}
}

impl std::fmt::Debug for Raw<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Raw({} bytes)", self.0.len())
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_bytes_never_panic_or_overallocate(
        data in proptest::collection::vec(any::<u8>(), 0..4096),
        cuts in proptest::collection::vec(0u16..=1000, 0..8),
    ) {
        let decoder = FrameDecoder::new(MAX);
        let (frames, _) = feed(&decoder, &chunks(&data, &cuts));
        for frame in frames {
            prop_assert!(frame.body.len() + HEADER_LEN <= MAX as usize);
            // Bodies of arbitrary bytes must decode or fail cleanly, never panic.
            let _ = frame.body();
        }
    }

    #[test]
    fn huge_claims_fail_before_allocating(claimed in (MAX + 1)..=u32::MAX, tail in proptest::collection::vec(any::<u8>(), 0..64)) {
        let mut data = claimed.to_be_bytes().to_vec();
        data.extend(tail);
        let (frames, err) = feed(&FrameDecoder::new(MAX), &[data]);
        prop_assert!(frames.is_empty());
        prop_assert_eq!(err, Some(DecodeError::TooLarge { claimed, max: MAX }));
    }

    #[test]
    fn any_split_decodes_the_same_frames(
        frames in proptest::collection::vec(frame(), 1..20),
        cuts in proptest::collection::vec(0u16..=1000, 0..40),
    ) {
        let mut stream = BytesMut::new();
        for (command, request_id, body) in &frames {
            encode_frame(*command, *request_id, &Raw(body), MAX, &mut stream).unwrap();
        }
        let (decoded, err) = feed(&FrameDecoder::new(MAX), &chunks(&stream, &cuts));
        prop_assert_eq!(err, None);
        let decoded: Vec<(Command, u32, Bytes)> = decoded
            .into_iter()
            .map(|f| (f.header.command, f.header.request_id, f.body))
            .collect();
        let expected: Vec<(Command, u32, Bytes)> = frames
            .into_iter()
            .map(|(c, r, b)| (c, r, Bytes::from(b)))
            .collect();
        prop_assert_eq!(decoded, expected);
    }

    #[test]
    fn arbitrary_bodies_decode_or_fail_for_every_command(
        command in command(),
        body in proptest::collection::vec(any::<u8>(), 0..512),
    ) {
        match Body::decode(command, Bytes::from(body)) {
            Ok(decoded) => prop_assert_eq!(decoded.command(), command),
            Err(err) => prop_assert_eq!(err.code(), fishchat_codec::ErrorCode::BadBody),
        }
    }
}
