//! zookeeper integration tests (being written).
