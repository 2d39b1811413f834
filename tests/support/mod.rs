//! Shared helpers of the integration tests: server URLs and clear failures when a server is down.
#![allow(dead_code)] // each test binary uses a subset

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The Redis URL the tests use: `DLOCK_TEST_REDIS_URL` or `redis://127.0.0.1:6379`, without
/// dlock's delay after a server restart (the test servers are fresh; the delay has a test of
/// its own).
pub fn redis_url() -> String {
    std::env::var("DLOCK_TEST_REDIS_URL")
        .unwrap_or_else(|_| "redis://127.0.0.1:6379?restart_delay=0".into())
}

/// The MariaDB/MySQL URL the tests use: `DLOCK_TEST_MYSQL_URL` or `mysql://root@127.0.0.1:3306/test`.
pub fn mysql_url() -> String {
    std::env::var("DLOCK_TEST_MYSQL_URL")
        .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/test".into())
}

/// The PostgreSQL URL the tests use: `DLOCK_TEST_POSTGRES_URL` or
/// `postgres://postgres@127.0.0.1:5432/test`.
pub fn postgres_url() -> String {
    std::env::var("DLOCK_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// The etcd URL the tests use: `DLOCK_TEST_ETCD_URL` or `etcd://127.0.0.1:2379/dlock-test`.
pub fn etcd_url() -> String {
    std::env::var("DLOCK_TEST_ETCD_URL")
        .unwrap_or_else(|_| "etcd://127.0.0.1:2379/dlock-test".into())
}

/// The ZooKeeper URL the tests use: `DLOCK_TEST_ZOOKEEPER_URL` or `zookeeper://127.0.0.1:2181/dlock-test`.
pub fn zookeeper_url() -> String {
    std::env::var("DLOCK_TEST_ZOOKEEPER_URL")
        .unwrap_or_else(|_| "zookeeper://127.0.0.1:2181/dlock-test".into())
}

/// Connects to `url` or fails the test with a message naming the server and how to start it.
pub async fn connect(server: &str, url: &str) -> dlock::Locker {
    match dlock::Locker::connect(url).await {
        Ok(locker) => locker,
        Err(e) => panic!(
            "{server} is not reachable at {url}: {e}\n\
             start the test servers with `scripts/services.sh up` (or set DLOCK_TEST_*_URL)"
        ),
    }
}

/// Connects to a private server that may still be starting (for up to `limit`); fails naming
/// `server`.
pub async fn connect_when_up(server: &str, url: &str, limit: Duration) -> dlock::Locker {
    let until = std::time::Instant::now() + limit;
    loop {
        match dlock::Locker::connect(url).await {
            Ok(locker) => return locker,
            Err(e) => {
                assert!(std::time::Instant::now() < until, "{server} at {url}: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

/// `url` with its `host:port` replaced by `127.0.0.1:port` (the server's own port when `port`
/// is 0) and, when `login` is given, its `user[:password]@` by `login@`; and the server's port
/// (`default_port` when the URL names none). For a proxy in front of a test server.
pub fn url_through(url: &str, default_port: u16, port: u16, login: Option<&str>) -> (String, u16) {
    let (scheme, rest) = url.split_once("://").expect("a scheme://host URL");
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let (old_login, host) = match authority.rsplit_once('@') {
        Some((login, host)) => (format!("{login}@"), host),
        None => (String::new(), authority),
    };
    let login = login.map_or(old_login, |l| format!("{l}@"));
    let server_port = host
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .unwrap_or(default_port);
    let port = if port == 0 { server_port } else { port };
    (
        format!("{scheme}://{login}127.0.0.1:{port}{path}"),
        server_port,
    )
}

/// A unique key prefix per test run, so parallel test processes never share keys.
pub fn unique(name: &str) -> String {
    format!("{name}:{}", uuid::Uuid::new_v4().simple())
}

/// A child process (the `dlock-hold` binary) that holds a lock until killed.
pub struct Holder {
    pub child: Child,
    pub fence: Option<u64>,
}

impl Holder {
    /// Starts `dlock-hold <url> <key> <ttl_ms> <watchdog>` and waits until it holds the lock.
    pub fn start(url: &str, key: &str, ttl: Duration, watchdog: bool) -> Holder {
        Holder::start_kind(url, key, ttl, watchdog, "lock")
    }

    /// As [`Holder::start`], holding `kind`: `lock`, `read`, `write`, `permit:N` (a semaphore of
    /// N) or `campaign` (`key` is the election's name).
    pub fn start_kind(url: &str, key: &str, ttl: Duration, watchdog: bool, kind: &str) -> Holder {
        let mut child = Command::new(env!("CARGO_BIN_EXE_dlock-hold"))
            .args([
                url,
                key,
                &ttl.as_millis().to_string(),
                if watchdog { "watchdog" } else { "fixed" },
                kind,
            ])
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn dlock-hold");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read from dlock-hold");
        let fence = match line.trim().strip_prefix("HELD ") {
            Some(f) => f.parse().ok(),
            None => {
                let _ = child.kill();
                panic!("dlock-hold did not take the lock: {line:?}");
            }
        };
        Holder { child, fence }
    }

    /// SIGKILL: the process dies without releasing anything.
    pub fn kill(mut self) {
        self.child.kill().expect("SIGKILL dlock-hold");
        let _ = self.child.wait();
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A private `redis-server` on a free port, for tests that pause or kill a server. Stopped (by
/// pid, never by name) on drop.
pub struct RedisServer {
    pub port: u16,
    child: Child,
    dir: std::path::PathBuf,
}

impl RedisServer {
    pub fn start() -> RedisServer {
        Self::start_on(free_port())
    }

    /// Starts a server on `port` (e.g. again after [`kill`](Self::kill)).
    pub fn start_on(port: u16) -> RedisServer {
        Self::start_with(port, &[])
    }

    /// Starts a replica of the server on `primary` (on a free port), and waits until it has
    /// synchronized.
    pub fn start_replica_of(primary: u16) -> RedisServer {
        let primary_port = primary.to_string();
        let replica = Self::start_with(free_port(), &["--replicaof", "127.0.0.1", &primary_port]);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let out = Command::new("redis-cli")
                .args(["-p", &replica.port.to_string(), "INFO", "replication"])
                .output()
                .expect("redis-cli");
            if String::from_utf8_lossy(&out.stdout).contains("master_link_status:up") {
                return replica;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the replica did not sync"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Starts a server on `port` with extra command-line arguments.
    pub fn start_with(port: u16, extra: &[&str]) -> RedisServer {
        let dir = std::env::temp_dir().join(format!("dlock-redis-{port}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .arg("--dir")
            .arg(&dir)
            .args(extra)
            .stdout(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start redis-server ({e}); install it with `scripts/services.sh up`")
            });
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "private redis-server on {port} did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        RedisServer { port, child, dir }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}?restart_delay=0", self.port)
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill {sig} {}", self.child.id());
    }

    /// SIGSTOP: the server stops answering but keeps its sockets open.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// SIGCONT.
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    /// SIGKILL; returns the port so a new server can take it.
    pub fn kill(self) -> u16 {
        self.port
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-CONT", &self.child.id().to_string()])
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A TCP port nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind an ephemeral port")
}

/// `tasks` tasks spread over `lockers` each take `key` `rounds` times around a non-atomic
/// read-modify-write held across an await. Asserts that the counter ends exact and that the
/// fences, recorded while holding the lock (so in holder order), strictly increase; returns them.
pub async fn contend(lockers: &[dlock::Locker], key: &str, tasks: usize, rounds: u64) -> Vec<u64> {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Arc, Mutex};
    let counter = Arc::new(AtomicU64::new(0));
    let fences = Arc::new(Mutex::new(Vec::new()));
    let mut joins = Vec::new();
    for i in 0..tasks {
        let locker = lockers[i % lockers.len()].clone();
        let (key, counter, fences) = (key.to_owned(), counter.clone(), fences.clone());
        joins.push(tokio::spawn(async move {
            for _ in 0..rounds {
                let guard = locker
                    .lock(key.as_str())
                    .wait(Duration::from_secs(120))
                    .await
                    .expect("lock");
                let seen = counter.load(Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(1)).await;
                counter.store(seen + 1, Ordering::SeqCst);
                if let Some(fence) = guard.fence() {
                    fences.lock().unwrap().push(fence);
                }
                guard.release().await.expect("release");
            }
        }));
    }
    for j in joins {
        j.await.expect("task");
    }
    assert_eq!(
        counter.load(Ordering::SeqCst),
        tasks as u64 * rounds,
        "mutual exclusion: the non-atomic counter must end exact"
    );
    let fences = std::mem::take(&mut *fences.lock().unwrap());
    assert!(
        fences.windows(2).all(|w| w[0] < w[1]),
        "fences must strictly increase in holder order: {fences:?}"
    );
    fences
}

/// A TCP proxy (std threads) whose connections can be frozen one by one: a frozen connection
/// swallows everything in both directions and stays open, as a half-open socket after a silent
/// network failure does.
pub struct FreezingProxy {
    pub port: u16,
    accepted: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    frozen: std::sync::Arc<std::sync::Mutex<Vec<usize>>>,
}

impl FreezingProxy {
    pub fn start(target_port: u16) -> FreezingProxy {
        use std::io::{Read, Write};
        use std::net::{TcpListener, TcpStream};
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::{Arc, Mutex};
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let port = listener.local_addr().expect("proxy address").port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let frozen = Arc::new(Mutex::new(Vec::<usize>::new()));
        let (accepted2, frozen2) = (accepted.clone(), frozen.clone());
        std::thread::spawn(move || {
            for down in listener.incoming() {
                let Ok(down) = down else { continue };
                let Ok(up) = TcpStream::connect(("127.0.0.1", target_port)) else {
                    continue;
                };
                let index = accepted2.fetch_add(1, Ordering::SeqCst);
                for (mut from, mut to) in [
                    (
                        down.try_clone().expect("clone"),
                        up.try_clone().expect("clone"),
                    ),
                    (up, down),
                ] {
                    let frozen = frozen2.clone();
                    std::thread::spawn(move || {
                        let mut buf = [0u8; 16 * 1024];
                        loop {
                            let n = match from.read(&mut buf) {
                                Ok(0) | Err(_) => break,
                                Ok(n) => n,
                            };
                            if frozen.lock().unwrap().contains(&index) {
                                continue;
                            }
                            if to.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
        FreezingProxy {
            port,
            accepted,
            frozen,
        }
    }

    /// Connections accepted so far (numbered from 0 in accept order).
    pub fn accepted(&self) -> usize {
        self.accepted.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Connection `index` swallows all traffic from now on.
    pub fn freeze(&self, index: usize) {
        self.frozen.lock().unwrap().push(index);
    }
}

/// Runs a lock request in a task of its own: the lock is then held by another holder than the
/// test's task (which, locking a key it holds again through the same Locker, would be refused at
/// once with `Error::AlreadyHeld`).
pub async fn in_another_task(request: dlock::LockRequest) -> dlock::Result<dlock::LockGuard> {
    tokio::spawn(std::future::IntoFuture::into_future(request))
        .await
        .expect("lock task")
}

/// A server process a test started, killed (by pid) and its directory removed on drop; its
/// output goes to `log.txt` in that directory, shown when it does not come up.
pub struct Process {
    what: String,
    child: Option<Child>,
    pub dir: std::path::PathBuf,
}

impl Process {
    /// Starts `command` (its output to `dir/log.txt`); fails naming `what` and how to install it.
    pub fn spawn(what: &str, command: &mut Command, dir: std::path::PathBuf) -> Process {
        let log = std::fs::File::create(dir.join("log.txt")).expect("log file");
        let child = command
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {what} ({e}); run `scripts/services.sh up`"));
        Process {
            what: what.to_owned(),
            child: Some(child),
            dir,
        }
    }

    /// SIGKILL.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// What it printed, headed by what it is.
    pub fn log(&self) -> String {
        let log = std::fs::read_to_string(self.dir.join("log.txt")).unwrap_or_default();
        format!("{}:\n{log}", self.what)
    }

    /// Waits (20 s at most) until something listens on `port`.
    pub fn wait_for_port(&self, port: u16) {
        let until = std::time::Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < until,
                "nothing listens on {port}; {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A fresh temporary directory for one server of a test.
pub fn temp_dir(what: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("dlock-{what}-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// A private etcd on free ports (tests pause it with `signal`), stopped by pid on drop.
pub struct EtcdServer {
    pub child: Child,
    pub port: u16,
    dir: std::path::PathBuf,
}

/// `etcd` as a one-member cluster `name`, its data under `dir`, serving clients on `client_url`
/// (`http://` or `https://`) and its peer port on `peer` (plain HTTP).
pub fn etcd_command(name: &str, dir: &std::path::Path, client_url: &str, peer: u16) -> Command {
    let peer_url = format!("http://127.0.0.1:{peer}");
    let mut command = Command::new("etcd");
    command
        .args(["--name", name, "--data-dir"])
        .arg(dir.join("data"))
        .args(["--listen-client-urls", client_url])
        .args(["--advertise-client-urls", client_url])
        .args(["--listen-peer-urls", &peer_url])
        .args(["--initial-advertise-peer-urls", &peer_url])
        .arg("--initial-cluster")
        .arg(format!("{name}={peer_url}"));
    command
}

impl EtcdServer {
    pub fn start() -> EtcdServer {
        let (port, peer) = (free_port(), free_port());
        let dir = temp_dir("etcd-private");
        let client_url = format!("http://127.0.0.1:{port}");
        let child = etcd_command("private", &dir, &client_url, peer)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start etcd ({e}); run `scripts/services.sh up`"));
        EtcdServer { child, port, dir }
    }

    /// Sends `sig` (`-STOP`, `-CONT`) to the server.
    pub fn signal(&self, sig: &str) {
        signal(self.child.id(), sig);
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        self.signal("-CONT");
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Sends `sig` (`-STOP`, `-CONT`) to process `pid`.
pub fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill").args([sig, &pid.to_string()]).status();
}

/// The ZooKeeper test URL with `?session_timeout=4s` (the server's minimum with tickTime 2000).
pub fn zookeeper_url_with_short_session() -> String {
    let url = zookeeper_url();
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}session_timeout=4s")
}

/// `(hosts, root)` of the ZooKeeper test URL, for a raw client.
pub fn zookeeper_hosts_and_root() -> (String, String) {
    let url = zookeeper_url();
    let rest = url.split_once("://").expect("zookeeper URL").1;
    let rest = rest.split('?').next().unwrap_or(rest);
    let (hosts, root) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let root = if root.is_empty() || root == "/" {
        "/dlock"
    } else {
        root
    };
    (hosts.to_owned(), root.trim_end_matches('/').to_owned())
}
