//! The `#[distributed_lock]` attribute of dlock (work in progress).
