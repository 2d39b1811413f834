use dlock::distributed_lock;

#[distributed_lock(key = "crawler", permits = 0)]
async fn crawl() -> Result<(), dlock::Error> {
    Ok(())
}

#[distributed_lock(key = "crawler", permits = -2)]
async fn recrawl() -> Result<(), dlock::Error> {
    Ok(())
}

fn main() {}
