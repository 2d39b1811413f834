//! N uncontended Redis lock+release cycles on one task, for instruction counts under callgrind,
//! by dlock (`dlock`) or by the raw fenced floor (`floor`: one Lua script `SET NX PX` + `INCR`,
//! then a Lua compare-and-delete, over one multiplexed connection):
//!
//! ```sh
//! bash scripts/bench-instructions.sh     # both, per-cycle instructions and their ratio
//! ```
//! Run under callgrind with two values of N; (instructions(N2) − instructions(N1)) / (N2 − N1)
//! is the client's work per cycle, start-up and connection set-up cancelled out. Counts vary by
//! a few percent between runs (how often a task is polled depends on timing), far less than
//! wall-clock time on a noisy machine; the script takes the median of several runs.

use std::time::Duration;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mode = args.first().map(String::as_str).unwrap_or("dlock");
    let n: u64 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(1000);
    let url =
        std::env::var("DLOCK_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let key = format!("bench-cycles:{}", std::process::id());
    match mode {
        "dlock" => {
            let url = format!(
                "{url}{}restart_delay=0",
                if url.contains('?') { '&' } else { '?' }
            );
            let locker = dlock::Locker::connect(&url).await?;
            for _ in 0..n {
                let guard = locker
                    .lock(key.as_str())
                    .ttl(Duration::from_secs(10))
                    .wait(Duration::ZERO)
                    .await?;
                guard.release().await?;
            }
        }
        "floor" => {
            let mut con = redis::Client::open(url)?
                .get_multiplexed_async_connection()
                .await?;
            let cad = redis::Script::new(
                "if redis.call('GET', KEYS[1]) == ARGV[1] then \
                 return redis.call('DEL', KEYS[1]) end return 0",
            );
            let acquire = redis::Script::new(
                "if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then \
                 return redis.call('INCR', KEYS[2]) end return 0",
            );
            let (lock, fence) = (format!("{{{key}}}"), format!("{{{key}}}:fence"));
            for _ in 0..n {
                let token = uuid::Uuid::new_v4().simple().to_string();
                let won: i64 = acquire
                    .key(&lock)
                    .key(&fence)
                    .arg(&token)
                    .arg(10_000)
                    .invoke_async(&mut con)
                    .await?;
                let released: i64 = cad.key(&lock).arg(&token).invoke_async(&mut con).await?;
                if won == 0 || released != 1 {
                    return Err("floor: an uncontended cycle failed".into());
                }
            }
        }
        other => return Err(format!("unknown mode `{other}`: dlock or floor").into()),
    }
    println!("{mode}: {n} cycles");
    Ok(())
}
