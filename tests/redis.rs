//! redis integration tests (being written).
