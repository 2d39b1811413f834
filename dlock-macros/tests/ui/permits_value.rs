use dlock::distributed_lock;

const WORKERS: u32 = 5;

#[distributed_lock(key = "crawler", permits = "5")]
async fn crawl() -> Result<(), dlock::Error> {
    Ok(())
}

#[distributed_lock(key = "crawler", permits = WORKERS)]
async fn recrawl() -> Result<(), dlock::Error> {
    Ok(())
}

#[distributed_lock(key = "crawler", permits = 2.5)]
async fn index() -> Result<(), dlock::Error> {
    Ok(())
}

#[distributed_lock(key = "crawler", permits = 4294967296)]
async fn fetch() -> Result<(), dlock::Error> {
    Ok(())
}

#[distributed_lock(key = "crawler", semaphore = 5)]
async fn parse() -> Result<(), dlock::Error> {
    Ok(())
}

fn main() {}
