//! What the agent learns from the running kernel before loading the probe:
//! struct layouts from BTF, tracepoint record layouts from tracefs.
pub mod exclusions;
pub mod interest;
pub mod layout;
pub mod syscalls;
pub mod tracefs;
