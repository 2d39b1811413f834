use dlock::distributed_lock;

#[distributed_lock(key = "order:{order_id}", ttl = "30 parsecs")]
async fn settle(order_id: u64) -> Result<u64, dlock::Error> {
    Ok(order_id)
}

#[distributed_lock(key = "order:{order_id}", wait = "5")]
async fn refund(order_id: u64) -> Result<u64, dlock::Error> {
    Ok(order_id)
}

fn main() {}
