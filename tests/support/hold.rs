//! `dlock-hold <url> <key> <ttl_ms> fixed|watchdog|drop-close [lock|read|write|permit:N|campaign]`:
//! takes a lock (or the hold of the given kind; `campaign` campaigns for the election `key`), prints
//! `HELD <fence>`, and sleeps until killed. The integration tests SIGKILL it to show a crashed
//! holder's lock frees. With `drop-close` it drops the guard at once, calls `Locker::close` and
//! exits, as a program that ends right after its work should.

use std::io::Write;
use std::time::Duration;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (url, key, ttl_ms, mode, kind) = match args.as_slice() {
        [url, key, ttl_ms, mode] => (url, key, ttl_ms, mode, "lock"),
        [url, key, ttl_ms, mode, kind] => (url, key, ttl_ms, mode, kind.as_str()),
        _ => {
            eprintln!(
                "usage: dlock-hold <url> <key> <ttl_ms> fixed|watchdog|drop-close \
                 [lock|read|write|permit:N|campaign]"
            );
            std::process::exit(2);
        }
    };
    let ttl = Duration::from_millis(ttl_ms.parse().unwrap_or(1000));
    let result = async {
        let locker = dlock::Locker::connect(url).await?;
        let request = match kind {
            "read" => locker.read_lock(key.as_str()),
            "write" => locker.write_lock(key.as_str()),
            "campaign" => locker.campaign(key),
            permits if permits.starts_with("permit:") => {
                locker.semaphore(key.as_str(), permits[7..].parse().unwrap_or(1))
            }
            _ => locker.lock(key.as_str()),
        };
        let guard = request
            .ttl(ttl)
            .watchdog(mode == "watchdog")
            .wait(Duration::from_secs(10))
            .await?;
        if mode == "drop-close" {
            println!(
                "HELD {}",
                guard.fence().map_or("none".into(), |f| f.to_string())
            );
            drop(guard);
            locker.close().await?;
            println!("CLOSED");
            std::process::exit(0);
        }
        Ok::<_, dlock::Error>(guard)
    }
    .await;
    match result {
        Ok(guard) => {
            let fence = guard.fence().map_or("none".to_string(), |f| f.to_string());
            println!("HELD {fence}");
            let _ = std::io::stdout().flush();
            std::future::pending::<()>().await;
        }
        Err(e) => {
            println!("ERROR {e}");
            std::process::exit(1);
        }
    }
}
