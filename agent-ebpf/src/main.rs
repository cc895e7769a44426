//! Vigil's eBPF probe: kernel hooks that turn process activity into
//! fixed-size records on one ring buffer.
//!
//! Kernel structures are read at offsets the agent computed from the running
//! kernel's BTF (see `agent_ebpf::config`). Every record that cannot be
//! reserved is counted in `LOST`, per event kind, so no loss is silent. The
//! programs live in [`probe`], one module per concern.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

#[cfg(target_arch = "bpf")]
mod probe;

#[cfg(not(target_arch = "bpf"))]
fn main() {
    eprintln!(
        "vigil-probe is an eBPF object built for bpfel-unknown-none; it is embedded in vigil-agent"
    );
}
