//! 16 tasks on one key over 4 Lockers (4 processes' worth of connections), for every backend:
//! critical sections per second, hand-off latency (one holder's release to the next holder's
//! grant), barging (the releasing task taking the lock straight back while others wait) and
//! fairness (per-task counts), against a floor with the same statements polling every 1 ms (or,
//! for etcd, the server's own lock API). The critical section is a non-atomic increment; the
//! counter must end exact.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::stats::percentile;
use crate::Res;

/// Shared state of one run: the counter, and who released last and when.
#[derive(Default)]
pub struct Section {
    counter: AtomicU64,
    last_release: Mutex<Option<(Instant, usize)>>,
    handoffs: Mutex<Vec<Duration>>,
    barged: AtomicU64,
}

impl Section {
    /// Inside the lock, as task `task`: records the hand-off, then a non-atomic increment.
    pub async fn run(&self, task: usize) {
        if let Some((at, by)) = *self.last_release.lock().unwrap() {
            self.handoffs.lock().unwrap().push(at.elapsed());
            if by == task {
                self.barged.fetch_add(1, Ordering::Relaxed);
            }
        }
        let seen = self.counter.load(Ordering::SeqCst);
        tokio::task::yield_now().await;
        self.counter.store(seen + 1, Ordering::SeqCst);
    }

    /// Just before releasing, as task `task`.
    pub fn leaving(&self, task: usize) {
        *self.last_release.lock().unwrap() = Some((Instant::now(), task));
    }
}

/// Runs `cycle(section, task)` in a loop on `tasks` tasks for `duration` and prints one row.
pub async fn run<F, Fut>(label: &str, tasks: usize, duration: Duration, cycle: F) -> Res
where
    F: Fn(Arc<Section>, usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Res> + Send + 'static,
{
    let section = Arc::new(Section::default());
    let cycle = Arc::new(cycle);
    let started = Instant::now();
    let until = started + duration;
    let mut handles = Vec::new();
    for task in 0..tasks {
        let (section, cycle) = (section.clone(), cycle.clone());
        handles.push(tokio::spawn(async move {
            let mut done = 0u64;
            while Instant::now() < until {
                cycle(section.clone(), task).await?;
                done += 1;
            }
            Ok::<u64, String>(done)
        }));
    }
    let mut per_task = Vec::new();
    for h in handles {
        per_task.push(h.await.map_err(|e| e.to_string())??);
    }
    let elapsed = started.elapsed();
    let sections: u64 = per_task.iter().sum();
    let counted = section.counter.load(Ordering::SeqCst);
    if counted != sections {
        return Err(format!(
            "{label}: counter {counted} != {sections} sections: not exclusive"
        ));
    }
    let mut handoffs = section.handoffs.lock().unwrap().clone();
    handoffs.sort_unstable();
    println!(
        "| {label} | {:.0} | {} µs | {} µs | {:.0} % | {}..{} |",
        sections as f64 / elapsed.as_secs_f64(),
        percentile(&handoffs, 0.5).as_micros(),
        percentile(&handoffs, 0.99).as_micros(),
        100.0 * section.barged.load(Ordering::Relaxed) as f64 / handoffs.len().max(1) as f64,
        per_task.iter().min().unwrap_or(&0),
        per_task.iter().max().unwrap_or(&0),
    );
    Ok(())
}

/// The table header for [`run`] rows.
pub fn header(title: &str) {
    println!("\n## {title}: 16 tasks on one key over 4 Lockers (critical section: a non-atomic increment)\n");
    println!("| subject | critical sections/s | hand-off p50 | hand-off p99 | barging | per-task min..max |");
    println!("|---|---:|---:|---:|---:|---|");
}

/// dlock on `url`: 4 Lockers, task `t` uses Locker `t % 4`.
pub async fn dlock(name: &str, url: &str, tasks: usize, duration: Duration) -> Res {
    let mut lockers = Vec::new();
    for _ in 0..4 {
        lockers.push(
            dlock::Locker::connect(url)
                .await
                .map_err(|e| format!("{name} at {url}: {e}"))?,
        );
    }
    let key = format!("bench:{}:contended", uuid::Uuid::new_v4().simple());
    let lockers = Arc::new(lockers);
    run(
        &format!("dlock {name}"),
        tasks,
        duration,
        move |section, task| {
            let (lockers, key) = (lockers.clone(), key.clone());
            async move {
                let locker = &lockers[task % lockers.len()];
                let guard = locker
                    .lock(key)
                    .ttl(Duration::from_secs(30))
                    .wait(Duration::from_secs(60))
                    .await
                    .map_err(|e| e.to_string())?;
                section.run(task).await;
                section.leaving(task);
                guard.release().await.map_err(|e| e.to_string())
            }
        },
    )
    .await
}

/// The MySQL floor: the acquire `INSERT` retried every 1 ms while the key is taken, then the
/// token-checked `DELETE`.
pub async fn mysql_poll(url: &str, tasks: usize, duration: Duration) -> Res {
    let pool = sqlx::mysql::MySqlPoolOptions::new()
        .max_connections(16)
        .connect(url)
        .await
        .map_err(|e| e.to_string())?;
    let key = format!("bench:{}:contended-floor", uuid::Uuid::new_v4().simple());
    run(
        "floor: INSERT polled every 1 ms",
        tasks,
        duration,
        move |section, task| {
            let (pool, key) = (pool.clone(), key.clone());
            async move {
                let token = uuid::Uuid::new_v4().simple().to_string();
                loop {
                    let inserted = sqlx::query(
                        "INSERT INTO distributed_lock (lock_name, secret_key, expire_at) \
                     VALUES (?, ?, NOW(6) + INTERVAL 30 SECOND)",
                    )
                    .bind(&key)
                    .bind(&token)
                    .execute(&pool)
                    .await;
                    match inserted {
                        Ok(_) => break,
                        Err(sqlx::Error::Database(e))
                            if matches!(e.code().as_deref(), Some("23000" | "40001" | "HY000")) =>
                        {
                            tokio::time::sleep(Duration::from_millis(1)).await
                        }
                        Err(e) => return Err(e.to_string()),
                    }
                }
                section.run(task).await;
                section.leaving(task);
                // Retried when InnoDB picks it as a deadlock victim (the failing INSERTs' shared
                // locks on the unique key can deadlock with it): a DELETE given up would leave a
                // row that no INSERT ever takes over, and the floor would stall for good.
                loop {
                    let deleted = sqlx::query(
                        "DELETE FROM distributed_lock WHERE lock_name = ? AND secret_key = ?",
                    )
                    .bind(&key)
                    .bind(&token)
                    .execute(&pool)
                    .await;
                    match deleted {
                        Ok(_) => return Ok(()),
                        Err(sqlx::Error::Database(e))
                            if matches!(e.code().as_deref(), Some("40001" | "HY000")) => {}
                        Err(e) => return Err(e.to_string()),
                    }
                }
            }
        },
    )
    .await
}

/// The PostgreSQL floor: dlock's acquire statement retried every 1 ms, then the `DELETE`.
pub async fn postgres_poll(url: &str, tasks: usize, duration: Duration) -> Res {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(16)
        .connect(url)
        .await
        .map_err(|e| e.to_string())?;
    let key = format!("bench:{}:contended-floor", uuid::Uuid::new_v4().simple());
    run(
        "floor: INSERT ON CONFLICT polled every 1 ms",
        tasks,
        duration,
        move |section, task| {
            let (pool, key) = (pool.clone(), key.clone());
            async move {
                let token = uuid::Uuid::new_v4().simple().to_string();
                loop {
                    let won: Option<i64> = sqlx::query_scalar(
                        "INSERT INTO dlock_locks AS l (lock_name, secret_key, expire_at) \
                     VALUES ($1, $2, clock_timestamp() + interval '30 seconds') \
                     ON CONFLICT (lock_name) DO UPDATE SET secret_key = EXCLUDED.secret_key, \
                     expire_at = EXCLUDED.expire_at WHERE l.expire_at < clock_timestamp() \
                     RETURNING nextval('dlock_locks_fence')",
                    )
                    .bind(&key)
                    .bind(&token)
                    .fetch_optional(&pool)
                    .await
                    .map_err(|e| e.to_string())?;
                    if won.is_some() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                section.run(task).await;
                section.leaving(task);
                sqlx::query("DELETE FROM dlock_locks WHERE lock_name = $1 AND secret_key = $2")
                    .bind(&key)
                    .bind(&token)
                    .execute(&pool)
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(())
            }
        },
    )
    .await
}

/// The etcd floor: the server's own lock API (`Lock`/`Unlock` on a lease per acquisition).
pub async fn etcd_lock_api(url: &str, tasks: usize, duration: Duration) -> Res {
    let endpoint = url
        .trim_start_matches("etcd://")
        .split('/')
        .next()
        .unwrap_or("127.0.0.1:2379")
        .to_owned();
    let client = etcd_client::Client::connect([endpoint], None)
        .await
        .map_err(|e| e.to_string())?;
    let name = format!("/bench/{}/contended-floor", uuid::Uuid::new_v4().simple());
    run(
        "floor: etcd's Lock API",
        tasks,
        duration,
        move |section, task| {
            let (mut client, name) = (client.clone(), name.clone());
            async move {
                let lease = client
                    .lease_grant(30, None)
                    .await
                    .map_err(|e| e.to_string())?
                    .id();
                let locked = client
                    .lock(
                        name.as_str(),
                        Some(etcd_client::LockOptions::new().with_lease(lease)),
                    )
                    .await
                    .map_err(|e| e.to_string())?;
                section.run(task).await;
                section.leaving(task);
                client
                    .unlock(locked.key())
                    .await
                    .map_err(|e| e.to_string())?;
                client
                    .lease_revoke(lease)
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(())
            }
        },
    )
    .await
}
