use dlock::distributed_lock;

#[distributed_lock(key = "order:{orderid}")]
async fn settle(order_id: u64, amount: u64) -> Result<u64, dlock::Error> {
    Ok(order_id + amount)
}

struct Shop;

impl Shop {
    #[distributed_lock(key = "shop:{self.name}/{sku}")]
    fn reserve(&self, item: &str) -> Result<(), dlock::Error> {
        let _ = item;
        Ok(())
    }
}

#[distributed_lock(key = "job:{self.id}")]
fn free_fn() -> Result<(), dlock::Error> {
    Ok(())
}

fn main() {}
