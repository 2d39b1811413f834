use dlock::distributed_lock;

#[distributed_lock(key = "order:{order_id}", abort_on_lost = true)]
fn settle(order_id: u64) -> Result<u64, dlock::Error> {
    Ok(order_id)
}

fn main() {}
