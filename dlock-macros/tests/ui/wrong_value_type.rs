use dlock::distributed_lock;

#[distributed_lock(key = "order:{order_id}", ttl = 30)]
async fn settle(order_id: u64) -> Result<u64, dlock::Error> {
    Ok(order_id)
}

#[distributed_lock(key = "order:{order_id}", watchdog = "yes")]
async fn refund(order_id: u64) -> Result<u64, dlock::Error> {
    Ok(order_id)
}

#[distributed_lock(key = "order:{order_id}", guard = "g")]
async fn ship(order_id: u64) -> Result<u64, dlock::Error> {
    Ok(order_id)
}

#[distributed_lock(key = order_id)]
async fn cancel(order_id: u64) -> Result<u64, dlock::Error> {
    Ok(order_id)
}

fn main() {}
