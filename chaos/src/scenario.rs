//! One scenario: a backend, a fault, private servers, holder processes, and the check.
//!
//! Why each scenario starts from nothing (fresh servers, fresh register, fresh directory): a
//! fault must not leak into the next scenario (a server left paused, a fence counter left high,
//! a connection pool still broken), and a finding must be attributable to one fault.
//!
//! Timeline: the holders run alone for a warm-up (the baseline of the scenario), the fault is
//! injected and undone, the holders go on for a recovery period, then they are told to stop and
//! the checker reads their histories. Every fault is a fixed, documented action; what it did is
//! written into the scenario's notes (with times relative to the holders' start).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::checker::{self, Outcome, Row, Window};
use crate::history::{self, now_us, Event, Kind};
use crate::holder::{history_path, stop_path, HolderConfig};
use crate::proxy::Proxy;
use crate::servers::{
    signal, signal_group, wait_until, Etcd, MariaDb, Postgres, Proc, RedisServer, ZooKeeper,
};

/// The lock services under test (all of them fenced).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// Redis (`redis://`): fence from a per-key `INCR` counter.
    Redis,
    /// MariaDB (`mysql://`): fence from the lock table's AUTO_INCREMENT id.
    Mysql,
    /// ZooKeeper (`zookeeper://`): fence from the lock node's czxid.
    Zookeeper,
    /// etcd (`etcd://`): fence from the lock key's create revision.
    Etcd,
    /// PostgreSQL (`postgres://`): fence from a sequence.
    Postgres,
}

impl Backend {
    /// Every backend, in run order.
    pub const ALL: [Backend; 5] = [
        Backend::Redis,
        Backend::Mysql,
        Backend::Postgres,
        Backend::Zookeeper,
        Backend::Etcd,
    ];

    /// The name used on the command line and in the table.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Redis => "redis",
            Backend::Mysql => "mysql",
            Backend::Zookeeper => "zookeeper",
            Backend::Etcd => "etcd",
            Backend::Postgres => "postgres",
        }
    }
}

/// The faults, each injected for a fixed window while the holders run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// No fault: the baseline (an overlap here fails the run).
    None,
    /// SIGSTOP of the holder in its critical section, past its lease, then SIGCONT.
    HolderStop,
    /// SIGSTOP of the server for longer than the lease (and the ZooKeeper session), then SIGCONT.
    ServerStop,
    /// SIGKILL of the server and a restart on the same port: Redis keeps nothing
    /// (`--save '' --appendonly no`); MariaDB and ZooKeeper keep their data directory.
    ServerKill,
    /// Redis: as `ServerKill`, with dlock's delayed restart turned off (`?restart_delay=0`), to
    /// show that the restart bites without it and what the fences do then.
    ServerKillNoDelay,
    /// The server drops its client connections (Redis `CLIENT KILL`, MariaDB `KILL CONNECTION`,
    /// ZooKeeper: cut by the proxy in front of it), three times, a second apart.
    ClientKill,
    /// Redis: the replica falls behind (its link frozen), the primary is SIGKILLed, the replica
    /// is promoted (`REPLICAOF NO ONE`), and the clients' proxy moves to it.
    Failover,
    /// As `Failover`, with `?replicas=1` on the holders' URL.
    FailoverReplicas,
}

impl Fault {
    /// Every fault, in run order.
    pub const ALL: [Fault; 8] = [
        Fault::None,
        Fault::HolderStop,
        Fault::ServerStop,
        Fault::ServerKill,
        Fault::ServerKillNoDelay,
        Fault::ClientKill,
        Fault::Failover,
        Fault::FailoverReplicas,
    ];

    /// The name used on the command line and in the table.
    pub fn name(self) -> &'static str {
        match self {
            Fault::None => "none",
            Fault::HolderStop => "holder-stop",
            Fault::ServerStop => "server-stop",
            Fault::ServerKill => "server-kill",
            Fault::ServerKillNoDelay => "server-kill-no-delay",
            Fault::ClientKill => "client-kill",
            Fault::Failover => "failover",
            Fault::FailoverReplicas => "failover-replicas",
        }
    }

    /// Whether the fault exists for `backend` (failover and the delayed-restart variant are
    /// Redis only).
    pub fn applies_to(self, backend: Backend) -> bool {
        let redis_only = matches!(
            self,
            Fault::ServerKillNoDelay | Fault::Failover | Fault::FailoverReplicas
        );
        !redis_only || backend == Backend::Redis
    }
}

/// Durations and sizes of a scenario.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    /// Holder processes.
    pub holders: u32,
    /// Holders alone before the fault.
    pub warmup: Duration,
    /// Holders after the fault ended, before they are stopped.
    pub recovery: Duration,
    /// How long a holder or a server stays SIGSTOPped.
    pub stopped_for: Duration,
    /// The fixed lease of every acquisition.
    pub ttl: Duration,
    /// How long an acquire waits.
    pub wait: Duration,
    /// The pause inside the critical section, between read and write.
    pub pause: Duration,
    /// The ZooKeeper session timeout (the lease of a ZooKeeper lock).
    pub zk_session: Duration,
}

impl Timing {
    /// The full run.
    pub fn full() -> Timing {
        Timing {
            holders: 3,
            warmup: Duration::from_secs(2),
            recovery: Duration::from_secs(5),
            stopped_for: Duration::from_secs(4),
            ttl: Duration::from_secs(1),
            wait: Duration::from_secs(2),
            pause: Duration::from_millis(250),
            zk_session: Duration::from_secs(2),
        }
    }

    /// `--quick`: shorter phases (the stops stay longer than lease and session).
    pub fn quick() -> Timing {
        Timing {
            warmup: Duration::from_secs(1),
            recovery: Duration::from_secs(3),
            stopped_for: Duration::from_secs(3),
            ..Timing::full()
        }
    }
}

/// What one scenario produced.
pub struct ScenarioResult {
    /// The table row.
    pub row: Row,
    /// What the fault did, in words, with times relative to the holders' start.
    pub notes: Vec<String>,
    /// Where the histories are.
    pub dir: PathBuf,
    /// How long the scenario took.
    pub elapsed: Duration,
}

/// The servers of one scenario (dropped, so killed by pid, when it ends).
enum Servers {
    Redis {
        primary: RedisServer,
        /// Failover: the replica, the proxy on its replication link, the clients' proxy.
        failover: Option<(RedisServer, Proxy, Proxy)>,
        /// Failover: a new replica of the promoted server.
        spare: Option<RedisServer>,
    },
    Mysql(MariaDb),
    Zookeeper {
        server: ZooKeeper,
        front: Proxy,
    },
    Etcd {
        server: Etcd,
        front: Proxy,
    },
    Postgres {
        server: Postgres,
        front: Proxy,
    },
}

/// The key every holder locks.
const KEY: &str = "chaos";

/// Runs one scenario in a new directory under `base`.
pub fn run(backend: Backend, fault: Fault, timing: &Timing, base: &Path) -> ScenarioResult {
    let started = Instant::now();
    let dir = base.join(format!("{}-{}", backend.name(), fault.name()));
    let mut notes = Vec::new();
    let outcome = match std::fs::create_dir_all(&dir) {
        Ok(()) => run_in(backend, fault, timing, &dir, &mut notes)
            .unwrap_or_else(|e| Outcome::Broken(e.replace('|', "/"))),
        Err(e) => Outcome::Broken(format!("{}: {e}", dir.display())),
    };
    ScenarioResult {
        row: Row {
            backend: backend.name().to_owned(),
            fault: fault.name().to_owned(),
            fenced: true,
            outcome,
        },
        notes,
        dir,
        elapsed: started.elapsed(),
    }
}

fn run_in(
    backend: Backend,
    fault: Fault,
    t: &Timing,
    dir: &Path,
    notes: &mut Vec<String>,
) -> Result<Outcome, String> {
    if fault == Fault::FailoverReplicas {
        if let Err(why) = probe_replicas(dir) {
            return Ok(Outcome::NotAvailable(why));
        }
    }
    let (mut servers, url) = start_servers(backend, fault, t, dir)?;
    // What the lock service keeps for a holder that no longer acts: the lease, or for
    // ZooKeeper the session (the node lives until the session expires).
    let lease = match backend {
        Backend::Zookeeper => t.zk_session.max(t.ttl),
        // etcd leases are whole seconds, at least the ttl.
        Backend::Etcd => Duration::from_secs(t.ttl.as_secs_f64().ceil().max(1.0) as u64),
        _ => t.ttl,
    };
    let start_us = now_us();
    let mut holders = spawn_holders(&url, t, dir)?;
    std::thread::sleep(t.warmup);
    let rel = |us: u64| (us as f64 - start_us as f64) / 1e6;
    let window = inject(fault, &mut servers, &holders, t, dir, notes, &rel)?;
    std::thread::sleep(t.recovery);
    let stop_us = now_us();
    // For a reader of the histories: the same times the checker uses.
    let _ = std::fs::write(
        dir.join("scenario.log"),
        format!(
            "url\t{url}\nstart_us\t{start_us}\nfault_us\t{}\nstop_us\t{stop_us}\n{}\n",
            window.map_or("-".to_owned(), |(a, b)| format!("{a}\t{b}")),
            notes.join("\n")
        ),
    );
    std::fs::write(stop_path(dir), b"").map_err(|e| format!("stop file: {e}"))?;
    let _ = wait_until(Duration::from_secs(8), "holders to exit", || {
        holders.iter_mut().all(Proc::exited)
    });
    for (i, h) in holders.iter_mut().enumerate() {
        if !h.exited() {
            notes.push(format!(
                "holder {} had not exited 8 s after the stop: SIGKILLed",
                i + 1
            ));
            h.kill();
        }
    }
    drop(servers);
    let events = history::read_dir(dir)?;
    let report = checker::check(
        &events,
        &Window {
            start_us,
            fault: window,
            stop_us,
            lease_us: Some(u64::try_from(lease.as_micros()).unwrap_or(u64::MAX)),
        },
    );
    let mut errors: Vec<&Event> = events
        .iter()
        .filter(|e| matches!(e.kind, Kind::AcquireError | Kind::ReleaseError))
        .collect();
    errors.sort_by_key(|e| e.t_us);
    if let Some(first) = errors.first() {
        notes.push(format!(
            "first client error at {:+.2} s ({} in all): {}",
            rel(first.t_us),
            errors.len(),
            first.detail
        ));
    }
    Ok(Outcome::Checked(report))
}

/// Starts the servers for the scenario; returns them and the URL the holders use.
fn start_servers(
    backend: Backend,
    fault: Fault,
    t: &Timing,
    dir: &Path,
) -> Result<(Servers, String), String> {
    match backend {
        Backend::Redis if matches!(fault, Fault::Failover | Fault::FailoverReplicas) => {
            let primary = RedisServer::start(dir, None)?;
            // The replica reaches its primary through a proxy, so its link can be frozen (the
            // replica then lags behind, as asynchronous replication does under load).
            let link = Proxy::start(primary.port).map_err(|e| format!("link proxy: {e}"))?;
            let replica = RedisServer::start(dir, Some(link.port))?;
            // The clients reach "the current primary" through a proxy the failover moves.
            let front = Proxy::start(primary.port).map_err(|e| format!("front proxy: {e}"))?;
            let mut url = redis_url(front.port, t);
            if fault == Fault::FailoverReplicas {
                url.push_str("&replicas=1");
            }
            let servers = Servers::Redis {
                primary,
                failover: Some((replica, link, front)),
                spare: None,
            };
            Ok((servers, url))
        }
        Backend::Redis => {
            let primary = RedisServer::start(dir, None)?;
            let mut url = redis_url(primary.port, t);
            if fault == Fault::ServerKillNoDelay {
                url = format!("{}?restart_delay=0", primary.url());
            }
            let servers = Servers::Redis {
                primary,
                failover: None,
                spare: None,
            };
            Ok((servers, url))
        }
        Backend::Mysql => {
            let db = MariaDb::start(dir)?;
            let url = db.url();
            Ok((Servers::Mysql(db), url))
        }
        Backend::Zookeeper => {
            let server = ZooKeeper::start(dir)?;
            // Always through the proxy, so that "killed connections" can be done the same way.
            let front = Proxy::start(server.port).map_err(|e| format!("zk proxy: {e}"))?;
            let url = ZooKeeper::url(front.port, t.zk_session);
            Ok((Servers::Zookeeper { server, front }, url))
        }
        Backend::Etcd => {
            let server = Etcd::start(dir)?;
            // Through a proxy, so that "killed connections" can be done the same way.
            let front = Proxy::start(server.port).map_err(|e| format!("etcd proxy: {e}"))?;
            let url = Etcd::url(front.port);
            Ok((Servers::Etcd { server, front }, url))
        }
        Backend::Postgres => {
            let server = Postgres::start(dir)?;
            // Through a proxy, so that "killed connections" can be done the same way.
            let front = Proxy::start(server.port).map_err(|e| format!("postgres proxy: {e}"))?;
            let url = Postgres::url(front.port);
            Ok((Servers::Postgres { server, front }, url))
        }
    }
}

/// The holders' Redis URL: `?restart_delay=` set to the lease, as dlock's docs ask ("set it to
/// your longest ttl"); the default (30 s) would keep every fresh server of the suite out of use
/// for longer than a scenario lasts.
fn redis_url(port: u16, t: &Timing) -> String {
    format!(
        "redis://127.0.0.1:{port}?restart_delay={}ms",
        t.ttl.as_millis()
    )
}

fn spawn_holders(url: &str, t: &Timing, dir: &Path) -> Result<Vec<Proc>, String> {
    let exe = std::env::current_exe().map_err(|e| format!("own executable: {e}"))?;
    (1..=t.holders)
        .map(|id| {
            let cfg = HolderConfig {
                url: url.to_owned(),
                key: KEY.to_owned(),
                id,
                dir: dir.to_owned(),
                ttl: t.ttl,
                wait: t.wait,
                pause: t.pause,
            };
            Proc::spawn(
                Command::new(&exe).arg("holder").args(cfg.to_args()),
                &dir.join(format!("holder-{id}.stderr")),
            )
        })
        .collect()
}

/// The holder (id, fence) that is in its pause right now (its last event is a granted read),
/// looked for up to `timeout`.
fn holder_in_section(dir: &Path, holders: u32, timeout: Duration) -> Option<(u32, Option<u64>)> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        for id in 1..=holders {
            let text = std::fs::read_to_string(history_path(dir, id)).unwrap_or_default();
            let last = text.lines().next_back().and_then(|l| Event::parse(l).ok());
            if let Some(e) = last.filter(|e| e.kind == Kind::ReadOk) {
                // Not at the very end of its pause: it must still be in the section when hit.
                if now_us().saturating_sub(e.t_us) < 100_000 {
                    return Some((id, e.fence));
                }
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    None
}

fn server_pid(servers: &Servers) -> u32 {
    match servers {
        Servers::Redis { primary, .. } => primary.pid(),
        Servers::Mysql(db) => db.pid(),
        Servers::Zookeeper { server, .. } => server.pid(),
        Servers::Etcd { server, .. } => server.pid(),
        Servers::Postgres { server, .. } => server.pid(),
    }
}

fn fence_text(f: Option<u64>) -> String {
    f.map_or("none".to_owned(), |f| f.to_string())
}

/// Injects `fault`; returns its window (start, end), `None` for no fault.
fn inject(
    fault: Fault,
    servers: &mut Servers,
    holders: &[Proc],
    t: &Timing,
    dir: &Path,
    notes: &mut Vec<String>,
    rel: &dyn Fn(u64) -> f64,
) -> Result<Option<(u64, u64)>, String> {
    let secs = |d: Duration| d.as_secs_f64();
    let n = holders.len() as u32;
    match fault {
        Fault::None => {
            notes.push("no fault: the holders ran undisturbed".to_owned());
            Ok(None)
        }
        Fault::HolderStop => {
            let Some((id, fence)) = holder_in_section(dir, n, Duration::from_secs(3)) else {
                notes.push(
                    "no holder was in its critical section within 3 s: nothing stopped".into(),
                );
                let now = now_us();
                return Ok(Some((now, now)));
            };
            let pid = holders[id as usize - 1].pid();
            let t0 = now_us();
            signal(pid, libc::SIGSTOP)?;
            std::thread::sleep(t.stopped_for);
            signal(pid, libc::SIGCONT)?;
            let t1 = now_us();
            notes.push(format!(
                "SIGSTOP of holder {id} (pid {pid}) in its critical section (fence {}) at \
                 {:+.2} s, SIGCONT at {:+.2} s: stopped {:.1} s against a lease of {:.1} s{}",
                fence_text(fence),
                rel(t0),
                rel(t1),
                secs(t.stopped_for),
                secs(t.ttl),
                if matches!(servers, Servers::Zookeeper { .. }) {
                    format!(" (ZooKeeper session {:.1} s)", secs(t.zk_session))
                } else {
                    String::new()
                }
            ));
            Ok(Some((t0, t1)))
        }
        Fault::ServerStop => {
            let pid = server_pid(servers);
            // PostgreSQL's backends are the postmaster's children: stop the whole group.
            let stop = |sig| match servers {
                Servers::Postgres { .. } => signal_group(pid, sig),
                _ => signal(pid, sig),
            };
            let t0 = now_us();
            stop(libc::SIGSTOP)?;
            std::thread::sleep(t.stopped_for);
            stop(libc::SIGCONT)?;
            let t1 = now_us();
            notes.push(format!(
                "SIGSTOP of the server (pid {pid}) at {:+.2} s, SIGCONT at {:+.2} s ({:.1} s; \
                 lease {:.1} s)",
                rel(t0),
                rel(t1),
                secs(t.stopped_for),
                secs(t.ttl)
            ));
            Ok(Some((t0, t1)))
        }
        Fault::ServerKill | Fault::ServerKillNoDelay => {
            let in_section = holder_in_section(dir, n, Duration::from_secs(3));
            let pid = server_pid(servers);
            let t0 = now_us();
            let what = match servers {
                Servers::Redis { primary, .. } => {
                    primary.restart_empty()?;
                    if fault == Fault::ServerKill {
                        "restarted on the same port with nothing kept (--save '' --appendonly \
                         no); the holders' URL has `?restart_delay=` = the lease, so dlock \
                         grants nothing there until the new server has been up that long"
                    } else {
                        "restarted on the same port with nothing kept (--save '' --appendonly \
                         no); the holders' URL has `?restart_delay=0` (dlock's delayed restart \
                         off)"
                    }
                }
                Servers::Mysql(db) => {
                    db.kill_and_restart()?;
                    "restarted on the same port and data directory (InnoDB recovery)"
                }
                Servers::Zookeeper { server, .. } => {
                    server.kill_and_restart()?;
                    "restarted on the same port and data directory"
                }
                Servers::Etcd { server, .. } => {
                    server.kill_and_restart()?;
                    "restarted on the same ports and data directory (write-ahead log replay)"
                }
                Servers::Postgres { server, .. } => {
                    server.kill_and_restart()?;
                    "the postmaster and its backends SIGKILLed; restarted on the same port and \
                     data directory (crash recovery)"
                }
            };
            let t1 = now_us();
            notes.push(format!(
                "SIGKILL of the server (pid {pid}) at {:+.2} s{}; {what}, answering again at \
                 {:+.2} s",
                rel(t0),
                in_section.map_or(String::new(), |(id, f)| format!(
                    " while holder {id} was in its critical section (fence {})",
                    fence_text(f)
                )),
                rel(t1)
            ));
            Ok(Some((t0, t1)))
        }
        Fault::ClientKill => {
            let t0 = now_us();
            let mut done = Vec::new();
            for round in 0..3 {
                if round > 0 {
                    std::thread::sleep(Duration::from_secs(1));
                }
                let at = rel(now_us());
                let killed = match servers {
                    Servers::Redis { primary, .. } => {
                        let normal = primary.cli(&["CLIENT", "KILL", "TYPE", "normal"])?;
                        let pubsub = primary.cli(&["CLIENT", "KILL", "TYPE", "pubsub"])?;
                        format!(
                            "CLIENT KILL TYPE normal: {}, TYPE pubsub: {}",
                            normal.trim(),
                            pubsub.trim()
                        )
                    }
                    Servers::Mysql(db) => {
                        format!(
                            "KILL CONNECTION of {} connection(s)",
                            db.kill_connections()?
                        )
                    }
                    Servers::Zookeeper { front, .. }
                    | Servers::Etcd { front, .. }
                    | Servers::Postgres { front, .. } => {
                        format!("proxy cut {} connection(s)", front.cut_all())
                    }
                };
                done.push(format!("{at:+.2} s: {killed}"));
            }
            let t1 = now_us();
            notes.push(format!("killed client connections: {}", done.join("; ")));
            Ok(Some((t0, t1)))
        }
        Fault::Failover | Fault::FailoverReplicas => {
            let Servers::Redis {
                primary,
                failover: Some((replica, link, front)),
                spare,
            } = servers
            else {
                return Err("failover needs a Redis primary with a replica".into());
            };
            let t0 = now_us();
            link.freeze();
            let lag = Duration::from_millis(1500);
            std::thread::sleep(lag);
            let pid = primary.pid();
            primary.kill();
            let promoted = replica.cli(&["REPLICAOF", "NO", "ONE"])?;
            front.retarget(replica.port);
            let cut = front.cut_all();
            let t1 = now_us();
            // The promoted server gets a replica of its own (as a real deployment would give
            // it), so that `?replicas=1` can be satisfied again.
            *spare = Some(RedisServer::start(dir, Some(replica.port))?);
            notes.push(format!(
                "replication link frozen at {:+.2} s (the replica stops receiving writes); \
                 {:.1} s later SIGKILL of the primary (pid {pid}), `REPLICAOF NO ONE` on the \
                 replica ({}), the clients' proxy moved to it and {cut} client connection(s) \
                 cut at {:+.2} s; a new replica of the promoted server was in sync at {:+.2} s",
                rel(t0),
                lag.as_secs_f64(),
                promoted.trim(),
                rel(t1),
                rel(now_us())
            ));
            Ok(Some((t0, t1)))
        }
    }
}

/// Whether dlock honours `?replicas=1` on a Redis URL: `Err(reason)` when it does not.
///
/// A throwaway server without replicas: a Locker that honours the parameter cannot grant a lock
/// there (no replica can confirm it); one that ignores it grants at once.
fn probe_replicas(dir: &Path) -> Result<(), String> {
    let server = RedisServer::start(&dir.join("probe"), None)?;
    // restart_delay=0: the probe server is fresh, and must not refuse for that reason.
    let url = format!("{}?replicas=1&restart_delay=0", server.url());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))?;
    runtime.block_on(async {
        let limit = Duration::from_secs(10);
        let locker = match tokio::time::timeout(limit, dlock::Locker::connect(&url)).await {
            Ok(Ok(locker)) => locker,
            Ok(Err(e)) => return Err(format!("`Locker::connect` refuses `?replicas=1`: {e}")),
            Err(_) => return Err("`Locker::connect` with `?replicas=1` hung for 10 s".into()),
        };
        let attempt = locker
            .lock("probe")
            .ttl(Duration::from_secs(1))
            .wait(Duration::ZERO);
        let granted = matches!(tokio::time::timeout(limit, attempt).await, Ok(Ok(_)));
        let _ = tokio::time::timeout(limit, locker.close()).await;
        if granted {
            Err(
                "`Locker::connect` accepts `?replicas=1` but ignores it (it granted a lock on a \
                 primary without any replica)"
                    .into(),
            )
        } else {
            Ok(())
        }
    })
}

/// The notes of a scenario as markdown list items.
pub fn notes_markdown(result: &ScenarioResult) -> String {
    let mut out = String::new();
    for n in &result.notes {
        let _ = writeln!(out, "  - {n}");
    }
    if let Outcome::Checked(r) = &result.row.outcome {
        for f in &r.findings {
            let _ = writeln!(out, "  - {f}");
        }
    }
    out
}
