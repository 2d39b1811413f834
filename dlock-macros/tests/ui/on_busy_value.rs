use dlock::distributed_lock;

#[distributed_lock(key = "nightly", on_busy = "retry")]
async fn nightly() -> Result<(), dlock::Error> {
    Ok(())
}

fn main() {}
