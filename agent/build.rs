//! Builds the eBPF probe (`agent-ebpf`, bpfel target, nightly + build-std) with
//! aya-build and leaves it in OUT_DIR for `include_bytes_aligned!`, so a plain
//! `cargo build` produces an agent with its probe embedded.
//!
//! `AYA_BUILD_SKIP=1` skips the eBPF build (fast `cargo check`); the agent
//! then embeds an empty object and refuses to start with a clear error.
use std::{env, fs, path::PathBuf};

fn main() -> anyhow::Result<()> {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let root = manifest.join("../agent-ebpf");
    let root = root.to_str().expect("utf-8 path");
    let out = PathBuf::from(env::var("OUT_DIR")?).join("vigil-probe");
    let skip = env::var("AYA_BUILD_SKIP").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
    if skip {
        fs::write(&out, b"")?;
    }
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "agent-ebpf",
            root_dir: root,
            ..Default::default()
        }],
        aya_build::Toolchain::default(),
    )
}
