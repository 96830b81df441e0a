//! Compiles the client protocol's single .proto file.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/fishchat.proto");
    prost_build::Config::new()
        // Bodies decode as `Bytes` slices of the frame, so a payload is never copied on its way through.
        .bytes(["."])
        .compile_protos(&["proto/fishchat.proto"], &["proto"])?;
    Ok(())
}
