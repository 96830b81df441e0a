//! Compiles the internal service contracts. Client-protocol messages they
//! embed (stored messages, send acks) are not regenerated: they map onto
//! `fishchat_codec::pb`, so one type crosses every hop.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "proto/register.proto",
        "proto/logic.proto",
        "proto/manager.proto",
        "proto/access.proto",
        "proto/events.proto",
    ];
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    println!("cargo:rerun-if-changed=../codec/proto/fishchat.proto");
    let descriptors = PathBuf::from(std::env::var("OUT_DIR")?).join("fishchat_descriptor.bin");
    tonic_prost_build::configure()
        .bytes(".")
        .extern_path(".fishchat.v1", "::fishchat_codec::pb")
        .file_descriptor_set_path(descriptors)
        .compile_protos(&protos, &["proto", "../codec/proto"])?;
    Ok(())
}
