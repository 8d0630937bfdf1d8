//! Compiles `proto/agora.proto` with protox (pure Rust): no system `protoc`.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/agora.proto");
    let fds = protox::compile(["agora.proto"], ["proto"])?;
    tonic_prost_build::configure().compile_fds(fds)?;
    Ok(())
}
