//! N uncontended Redis lock+release cycles on one task, for instruction counts under callgrind:
//!
//! ```sh
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null target/release/examples/redis_cycles 1000
//! ```
//! Run it with two values of N; (instructions(N2) − instructions(N1)) / (N2 − N1) is the client's
//! work per cycle, start-up and connection set-up cancelled out. Counts are repeatable on a noisy
//! machine, unlike wall-clock time.

use std::time::Duration;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), dlock::Error> {
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1000);
    let url =
        std::env::var("DLOCK_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let locker = dlock::Locker::connect(&url).await?;
    let key = format!("bench-cycles:{}", std::process::id());
    for _ in 0..n {
        let guard = locker
            .lock(key.as_str())
            .ttl(Duration::from_secs(10))
            .wait(Duration::ZERO)
            .await?;
        guard.release().await?;
    }
    println!("{n} cycles");
    Ok(())
}
