//! Read-write locks, semaphores and leader election on every backend (issue 16): one test binary,
//! a file per backend, the scenarios every backend must pass written once in `scenarios.rs`.

#[path = "../support/mod.rs"]
mod support;

#[macro_use]
mod scenarios;

mod etcd;
mod memory;
mod mysql;
mod postgres;
mod redis;
mod redlock;
mod zookeeper;
