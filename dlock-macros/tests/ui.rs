//! Compile errors of `#[distributed_lock]`, pinned in `tests/ui/*.stderr`.
//! Regenerate after an intended change with `TRYBUILD=overwrite cargo test -p dlock-rs-macros --test ui`.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
}
