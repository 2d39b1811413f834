use dlock::distributed_lock;

type Count = u64;

#[distributed_lock(key = "count")]
async fn count() -> Count {
    1
}

fn main() {}
