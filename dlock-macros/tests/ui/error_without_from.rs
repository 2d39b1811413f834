use dlock::distributed_lock;

#[derive(Debug)]
struct AppError;

#[distributed_lock(key = "order:{order_id}")]
async fn settle(order_id: u64) -> Result<u64, AppError> {
    Ok(order_id)
}

fn main() {}
