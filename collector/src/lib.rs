//! Vigil's collector as a library: storage, the PKI and the TLS transport,
//! the gRPC service and the query client. The `vigil-collector` binary is a
//! thin CLI over these.
pub mod accounts;
pub mod activity;
pub mod agents;
pub mod console;
pub mod groups;
pub mod investigate;
pub mod metrics;
pub mod notify;
pub mod pki;
pub mod query;
pub mod server;
pub mod silences;
pub mod sql;
pub mod store;
pub mod tls;
pub mod views;
