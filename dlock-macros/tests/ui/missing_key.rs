use dlock::distributed_lock;

#[distributed_lock(ttl = "30s")]
async fn settle(order_id: u64) -> Result<u64, dlock::Error> {
    Ok(order_id)
}

fn main() {}
