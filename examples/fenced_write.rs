//! Fencing tokens, the pattern: a write through a lock carries the guard's fence, and the
//! resource refuses any write whose fence is not higher than the last one it accepted. A holder
//! whose lease ran out (paused, partitioned) while another took the lock can then no longer
//! overwrite the newer holder's data, whatever the timing.
//!
//! ```sh
//! cargo run --example fenced_write --features redis,mysql
//! # DLOCK_EXAMPLE_LOCK_URL=zookeeper://127.0.0.1:2181/dlock to lock through another service
//! ```
//! Needs MariaDB/MySQL at `DLOCK_TEST_MYSQL_URL` (default `mysql://root@127.0.0.1:3306/test`)
//! for the table, and the lock service (default Redis at 127.0.0.1:6379).

use std::time::Duration;

use sqlx::mysql::MySqlPool;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let lock_url =
        std::env::var("DLOCK_EXAMPLE_LOCK_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let db_url = std::env::var("DLOCK_TEST_MYSQL_URL")
        .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/test".into());
    let locker = dlock::Locker::connect(&lock_url).await?;
    let db = MySqlPool::connect(&db_url).await?;

    // The protected resource: a row that remembers the fence of the last write it accepted.
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS fenced_account (
             id BIGINT PRIMARY KEY, balance BIGINT NOT NULL, fence BIGINT UNSIGNED NOT NULL)",
    )
    .execute(&db)
    .await?;
    sqlx::query("REPLACE INTO fenced_account (id, balance, fence) VALUES (1, 100, 0)")
        .execute(&db)
        .await?;

    // Holder A takes the lock with a short lease, then stalls (a GC pause, a slow disk...).
    let a = locker
        .lock("account:1")
        .ttl(Duration::from_millis(300))
        .await?;
    let fence_a = a
        .fence()
        .ok_or("this lock service gives no fences (Redlock)")?;
    tokio::time::sleep(Duration::from_millis(600)).await;

    // Meanwhile A's lease ran out and holder B got the lock, with a higher fence, and wrote.
    let b = locker
        .lock("account:1")
        .ttl(Duration::from_secs(10))
        .await?;
    let fence_b = b.fence().ok_or("no fence")?;
    assert!(fence_b > fence_a);
    println!("A holds fence {fence_a}, B holds fence {fence_b}");
    println!(
        "B writes 150: accepted = {}",
        write(&db, 150, fence_b).await?
    );

    // A wakes up, still believing it holds the lock, and writes: refused by the fence.
    println!(
        "A writes 50:  accepted = {} (stale holder)",
        write(&db, 50, fence_a).await?
    );
    b.release().await?;

    let balance: i64 = sqlx::query_scalar("SELECT balance FROM fenced_account WHERE id = 1")
        .fetch_one(&db)
        .await?;
    println!("balance = {balance}");
    assert_eq!(balance, 150, "the stale write must not land");
    drop(a); // its release finds the lock gone (Error::Lost), harmlessly
    locker.close().await?;
    Ok(())
}

/// The one rule: write only if this fence is higher than the last accepted one, in the same
/// statement (so no other write can come between the check and the write).
async fn write(db: &MySqlPool, balance: i64, fence: u64) -> Result<bool, sqlx::Error> {
    let done =
        sqlx::query("UPDATE fenced_account SET balance = ?, fence = ? WHERE id = 1 AND fence < ?")
            .bind(balance)
            .bind(fence)
            .bind(fence)
            .execute(db)
            .await?;
    Ok(done.rows_affected() == 1)
}
