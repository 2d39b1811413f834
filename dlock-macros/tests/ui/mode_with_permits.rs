use dlock::distributed_lock;

#[distributed_lock(key = "crawler", mode = "read", permits = 5)]
async fn crawl() -> Result<(), dlock::Error> {
    Ok(())
}

#[distributed_lock(key = "crawler", permits = 5, mode = "write")]
async fn recrawl() -> Result<(), dlock::Error> {
    Ok(())
}

fn main() {}
