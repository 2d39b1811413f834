use dlock::distributed_lock;

#[distributed_lock(key = "archive", ttl = "400d")]
async fn archive() -> Result<(), dlock::Error> {
    Ok(())
}

fn main() {}
