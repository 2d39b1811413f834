use dlock::distributed_lock;

struct OrderId(u64);

#[distributed_lock(key = "order:{order_id}")]
async fn settle(order_id: OrderId) -> Result<u64, dlock::Error> {
    Ok(order_id.0)
}

fn main() {}
