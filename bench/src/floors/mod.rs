//! One module per backend: its raw-protocol floor next to dlock.

pub mod etcd;
pub mod mysql;
pub mod postgres;
pub mod redis;
pub mod redlock;
pub mod zookeeper;
