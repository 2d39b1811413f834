use dlock::distributed_lock;

#[distributed_lock(key = "doc:{id}", mode = "shared")]
async fn show(id: u64) -> Result<u64, dlock::Error> {
    Ok(id)
}

#[distributed_lock(key = "doc:{id}", mode = read)]
async fn edit(id: u64) -> Result<u64, dlock::Error> {
    Ok(id)
}

#[distributed_lock(key = "doc:{id}", read)]
async fn print(id: u64) -> Result<u64, dlock::Error> {
    Ok(id)
}

fn main() {}
