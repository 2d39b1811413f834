//! Read-write locks, a semaphore and leader election on the in-memory backend: no server needed.
//! Run: `cargo run --example primitives`
//!
//! The same calls work on Redis, MySQL, PostgreSQL, ZooKeeper and etcd (`Locker::connect(url)`);
//! each process would be one of the tasks below.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dlock::Locker;

#[tokio::main]
async fn main() -> Result<(), dlock::Error> {
    let locker = Locker::memory();

    // Read-write lock: two readers at once; the writer waits for both, then its fence grows.
    let r1 = locker.read_lock("doc:7").await?;
    let r2 = tokio::spawn(locker.read_lock("doc:7").acquire())
        .await
        .expect("task")?;
    let writer = tokio::spawn(locker.write_lock("doc:7").acquire());
    tokio::time::sleep(Duration::from_millis(50)).await;
    println!(
        "two readers hold doc:7; the writer waits: {}",
        !writer.is_finished()
    );
    r1.release().await?;
    r2.release().await?;
    let w = writer.await.expect("task")?;
    println!("writer in with fence {:?}", w.fence());
    w.release().await?;

    // Semaphore: 6 crawlers, at most 2 at once.
    let inside = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let mut crawlers = Vec::new();
    for _ in 0..6 {
        let (locker, inside, most) = (locker.clone(), inside.clone(), most.clone());
        crawlers.push(tokio::spawn(async move {
            let permit = locker.semaphore("crawler", 2).await?;
            most.fetch_max(inside.fetch_add(1, Ordering::SeqCst) + 1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(20)).await;
            inside.fetch_sub(1, Ordering::SeqCst);
            permit.release().await
        }));
    }
    for c in crawlers {
        c.await.expect("task")?;
    }
    println!(
        "6 crawlers, at most {} at once (2 permits)",
        most.load(Ordering::SeqCst)
    );

    // Leader election: node-a leads until it resigns, then node-b is elected.
    let (a, b) = (locker.with_owner("node-a"), locker.with_owner("node-b"));
    let term = a.campaign("scheduler").await?;
    let b_campaign = tokio::spawn(b.campaign("scheduler").acquire());
    println!("leader: {:?}", a.leader("scheduler").await?);
    term.release().await?; // resign
    let b_term = b_campaign.await.expect("task")?;
    println!(
        "leader after node-a resigned: {:?}",
        b.leader("scheduler").await?
    );
    b_term.release().await?;

    // Work while leading: cancelled if leadership is lost, campaigned for again; here it ends.
    let report = a
        .campaign("reports")
        .ttl(Duration::from_secs(6))
        .watchdog(true)
        .lead(|fence| async move { format!("report written in term {fence:?}") })
        .await?;
    println!("{report}");
    locker.close().await
}
