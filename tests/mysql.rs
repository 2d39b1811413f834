//! mysql integration tests (being written).
