use dlock::distributed_lock;

#[distributed_lock(key = "order:{order_id}")]
async fn settle(order_id: u64) -> u64 {
    order_id
}

#[distributed_lock(key = "cleanup")]
fn cleanup() {}

fn main() {}
