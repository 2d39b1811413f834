//! dlock against the raw protocol floor of each backend (and the Rust peer `rslock`), in one
//! process, in interleaved rounds.
//!
//! Run (servers from `scripts/services.sh up`): `bash scripts/bench.sh`
//!
//! Every subject verifies itself while measured: an uncontended acquire that finds the key busy,
//! or a release that matched nothing, aborts the bench; contended counters must end exact. The
//! bench deletes what it created (fence counters included).

mod contended;
mod floors;
mod primitives;
mod stats;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use stats::{Sample, Table};

pub type Res = Result<(), String>;
pub type OpFuture = Pin<Box<dyn Future<Output = Res> + Send>>;
/// One lock+release cycle of task `i`.
pub type Op = Arc<dyn Fn(usize) -> OpFuture + Send + Sync>;

fn env(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Res {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quick = args.iter().any(|a| a == "--quick");
    let only: Vec<&str> = args
        .iter()
        .filter(|a| !a.starts_with("--"))
        .map(String::as_str)
        .collect();
    let want = |name: &str| only.is_empty() || only.contains(&name);
    let rounds = if quick { 3 } else { 7 };
    let redis_url = env("DLOCK_TEST_REDIS_URL", "redis://127.0.0.1:6379");
    let mysql_url = env("DLOCK_TEST_MYSQL_URL", "mysql://root@127.0.0.1:3306/test");
    let zk_url = env(
        "DLOCK_TEST_ZOOKEEPER_URL",
        "zookeeper://127.0.0.1:2181/dlock-bench",
    );
    println!(
        "dlock bench: {} cores, rounds {rounds}{}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        if quick { " (quick)" } else { "" }
    );

    if want("redis") {
        floors::redis::uncontended(&redis_url, 1, if quick { 500 } else { 2000 }, rounds).await?;
        floors::redis::uncontended(&redis_url, 16, if quick { 50 } else { 200 }, rounds).await?;
    }
    if want("redlock") {
        floors::redlock::uncontended(1, if quick { 300 } else { 1000 }, rounds).await?;
        floors::redlock::uncontended(16, if quick { 30 } else { 100 }, rounds).await?;
    }
    if want("contended") {
        let secs = if quick { 1.0 } else { 3.0 };
        floors::redis::one_key(&redis_url, 16, Duration::from_secs_f64(secs)).await?;
    }
    if want("mysql") {
        floors::mysql::uncontended(&mysql_url, 1, if quick { 100 } else { 400 }, rounds).await?;
    }
    if want("postgres") {
        let pg_url = env(
            "DLOCK_TEST_POSTGRES_URL",
            "postgres://postgres@127.0.0.1:5432/test",
        );
        floors::postgres::uncontended(&pg_url, 1, if quick { 100 } else { 400 }, rounds).await?;
    }
    if want("etcd") {
        let etcd_url = env("DLOCK_TEST_ETCD_URL", "etcd://127.0.0.1:2379/dlock-bench");
        floors::etcd::uncontended(&etcd_url, 1, if quick { 100 } else { 400 }, rounds).await?;
    }
    if want("zookeeper") {
        floors::zookeeper::uncontended(&zk_url, 1, if quick { 100 } else { 400 }, rounds).await?;
        floors::zookeeper::waiters(&zk_url, 16).await?;
    }
    if want("four-lockers") {
        let secs = Duration::from_secs_f64(if quick { 1.0 } else { 3.0 });
        let pg_url = env(
            "DLOCK_TEST_POSTGRES_URL",
            "postgres://postgres@127.0.0.1:5432/test",
        );
        let etcd_url = env("DLOCK_TEST_ETCD_URL", "etcd://127.0.0.1:2379/dlock-bench");
        contended::header("Redis");
        contended::dlock("redis", &without_restart_delay(&redis_url), 16, secs).await?;
        contended::header("MySQL (MariaDB)");
        contended::dlock("mysql", &mysql_url, 16, secs).await?;
        contended::mysql_poll(&mysql_url, 16, secs).await?;
        contended::header("PostgreSQL");
        contended::dlock("postgres", &pg_url, 16, secs).await?;
        contended::postgres_poll(&pg_url, 16, secs).await?;
        contended::header("etcd");
        contended::dlock("etcd", &etcd_url, 16, secs).await?;
        contended::etcd_lock_api(&etcd_url, 16, secs).await?;
        contended::header("ZooKeeper");
        contended::dlock("zookeeper", &zk_url, 16, secs).await?;
        contended::header("Redlock (3 private masters)");
        let masters = floors::redlock::Masters::start()?;
        contended::dlock("redlock", &masters.url(), 16, secs).await?;
    }
    if want("primitives") {
        let locker = dlock::Locker::connect(&without_restart_delay(&redis_url))
            .await
            .map_err(|e| e.to_string())?;
        let per = if quick { 300 } else { 1000 };
        primitives::cycles("Redis", &locker, 1, per, rounds).await?;
        primitives::cycles("Redis", &locker, 16, per / 10, rounds).await?;
        crate::floors::redis::delete_prefix(&redis_url, "bench:")
            .await
            .ok();
    }
    if want("watchdog") {
        let locker = dlock::Locker::connect(&without_restart_delay(&redis_url))
            .await
            .map_err(|e| e.to_string())?;
        watchdog_scale("redis", locker, Some(&redis_url), 10_000).await?;
        watchdog_scale("memory", dlock::Locker::memory(), None, 10_000).await?;
    }
    Ok(())
}

/// Runs `ops` (label, op) in `rounds` interleaved rounds (A B C, C B A, ...) after a warm-up,
/// each with `tasks` tasks doing `per_task` cycles, and prints the table.
pub async fn compare(
    title: &str,
    ops: Vec<(&'static str, Op)>,
    baseline: &str,
    tasks: usize,
    per_task: usize,
    rounds: usize,
) -> Res {
    let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); ops.len()];
    for round in 0..=rounds {
        let mut order: Vec<usize> = (0..ops.len()).collect();
        if round % 2 == 1 {
            order.reverse();
        }
        for i in order {
            let sample = measure(&ops[i].1, tasks, per_task).await?;
            if round > 0 {
                samples[i].push(sample);
            }
        }
    }
    let mut table = Table::new(title, baseline);
    for ((label, _), s) in ops.iter().zip(samples) {
        table.add(label, s);
    }
    table.print();
    Ok(())
}

/// `tasks` tasks doing `per_task` cycles of `op` each; per-cycle latencies.
pub async fn measure(op: &Op, tasks: usize, per_task: usize) -> Result<Sample, String> {
    let start = Instant::now();
    let mut joins = Vec::with_capacity(tasks);
    for t in 0..tasks {
        let op = op.clone();
        joins.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(per_task);
            for _ in 0..per_task {
                let s = Instant::now();
                op(t).await?;
                lat.push(s.elapsed());
            }
            Ok::<_, String>(lat)
        }));
    }
    let mut lat = Vec::with_capacity(tasks * per_task);
    for j in joins {
        lat.extend(j.await.map_err(|e| e.to_string())??);
    }
    Ok(Sample::new((tasks * per_task) as u64, start.elapsed(), lat))
}

/// Resident memory of this process in bytes (Linux).
pub fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4096)
}

fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").map_or(0, |d| d.count())
}

/// 10,000 watchdog-held locks: memory, tasks, threads, renewal commands per second.
async fn watchdog_scale(
    name: &str,
    locker: dlock::Locker,
    redis_url: Option<&str>,
    n: usize,
) -> Res {
    let ttl = Duration::from_secs(3);
    let metrics = tokio::runtime::Handle::current().metrics();
    let (rss0, tasks0, threads0) = (rss_bytes(), metrics.num_alive_tasks(), threads());
    let prefix = format!("bench:wd:{}", uuid::Uuid::new_v4().simple());
    let mut guards = Vec::with_capacity(n);
    for i in 0..n {
        let g = locker
            .lock(format!("{prefix}:{i}"))
            .ttl(ttl)
            .watchdog(true)
            .wait(Duration::ZERO)
            .await
            .map_err(|e| e.to_string())?;
        guards.push(g);
    }
    let commands_before = match redis_url {
        Some(url) => Some(floors::redis::total_commands(url).await?),
        None => None,
    };
    let window = Instant::now();
    // Two full renewal periods (ttl/3 = 1 s each), and more: every lease must survive.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let renewals = match (redis_url, commands_before) {
        (Some(url), Some(before)) => {
            let after = floors::redis::total_commands(url).await?;
            // Redis counts the commands a script runs too: EVALSHA + GET + PEXPIRE per renewal.
            let per_s = (after - before) as f64 / window.elapsed().as_secs_f64();
            format!(
                "{per_s:.0} Redis commands/s = {:.0} renewals/s",
                per_s / 3.0
            )
        }
        _ => "n/a (in-process)".into(),
    };
    let held = guards.iter().filter(|g| g.is_held()).count();
    if held != n {
        return Err(format!(
            "{name}: only {held} of {n} watchdog leases survived"
        ));
    }
    let (rss1, tasks1, threads1) = (rss_bytes(), metrics.num_alive_tasks(), threads());
    println!(
        "\n## Watchdog scale: {n} locks held on {name} (ttl {ttl:?}, renewed every {:?})\n\
         resident memory +{:.1} MB (total {:.1} MB); tasks +{}; threads +{}; renewals: {renewals}",
        ttl / 3,
        (rss1.saturating_sub(rss0)) as f64 / 1e6,
        rss1 as f64 / 1e6,
        tasks1.saturating_sub(tasks0),
        threads1.saturating_sub(threads0),
    );
    for g in guards {
        g.release().await.map_err(|e| e.to_string())?;
    }
    if let Some(url) = redis_url {
        floors::redis::delete_prefix(url, &prefix).await?;
    }
    Ok(())
}

/// Shared state of a contended run: a non-atomic counter and hand-off timing.
#[derive(Default)]
pub struct Contended {
    pub counter: AtomicU64,
    pub released_at: Mutex<Option<Instant>>,
    pub handoffs: Mutex<Vec<Duration>>,
}

impl Contended {
    /// Called by a new holder: the critical section (non-atomic increment) and hand-off time.
    pub fn enter(&self) {
        if let Some(t) = self
            .released_at
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            self.handoffs
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(t.elapsed());
        }
        let seen = self.counter.load(Ordering::SeqCst);
        std::hint::black_box(seen);
        self.counter.store(seen + 1, Ordering::SeqCst);
    }

    /// Called just before the release.
    pub fn leave(&self) {
        *self.released_at.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
    }
}

/// The bench measures steady state: dlock's wait after a recent server restart (the bench's
/// server may have just been started) is turned off.
pub(crate) fn without_restart_delay(url: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}restart_delay=0")
}

/// dlock's uncontended cycle as a bench subject: task `t` locks `bench:<run>:dlock:<t>` with a
/// fixed 30 s lease, one attempt, and releases it.
pub(crate) fn dlock_cycle(locker: dlock::Locker, run: &str) -> Op {
    let run = run.to_owned();
    Arc::new(move |t| {
        let (locker, key) = (locker.clone(), format!("bench:{run}:dlock:{t}"));
        Box::pin(async move {
            let guard = locker
                .lock(key)
                .ttl(Duration::from_secs(30))
                .wait(Duration::ZERO)
                .await
                .map_err(|e| e.to_string())?;
            guard.release().await.map_err(|e| e.to_string())
        })
    })
}
