//! Compiles the protos with the pure-Rust `protox`: no system `protoc` needed.

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = ["proto/chat/v1/chat.proto", "proto/agent/v1/agent.proto"];
    for file in &files {
        println!("cargo:rerun-if-changed={file}");
    }
    let fds = protox::compile(files, ["proto"])?;
    let out_dir = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out_dir.join("descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // `Connect` is an RPC name: clients are built from a `Channel` instead.
        .build_transport(false)
        // Small first buffers per stream (see src/codec.rs).
        .codec_path("crate::codec::SmallBufferCodec")
        // A stored message is by far the largest part of a frame: boxed (in
        // an event, and in an ack), every frame (a delta, above all) is a
        // fraction of its size, and each layer of a subscriber's stream
        // moves a frame whole.
        .boxed(".chat.v1.SessionEvent.event.message")
        .boxed(".chat.v1.Ack.message")
        .compile_fds(fds)?;
    Ok(())
}
