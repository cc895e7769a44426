//! Vigil's host agent as a library: the `vigil-agent` binary is a thin CLI
//! over these modules, so tests link the same logic.
pub mod activity;
pub mod alert;
pub mod doctor;
pub mod enrich;
pub mod event;
pub mod forward;
pub mod heartbeat;
pub mod host;
pub mod kernel;
pub mod metrics;
pub mod probe;
pub mod proctree;
pub mod replay;
pub mod rules;
pub mod run;
pub mod spool;
pub mod util;
