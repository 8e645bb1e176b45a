//! Compiles the `licensing.v1` contract without a system `protoc`.
//!
//! protox (a protobuf compiler in pure Rust) parses `proto/` into a file
//! descriptor set; tonic-prost-build generates the messages, clients and
//! servers from it. The same descriptor set is written to `OUT_DIR` so the
//! server can offer reflection and tests can hand it to `buf curl --schema`.

use std::{env, fs, path::PathBuf};

use protox::prost::Message as _;

const PROTO_FILES: &[&str] = &[
    "licensing/v1/types.proto",
    "licensing/v1/user_service.proto",
    "licensing/v1/issuance_service.proto",
    "licensing/v1/account_service.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // protox + compile_fds cannot emit this for us, and without it edits to
    // the .proto files would not trigger a rebuild.
    println!("cargo:rerun-if-changed=proto");

    let descriptors = protox::compile(PROTO_FILES, ["proto"])?;
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(
        out_dir.join("licensing_v1_descriptor.bin"),
        descriptors.encode_to_vec(),
    )?;

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(descriptors)?;
    Ok(())
}
