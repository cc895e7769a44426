//! Generates the vigil.v1 Rust code from `proto/` with protox (pure Rust), so
//! building needs no `protoc` on the machine.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/vigil/v1/vigil.proto";
    println!("cargo:rerun-if-changed={proto}");
    let fds = protox::compile([proto], ["proto"])?;
    tonic_prost_build::configure().compile_fds(fds)?;
    Ok(())
}
