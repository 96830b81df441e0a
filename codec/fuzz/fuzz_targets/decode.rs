//! Feeds arbitrary bytes to the frame decoder in reads of varying size, and
//! decodes every frame's body: nothing may panic, and the decoder may never
//! grow the buffer past what one maximum frame needs.
#![no_main]

use bytes::BytesMut;
use fishchat_codec::{FrameDecoder, LENGTH_LEN};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&split, data)) = data.split_first() else {
        return;
    };
    let decoder = FrameDecoder::new(4096);
    let bound = 2 * (LENGTH_LEN + decoder.max_frame_len() as usize);
    let mut buf = BytesMut::new();
    for chunk in data.chunks(usize::from(split).max(1)) {
        buf.extend_from_slice(chunk);
        loop {
            let before = buf.capacity();
            let result = decoder.decode(&mut buf);
            assert!(buf.capacity() <= before.max(bound));
            match result {
                Ok(Some(frame)) => {
                    let _ = frame.body();
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
});
