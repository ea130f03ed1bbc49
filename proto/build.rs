//! Compiles every `.proto` file under this crate with `protox` (pure Rust, no
//! system `protoc`) and generates prost messages and tonic services.

use std::path::{Path, PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Read when the script runs, not when it was compiled: cargo reuses a
    // compiled build script for a checkout at another path (its hash is
    // relative to the workspace), whose compile-time path may be gone.
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let root = root.as_path();
    let mut files = Vec::new();
    collect_protos(&root.join("ordersaga"), &mut files)?;
    // Error details are only described, for reflection; tonic-types encodes them.
    collect_protos(&root.join("google"), &mut files)?;
    files.sort();
    for file in &files {
        println!("cargo:rerun-if-changed={}", file.display());
    }

    let descriptors = protox::compile(&files, [root])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let descriptor_path = out_dir.join("descriptor.bin");
    std::fs::write(
        &descriptor_path,
        prost::Message::encode_to_vec(&descriptors),
    )?;

    // Type names give every message `prost::Name`, whose full name is the
    // `message-type` header of the Kafka messages.
    let mut config = prost_build::Config::new();
    config.enable_type_names();
    tonic_prost_build::configure()
        .file_descriptor_set_path(&descriptor_path)
        .skip_protoc_run()
        .compile_fds_with_config(descriptors, config)?;
    Ok(())
}

fn collect_protos(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            collect_protos(&path, out)?;
        } else if path.extension().is_some_and(|ext| ext == "proto") {
            out.push(path);
        }
    }
    Ok(())
}
