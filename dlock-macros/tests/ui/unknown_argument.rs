use dlock::distributed_lock;

#[distributed_lock(key = "order:{order_id}", tll = "30s")]
async fn settle(order_id: u64) -> Result<u64, dlock::Error> {
    Ok(order_id)
}

#[distributed_lock(key = "order:{order_id}", timeout = "30s")]
async fn refund(order_id: u64) -> Result<u64, dlock::Error> {
    Ok(order_id)
}

fn main() {}
