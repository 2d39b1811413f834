//! N uncontended Redlock lock+release cycles on one task, for instruction counts under
//! callgrind, by dlock (`dlock`) or by rslock 0.10 (`rslock`), over the masters named by
//! `DLOCK_REDLOCK_HOSTS` (`host:port,host:port,host:port`, started beforehand):
//!
//! ```sh
//! bash scripts/redlock-instructions.sh   # starts 3 redis-servers; both, per cycle, and the ratio
//! ```
//! As in `redis_cycles`: (instructions(N2) − instructions(N1)) / (N2 − N1) is the client's work
//! per cycle, start-up and connection set-up cancelled out.

use std::time::Duration;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mode = args.first().map(String::as_str).unwrap_or("dlock");
    let n: u64 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(1000);
    let hosts = std::env::var("DLOCK_REDLOCK_HOSTS")
        .map_err(|_| "set DLOCK_REDLOCK_HOSTS=host:port,host:port,host:port")?;
    let key = format!("bench-cycles:{}", std::process::id());
    match mode {
        "dlock" => {
            let locker = dlock::Locker::connect(&format!("redlock://{hosts}")).await?;
            for _ in 0..n {
                let guard = locker
                    .lock(key.as_str())
                    .ttl(Duration::from_secs(30))
                    .wait(Duration::ZERO)
                    .await?;
                guard.release().await?;
            }
        }
        "rslock" => {
            let urls: Vec<String> = hosts.split(',').map(|h| format!("redis://{h}")).collect();
            let manager = rslock::LockManager::new(urls);
            for _ in 0..n {
                let lock = manager
                    .lock(key.as_bytes(), Duration::from_secs(30))
                    .await
                    .map_err(|e| format!("rslock: {e:?}"))?;
                manager.unlock(&lock).await;
            }
        }
        other => return Err(format!("unknown mode `{other}`: dlock or rslock").into()),
    }
    println!("{mode}: {n} cycles");
    Ok(())
}
