use dlock::distributed_lock;

#[distributed_lock(key = "doc:{id}", mode = "read", mode = "write")]
async fn show(id: u64) -> Result<u64, dlock::Error> {
    Ok(id)
}

fn main() {}
