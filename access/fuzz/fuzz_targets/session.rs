//! The client protocol state machine under arbitrary frames, replies and time.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| fishchat_access::fuzzing::drive(data));
