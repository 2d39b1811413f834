//! One module per backend: its raw-protocol floor next to dlock.

pub mod mysql;
pub mod redis;
pub mod zookeeper;
