//! dlock in 30 lines on the in-memory backend: no server needed.
//! Run: `cargo run --example quickstart`

use std::sync::Arc;
use std::time::Duration;

use dlock::Locker;

#[tokio::main]
async fn main() -> Result<(), dlock::Error> {
    // Swap for Locker::connect("redis://127.0.0.1:6379").await? (feature `redis`), etc.
    let locker = Locker::memory();
    let counter = Arc::new(std::sync::atomic::AtomicU64::new(0));

    let mut tasks = Vec::new();
    for worker in 0..4 {
        let (locker, counter) = (locker.clone(), counter.clone());
        tasks.push(tokio::spawn(async move {
            let guard = locker.lock("order:42").wait(Duration::from_secs(5)).await?;
            // A non-atomic read-modify-write: safe because only the holder runs it.
            let seen = counter.load(std::sync::atomic::Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(10)).await;
            counter.store(seen + 1, std::sync::atomic::Ordering::SeqCst);
            println!(
                "worker {worker} held {} with fence {:?}",
                guard.key(),
                guard.fence()
            );
            guard.release().await
        }));
    }
    for task in tasks {
        task.await.expect("worker panicked")?;
    }
    println!(
        "counter = {} (exactly 4)",
        counter.load(std::sync::atomic::Ordering::SeqCst)
    );

    // One attempt, no waiting:
    let held = locker.lock("job").ttl(Duration::from_millis(200)).await?;
    assert!(locker.try_lock("job").await?.is_none());
    held.lost().await; // the fixed 200 ms lease runs out
    println!("lease lost as expected; is_held = {}", held.is_held());
    Ok(())
}
