//! macros integration tests (being written).
