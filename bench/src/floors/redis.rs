//! Redis: the bare floor, the fenced floor, dlock and rslock; and 16 tasks on one key.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::aio::ConnectionLike;
use redis::aio::MultiplexedConnection;
use redis::{AsyncCommands, Script};
use tokio::sync::broadcast;

use crate::stats::{percentile, us};
use crate::{compare, Contended, Op, Res};

const TTL_MS: u64 = 30_000;

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

pub async fn raw(url: &str) -> Result<MultiplexedConnection, String> {
    redis::Client::open(url)
        .map_err(err)?
        .get_multiplexed_async_connection()
        .await
        .map_err(|e| format!("Redis at {url}: {e} (start it with `scripts/services.sh up`)"))
}

/// The server's `total_commands_processed`.
pub async fn total_commands(url: &str) -> Result<u64, String> {
    let mut con = raw(url).await?;
    let info: String = redis::cmd("INFO")
        .arg("stats")
        .query_async(&mut con)
        .await
        .map_err(err)?;
    info.lines()
        .find_map(|l| l.strip_prefix("total_commands_processed:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| "no total_commands_processed in INFO".to_string())
}

/// Deletes every key containing `prefix` (the bench's own keys, fence counters included).
pub async fn delete_prefix(url: &str, prefix: &str) -> Res {
    let mut con = raw(url).await?;
    let keys: Vec<Vec<u8>> = con.keys(format!("*{prefix}*")).await.map_err(err)?;
    for chunk in keys.chunks(500) {
        let _: () = con.del(chunk).await.map_err(err)?;
    }
    Ok(())
}

fn cad() -> Script {
    Script::new(
        "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0",
    )
}

fn fenced_acquire() -> Script {
    Script::new(
        "if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then \
         return redis.call('INCR', KEYS[2]) end return 0",
    )
}

fn token() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// How a floor takes the lock.
#[derive(Debug, Clone, Copy)]
enum Shape {
    /// `SET NX PX`, no fence.
    Bare,
    /// One Lua script: `SET NX PX` then `INCR` of the fence.
    LuaFenced,
    /// `MULTI; SET NX PX; INCR; EXEC`.
    MultiFenced,
    /// dlock's own two scripts issued raw: the acquire with its fence rule
    /// (`max(counter + 1, server clock)`) and the release that publishes a notice.
    DlockScripts,
}

/// `SET key tok NX PX ttl`: true when won.
async fn set_nx_px<C: ConnectionLike>(con: &mut C, key: &str, tok: &str) -> Result<bool, String> {
    let ok: Option<String> = redis::cmd("SET")
        .arg(key)
        .arg(tok)
        .arg("NX")
        .arg("PX")
        .arg(TTL_MS)
        .query_async(con)
        .await
        .map_err(err)?;
    Ok(ok.is_some())
}

/// One floor cycle: take `key` in `shape`, then compare-and-delete; both must succeed.
async fn floor_cycle<C: ConnectionLike>(
    con: &mut C,
    shape: Shape,
    scripts: &(Script, Script),
    key: &str,
) -> Res {
    let (cad, fenced) = scripts;
    let tok = token();
    let fence_key = format!("{key}:fence");
    let won = match shape {
        Shape::DlockScripts => true,
        Shape::Bare => set_nx_px(con, key, &tok).await?,
        Shape::LuaFenced => {
            let fence: i64 = fenced
                .key(key)
                .key(&fence_key)
                .arg(&tok)
                .arg(TTL_MS)
                .invoke_async(con)
                .await
                .map_err(err)?;
            fence > 0
        }
        Shape::MultiFenced => {
            let (set, fence): (Option<String>, i64) = redis::pipe()
                .atomic()
                .cmd("SET")
                .arg(key)
                .arg(&tok)
                .arg("NX")
                .arg("PX")
                .arg(TTL_MS)
                .cmd("INCR")
                .arg(&fence_key)
                .query_async(con)
                .await
                .map_err(err)?;
            set.is_some() && fence > 0
        }
    };
    if let Shape::DlockScripts = shape {
        let (acquire, release) = dlock::backend::redis::cycle_scripts();
        let channel = format!("{key}:released");
        let queue = format!("{key}:queue");
        // dlock's Locker id is 16 hex digits; one attempt, no waiting (`0`), as the bench asks.
        let won: i64 = acquire
            .key(key)
            .key(&fence_key)
            .key(&queue)
            .arg(&tok)
            .arg(TTL_MS)
            .arg(0)
            .arg("0123456789abcdef")
            .arg("0")
            .invoke_async(con)
            .await
            .map_err(err)?;
        // `2 * (fence + 1) + counter_was_missing` when won (see `cycle_scripts`).
        if won < 2 {
            return Err(format!("{shape:?} floor: uncontended key {key} busy"));
        }
        let n: i64 = release
            .key(key)
            .key(&queue)
            .arg(&tok)
            .arg(&channel)
            .arg("0123456789abcdef")
            .invoke_async(con)
            .await
            .map_err(err)?;
        if n != 1 {
            return Err(format!("{shape:?} floor: release matched nothing"));
        }
        return Ok(());
    }
    if !won {
        return Err(format!("{shape:?} floor: uncontended key {key} busy"));
    }
    let n: i64 = cad
        .key(key)
        .arg(&tok)
        .invoke_async(con)
        .await
        .map_err(err)?;
    if n != 1 {
        return Err(format!("{shape:?} floor: release matched nothing"));
    }
    Ok(())
}

/// A floor subject over connection `con`; task `t` uses its own key (one hash tag per key).
fn floor<C>(con: C, shape: Shape, run: &str, tag: &str) -> Op
where
    C: ConnectionLike + Clone + Send + Sync + 'static,
{
    let scripts = Arc::new((cad(), fenced_acquire()));
    let prefix = format!("bench:{run}:{tag}");
    Arc::new(move |t| {
        let (mut con, scripts) = (con.clone(), scripts.clone());
        let key = format!("{prefix}:{{{t}}}");
        Box::pin(async move { floor_cycle(&mut con, shape, &scripts, &key).await })
    })
}

/// Uncontended lock+release: `tasks` tasks, each on its own key.
pub async fn uncontended(url: &str, tasks: usize, per_task: usize, rounds: usize) -> Res {
    let run = uuid::Uuid::new_v4().simple().to_string();
    let con = raw(url).await?;
    // The reconnecting ConnectionManager dlock uses, to show what it costs by itself.
    let manager = redis::aio::ConnectionManager::new(redis::Client::open(url).map_err(err)?)
        .await
        .map_err(err)?;
    let bare = floor(con.clone(), Shape::Bare, &run, "bare");
    let fenced_op = floor(con.clone(), Shape::LuaFenced, &run, "fenced");
    let fenced_cm = floor(manager, Shape::LuaFenced, &run, "fencedcm");
    let fenced_multi = floor(con.clone(), Shape::MultiFenced, &run, "multi");
    let dlock_shape = floor(con.clone(), Shape::DlockScripts, &run, "shape");
    let locker = dlock::Locker::connect(&crate::without_restart_delay(url))
        .await
        .map_err(err)?;
    let dlock_op: Op = {
        let run = run.clone();
        Arc::new(move |t| {
            let (locker, key) = (locker.clone(), format!("bench:{run}:dlock:{t}"));
            Box::pin(async move {
                let guard = locker
                    .lock(key)
                    .ttl(Duration::from_millis(TTL_MS))
                    .wait(Duration::ZERO)
                    .await
                    .map_err(err)?;
                guard.release().await.map_err(err)
            })
        })
    };
    let rslock_op: Op = {
        let manager = Arc::new(rslock::LockManager::new(vec![url.to_string()]));
        let run = run.clone();
        Arc::new(move |t| {
            let (manager, key) = (manager.clone(), format!("bench:{run}:rslock:{t}"));
            Box::pin(async move {
                let lock = manager
                    .lock(key.as_bytes(), Duration::from_millis(TTL_MS))
                    .await
                    .map_err(|e| format!("rslock: {e:?}"))?;
                manager.unlock(&lock).await;
                Ok(())
            })
        })
    };
    let title = format!(
        "Redis uncontended lock+release, {tasks} task{} on {tasks} key{}",
        if tasks == 1 { "" } else { "s" },
        if tasks == 1 { "" } else { "s" }
    );
    let result = compare(
        &title,
        vec![
            ("bare floor (SET NX PX + CAD)", bare),
            ("fenced floor (SET NX PX+INCR script + CAD)", fenced_op),
            ("fenced floor over ConnectionManager", fenced_cm),
            (
                "fenced floor, MULTI shape (SET NX PX + INCR in MULTI/EXEC + CAD)",
                fenced_multi,
            ),
            (
                "floor of dlock's shape (dlock's acquire and release scripts, raw)",
                dlock_shape,
            ),
            ("dlock redis", dlock_op),
            ("rslock 0.10", rslock_op),
        ],
        "floor of dlock's shape (dlock's acquire and release scripts, raw)",
        tasks,
        per_task,
        rounds,
    )
    .await;
    delete_prefix(url, &run).await?;
    result
}

/// 16 tasks on one key for `duration` each: dlock, a 1 ms fixed-sleep poll, a naive pub/sub
/// wake-all.
pub async fn one_key(url: &str, tasks: usize, duration: Duration) -> Res {
    let run = uuid::Uuid::new_v4().simple().to_string();
    println!("\n## Redis, {tasks} tasks on one key, {duration:?} each (critical section: a non-atomic increment)\n");
    println!("| subject | critical sections/s | hand-off p50 | hand-off p99 | attempts/acquisition | Redis commands/CS | per-task min..max |");
    println!("|---|---:|---:|---:|---:|---:|---|");

    // dlock
    let backend = Arc::new(
        dlock::backend::redis::RedisBackend::connect(url)
            .await
            .map_err(err)?,
    );
    let locker = dlock::Locker::from_backend(backend.clone());
    let key = format!("bench:{run}:one:dlock");
    let attempts0 = backend.attempts();
    let row = contended_run(url, tasks, duration, {
        let (locker, key) = (locker.clone(), key.clone());
        move |state: Arc<Contended>, _attempts: Arc<AtomicU64>| {
            let (locker, key) = (locker.clone(), key.clone());
            async move {
                let guard = locker
                    .lock(key)
                    .ttl(Duration::from_millis(TTL_MS))
                    .wait(Duration::from_secs(60))
                    .await
                    .map_err(err)?;
                state.enter();
                state.leave();
                guard.release().await.map_err(err)
            }
        }
    })
    .await?;
    row.print("dlock redis", Some(backend.attempts() - attempts0));

    // 1 ms fixed-sleep poll
    let con = raw(url).await?;
    let cad = Arc::new(cad());
    let key = format!("bench:{run}:one:poll");
    let row = contended_run(url, tasks, duration, {
        let (con, cad, key) = (con.clone(), cad.clone(), key.clone());
        move |state: Arc<Contended>, attempts: Arc<AtomicU64>| {
            let (mut con, cad, key) = (con.clone(), cad.clone(), key.clone());
            async move {
                let tok = token();
                loop {
                    attempts.fetch_add(1, Ordering::Relaxed);
                    if set_nx_px(&mut con, &key, &tok).await? {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                state.enter();
                state.leave();
                let n: i64 = cad
                    .key(&key)
                    .arg(&tok)
                    .invoke_async(&mut con)
                    .await
                    .map_err(err)?;
                if n != 1 {
                    return Err("poll floor: release matched nothing".into());
                }
                Ok(())
            }
        }
    })
    .await?;
    row.print("1 ms fixed-sleep poll", None);

    // naive pub/sub: every waiter wakes on every release
    let key = format!("bench:{run}:one:herd");
    let channel = format!("{key}:released");
    let (tx, _) = broadcast::channel::<()>(1024);
    let sub_client = {
        let info = redis::Client::open(url)
            .map_err(err)?
            .get_connection_info()
            .clone();
        let settings = info
            .redis_settings()
            .clone()
            .set_protocol(redis::ProtocolVersion::RESP3);
        redis::Client::open(info.set_redis_settings(settings)).map_err(err)?
    };
    let tx2 = tx.clone();
    let config = redis::AsyncConnectionConfig::new().set_push_sender(move |_p: redis::PushInfo| {
        let _ = tx2.send(());
        Ok::<(), ()>(())
    });
    let mut sub = sub_client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .map_err(err)?;
    sub.subscribe(&channel).await.map_err(err)?;
    let release_pub = Arc::new(Script::new(
        "if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) \
         redis.call('PUBLISH', ARGV[2], '1') return 1 end return 0",
    ));
    let row = contended_run(url, tasks, duration, {
        let (con, key, channel, tx) = (con.clone(), key.clone(), channel.clone(), tx.clone());
        move |state: Arc<Contended>, attempts: Arc<AtomicU64>| {
            let (mut con, key, channel, release_pub) = (
                con.clone(),
                key.clone(),
                channel.clone(),
                release_pub.clone(),
            );
            let mut rx = tx.subscribe();
            async move {
                let tok = token();
                loop {
                    attempts.fetch_add(1, Ordering::Relaxed);
                    if set_nx_px(&mut con, &key, &tok).await? {
                        break;
                    }
                    // Wake on any release notice (all waiters do), or retry after 100 ms.
                    let _ = tokio::time::timeout(Duration::from_millis(100), rx.recv()).await;
                }
                state.enter();
                state.leave();
                let n: i64 = release_pub
                    .key(&key)
                    .arg(&tok)
                    .arg(&channel)
                    .invoke_async(&mut con)
                    .await
                    .map_err(err)?;
                if n != 1 {
                    return Err("pub/sub floor: release matched nothing".into());
                }
                Ok(())
            }
        }
    })
    .await?;
    row.print("naive pub/sub wake-all", None);
    drop(sub);
    delete_prefix(url, &run).await
}

pub struct ContendedRow {
    sections: u64,
    elapsed: Duration,
    handoffs: Vec<Duration>,
    attempts: u64,
    commands: u64,
    per_task: Vec<u64>,
}

impl ContendedRow {
    fn print(&self, label: &str, attempts: Option<u64>) {
        let attempts = attempts.unwrap_or(self.attempts);
        println!(
            "| {label} | {:.0} | {} | {} | {:.2} | {:.1} | {}..{} |",
            self.sections as f64 / self.elapsed.as_secs_f64(),
            us(percentile(&self.handoffs, 0.5)),
            us(percentile(&self.handoffs, 0.99)),
            attempts as f64 / self.sections as f64,
            self.commands as f64 / self.sections as f64,
            self.per_task.iter().min().unwrap_or(&0),
            self.per_task.iter().max().unwrap_or(&0),
        );
    }
}

/// `tasks` tasks running `cycle` in a loop for `duration`; the counter must end exact.
async fn contended_run<F, Fut>(
    url: &str,
    tasks: usize,
    duration: Duration,
    cycle: F,
) -> Result<ContendedRow, String>
where
    F: Fn(Arc<Contended>, Arc<AtomicU64>) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Res> + Send,
{
    let state = Arc::new(Contended::default());
    let attempts = Arc::new(AtomicU64::new(0));
    let commands0 = total_commands(url).await?;
    let start = Instant::now();
    let stop_at = start + duration;
    let mut joins = Vec::new();
    for _ in 0..tasks {
        let (cycle, state, attempts) = (cycle.clone(), state.clone(), attempts.clone());
        joins.push(tokio::spawn(async move {
            let mut n = 0u64;
            while Instant::now() < stop_at {
                cycle(state.clone(), attempts.clone()).await?;
                n += 1;
            }
            Ok::<_, String>(n)
        }));
    }
    let mut per_task = Vec::new();
    for j in joins {
        per_task.push(j.await.map_err(err)??);
    }
    let elapsed = start.elapsed();
    let commands = total_commands(url).await? - commands0 - 1;
    let sections: u64 = per_task.iter().sum();
    let counted = state.counter.load(Ordering::SeqCst);
    if counted != sections {
        return Err(format!(
            "mutual exclusion broken: counter {counted} != {sections} critical sections"
        ));
    }
    let mut handoffs = std::mem::take(&mut *state.handoffs.lock().map_err(err)?);
    handoffs.sort();
    Ok(ContendedRow {
        sections,
        elapsed,
        handoffs,
        attempts: attempts.load(Ordering::Relaxed),
        commands,
        per_task,
    })
}
