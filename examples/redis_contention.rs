//! 16 tasks on one key over one Redis Locker: attempts per acquisition and hand-off time.
//! A rough measurement (the benchmark issue measures it properly).
//! Run: `cargo run --release --features redis --example redis_contention [redis-url]`

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[tokio::main]
async fn main() -> Result<(), dlock::Error> {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "redis://127.0.0.1:6379".into());
    let backend = dlock::backend::redis::RedisBackend::connect(&url).await?;
    let backend = Arc::new(backend);
    let locker = dlock::Locker::from_backend(backend.clone());
    let key = format!("contention:{}", std::process::id());
    let (tasks, rounds) = (16u64, 200u64);
    let counter = Arc::new(AtomicU64::new(0));
    // Time of the last release, to measure release → next acquire.
    let released_at = Arc::new(Mutex::new(None::<Instant>));
    let handoffs = Arc::new(Mutex::new(Vec::new()));
    let start = Instant::now();
    let mut joins = Vec::new();
    for _ in 0..tasks {
        let (locker, key, counter) = (locker.clone(), key.clone(), counter.clone());
        let (released_at, handoffs) = (released_at.clone(), handoffs.clone());
        joins.push(tokio::spawn(async move {
            for _ in 0..rounds {
                let guard = locker.lock(&key).wait(Duration::from_secs(60)).await?;
                if let Some(t) = released_at.lock().unwrap().take() {
                    handoffs.lock().unwrap().push(t.elapsed());
                }
                let seen = counter.load(Ordering::SeqCst);
                counter.store(seen + 1, Ordering::SeqCst);
                *released_at.lock().unwrap() = Some(Instant::now());
                guard.release().await?;
            }
            Ok::<_, dlock::Error>(())
        }));
    }
    for j in joins {
        j.await.expect("task")?;
    }
    let elapsed = start.elapsed();
    let n = tasks * rounds;
    assert_eq!(counter.load(Ordering::SeqCst), n);
    let mut h = handoffs.lock().unwrap().clone();
    h.sort();
    let pct = |p: f64| h[((h.len() as f64 - 1.0) * p) as usize];
    println!(
        "{n} critical sections in {elapsed:?}: {:.0}/s; attempts per acquisition {:.2}; hand-off p50 {:?} p99 {:?}",
        n as f64 / elapsed.as_secs_f64(),
        backend.attempts() as f64 / n as f64,
        pct(0.5),
        pct(0.99)
    );
    Ok(())
}
