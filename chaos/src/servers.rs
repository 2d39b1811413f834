//! Private servers on free loopback ports, started and stopped by pid.
//!
//! Why private servers: the faults pause, kill and wipe the server, which must never happen to
//! the machine's shared Redis, MariaDB or ZooKeeper (other work uses them). Every server here is
//! a child process of the suite, with its own data directory, signalled only through its own pid
//! and killed on drop.
//!
//! - Redis: `redis-server --save '' --appendonly no`, so a restart keeps nothing (the case the
//!   suite must show); replicas with `--replicaof`.
//! - MariaDB: `mariadb-install-db` into a fresh data directory, then `mariadbd` on a free port
//!   with `--skip-grant-tables` (root without password, allowed to `KILL` any connection). A
//!   restart keeps the data directory (InnoDB rows survive, as in production).
//! - ZooKeeper: `java ... org.apache.zookeeper.server.ZooKeeperServerMain <port> <datadir> 200`
//!   from the Debian package's jar: a standalone server with a 200 ms tick, so sessions of 0.4 to
//!   4 s are allowed (the suite uses 2 s). A restart keeps the data directory.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Sends `sig` to `pid`.
///
/// # Errors
/// When the signal cannot be delivered (no such process, not permitted).
pub fn signal(pid: u32, sig: libc::c_int) -> Result<(), String> {
    let pid_t = libc::pid_t::try_from(pid).map_err(|_| format!("bad pid {pid}"))?;
    // SAFETY: kill(2) with a positive pid signals exactly that process (one we started).
    let rc = unsafe { libc::kill(pid_t, sig) };
    if rc == 0 {
        Ok(())
    } else {
        Err(format!(
            "kill({pid}, {sig}): {}",
            std::io::Error::last_os_error()
        ))
    }
}

/// Sends `sig` to the process group `pgid` (a server whose workers are its children, started
/// as the leader of a group of its own).
///
/// # Errors
/// When the signal cannot be delivered.
pub fn signal_group(pgid: u32, sig: libc::c_int) -> Result<(), String> {
    let pgid_t = libc::pid_t::try_from(pgid).map_err(|_| format!("bad pgid {pgid}"))?;
    // SAFETY: killpg(2) signals the group of a process we started with a group of its own.
    let rc = unsafe { libc::killpg(pgid_t, sig) };
    if rc == 0 {
        Ok(())
    } else {
        Err(format!(
            "killpg({pgid}, {sig}): {}",
            std::io::Error::last_os_error()
        ))
    }
}

/// Waits (30 s at most) until a dlock Locker connects to `url`; the error has the Locker's last
/// error and the end of the server's log (`log`).
fn wait_for_locker(url: &str, what: &str, log: &Path) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))?;
    let mut last = String::new();
    wait_until(Duration::from_secs(30), what, || {
        runtime.block_on(async {
            match dlock::Locker::connect(url).await {
                Ok(locker) => {
                    let _ = locker.close().await;
                    true
                }
                Err(e) => {
                    last = e.to_string();
                    false
                }
            }
        })
    })
    .map_err(|e| {
        let log = std::fs::read_to_string(log).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(3).collect();
        format!("{e}: {last}; server log: {}", tail.join(" / "))
    })
}

/// A TCP port nothing listens on right now.
///
/// # Errors
/// When no ephemeral port can be bound.
pub fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("bind an ephemeral port: {e}"))
}

/// Polls `ready` every 50 ms until it is true or `timeout` passes.
///
/// # Errors
/// `what` did not become ready in time.
pub fn wait_until(
    timeout: Duration,
    what: &str,
    mut ready: impl FnMut() -> bool,
) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    loop {
        if ready() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("{what} not ready after {timeout:?}"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A child process, SIGCONTed and SIGKILLed (by pid) on drop.
pub struct Proc {
    child: Child,
}

impl Proc {
    /// Starts `cmd` (stdout and stdin closed; stderr to `log`).
    ///
    /// # Errors
    /// When the program cannot be started.
    pub fn spawn(cmd: &mut Command, log: &Path) -> Result<Proc, String> {
        let stderr = std::fs::File::create(log)
            .map(Stdio::from)
            .unwrap_or_else(|_| Stdio::null());
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .map_err(|e| format!("cannot start {:?}: {e}", cmd.get_program()))?;
        Ok(Proc { child })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// True once the process has ended.
    pub fn exited(&mut self) -> bool {
        !matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGKILL, and reap it.
    pub fn kill(&mut self) {
        let _ = signal(self.pid(), libc::SIGCONT);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

fn have(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program} >/dev/null")])
        .status()
        .is_ok_and(|s| s.success())
}

fn missing(program: &str) -> String {
    format!("`{program}` not found; install the servers with `scripts/services.sh up`")
}

/// Runs a short command, returning its stdout.
fn output(cmd: &mut Command) -> Result<String, String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {:?}: {e}", cmd.get_program()))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{:?} failed ({}): {}",
            cmd.get_program(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// A private `redis-server` that keeps nothing across restarts.
pub struct RedisServer {
    /// Its port.
    pub port: u16,
    dir: PathBuf,
    replicaof: Option<u16>,
    proc: Option<Proc>,
}

impl RedisServer {
    /// Starts a server on a free port, as a replica of `replicaof` if given, and waits until it
    /// answers (and, for a replica, until its link to the primary is up).
    ///
    /// # Errors
    /// When `redis-server` is missing or does not start.
    pub fn start(dir: &Path, replicaof: Option<u16>) -> Result<RedisServer, String> {
        if !have("redis-server") || !have("redis-cli") {
            return Err(missing("redis-server"));
        }
        let mut server = RedisServer {
            port: free_port()?,
            dir: dir.to_owned(),
            replicaof,
            proc: None,
        };
        server.spawn()?;
        Ok(server)
    }

    fn spawn(&mut self) -> Result<(), String> {
        let dir = self.dir.join(format!("redis-{}", self.port));
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let mut cmd = Command::new("redis-server");
        cmd.args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .args([
                "--repl-diskless-sync",
                "yes",
                "--repl-diskless-sync-delay",
                "0",
            ])
            .arg("--dir")
            .arg(&dir)
            .arg("--logfile")
            .arg(dir.join("redis.log"));
        if let Some(primary) = self.replicaof {
            cmd.args(["--replicaof", "127.0.0.1", &primary.to_string()]);
        }
        self.proc = Some(Proc::spawn(&mut cmd, &dir.join("stderr.log"))?);
        let port = self.port;
        wait_until(Duration::from_secs(10), "redis-server", || {
            redis_cli(port, &["PING"]).is_ok_and(|s| s.trim() == "PONG")
        })?;
        if self.replicaof.is_some() {
            wait_until(Duration::from_secs(10), "replica link", || {
                redis_cli(port, &["INFO", "replication"])
                    .is_ok_and(|s| s.contains("master_link_status:up"))
            })?;
        }
        Ok(())
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The server's pid (0 when not running).
    pub fn pid(&self) -> u32 {
        self.proc.as_ref().map_or(0, Proc::pid)
    }

    /// SIGKILL.
    pub fn kill(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill();
        }
    }

    /// A new server on the same port that remembers nothing (and is no one's replica).
    ///
    /// # Errors
    /// When it does not start.
    pub fn restart_empty(&mut self) -> Result<(), String> {
        self.kill();
        self.replicaof = None;
        self.spawn()
    }

    /// Runs `redis-cli` against this server.
    ///
    /// # Errors
    /// When the command fails.
    pub fn cli(&self, args: &[&str]) -> Result<String, String> {
        redis_cli(self.port, args)
    }
}

fn redis_cli(port: u16, args: &[&str]) -> Result<String, String> {
    output(
        Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &port.to_string()])
            .args(args),
    )
}

/// A private MariaDB (or MySQL) server.
pub struct MariaDb {
    /// Its port.
    pub port: u16,
    dir: PathBuf,
    server: &'static str,
    client: &'static str,
    proc: Option<Proc>,
}

fn as_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

impl MariaDb {
    /// Creates a data directory with `mariadb-install-db`, starts `mariadbd` on a free port and
    /// creates the database `test`.
    ///
    /// # Errors
    /// When the programs are missing or the server does not start.
    pub fn start(dir: &Path) -> Result<MariaDb, String> {
        let pick = |names: &[&'static str]| names.iter().copied().find(|n| have(n));
        let install = pick(&["mariadb-install-db", "mysql_install_db"])
            .ok_or_else(|| missing("mariadb-install-db"))?;
        let server = pick(&["mariadbd", "mysqld"]).ok_or_else(|| missing("mariadbd"))?;
        let client = pick(&["mariadb", "mysql"]).ok_or_else(|| missing("mariadb"))?;
        let dir = dir.join("mariadb");
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let mut cmd = Command::new(install);
        cmd.arg("--no-defaults")
            .arg(format!("--datadir={}", dir.join("data").display()))
            .args(["--auth-root-authentication-method=normal", "--skip-test-db"]);
        if as_root() {
            cmd.arg("--user=root");
        }
        output(&mut cmd).map_err(|e| format!("mariadb-install-db: {e}"))?;
        let mut db = MariaDb {
            port: free_port()?,
            dir,
            server,
            client,
            proc: None,
        };
        db.spawn()?;
        db.sql("CREATE DATABASE IF NOT EXISTS test")?;
        Ok(db)
    }

    fn spawn(&mut self) -> Result<(), String> {
        let d = &self.dir;
        let mut cmd = Command::new(self.server);
        cmd.arg("--no-defaults")
            .arg(format!("--datadir={}", d.join("data").display()))
            .arg(format!("--port={}", self.port))
            .arg("--bind-address=127.0.0.1")
            .arg(format!("--socket={}", d.join("sock").display()))
            .arg(format!("--pid-file={}", d.join("mariadbd.pid").display()))
            .arg(format!("--log-error={}", d.join("error.log").display()))
            .args([
                "--skip-grant-tables",
                "--skip-name-resolve",
                "--skip-log-bin",
                "--innodb-buffer-pool-size=32M",
            ]);
        if as_root() {
            cmd.arg("--user=root");
        }
        self.proc = Some(Proc::spawn(&mut cmd, &d.join("stderr.log"))?);
        let started = Instant::now();
        wait_until(Duration::from_secs(30), "mariadbd", || {
            self.sql("SELECT 1").is_ok()
        })
        .map_err(|e| {
            let log = std::fs::read_to_string(d.join("error.log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(5).collect();
            format!(
                "{e} ({:?}); error.log ends: {}",
                started.elapsed(),
                tail.join(" | ")
            )
        })
    }

    /// `mysql://root@127.0.0.1:<port>/test`.
    pub fn url(&self) -> String {
        format!("mysql://root@127.0.0.1:{}/test", self.port)
    }

    /// The server's pid (0 when not running).
    pub fn pid(&self) -> u32 {
        self.proc.as_ref().map_or(0, Proc::pid)
    }

    /// SIGKILL, then a new server on the same port and data directory (InnoDB recovers it).
    ///
    /// # Errors
    /// When it does not start again.
    pub fn kill_and_restart(&mut self) -> Result<(), String> {
        if let Some(mut p) = self.proc.take() {
            p.kill();
        }
        self.spawn()
    }

    /// Runs one statement with the command-line client, returning its tab-separated output.
    ///
    /// # Errors
    /// When the statement fails.
    pub fn sql(&self, statement: &str) -> Result<String, String> {
        output(
            Command::new(self.client)
                .arg("--no-defaults")
                .args(["-h", "127.0.0.1", "-P", &self.port.to_string(), "-uroot"])
                .args(["-N", "-B", "--connect-timeout=2", "-e", statement]),
        )
    }

    /// `KILL CONNECTION` of every client connection but the client's own; returns how many.
    ///
    /// # Errors
    /// When the process list cannot be read.
    pub fn kill_connections(&self) -> Result<usize, String> {
        let ids = self.sql(
            "SELECT id FROM information_schema.processlist WHERE id <> CONNECTION_ID() \
             AND command NOT IN ('Daemon', 'Binlog Dump') AND user <> 'system user'",
        )?;
        let ids: Vec<&str> = ids.split_whitespace().collect();
        if ids.is_empty() {
            return Ok(0);
        }
        let kills: String = ids
            .iter()
            .map(|id| format!("KILL CONNECTION {id};"))
            .collect();
        // --force: a connection that ended meanwhile makes its KILL fail; go on with the rest.
        let _ = output(
            Command::new(self.client)
                .arg("--no-defaults")
                .args(["-h", "127.0.0.1", "-P", &self.port.to_string(), "-uroot"])
                .args(["--force", "-e", &kills]),
        );
        Ok(ids.len())
    }
}

impl Drop for MariaDb {
    fn drop(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A private standalone ZooKeeper server.
pub struct ZooKeeper {
    /// Its port.
    pub port: u16,
    dir: PathBuf,
    classpath: String,
    proc: Option<Proc>,
}

/// Where Debian's `zookeeper` package puts its jar.
const ZK_JARS: [&str; 2] = [
    "/usr/share/java/zookeeper.jar",
    "/usr/share/zookeeper/zookeeper.jar",
];

impl ZooKeeper {
    /// Starts a server on a free port with a fresh data directory, and waits for `imok`.
    ///
    /// # Errors
    /// When java or the ZooKeeper jar is missing, or the server does not start.
    pub fn start(dir: &Path) -> Result<ZooKeeper, String> {
        if !have("java") {
            return Err(missing("java"));
        }
        let jar = ZK_JARS
            .iter()
            .find(|j| Path::new(j).exists())
            .ok_or_else(|| missing("zookeeper.jar (Debian package zookeeper)"))?;
        // The package's jar names its dependencies in its manifest; slf4j-nop silences logging.
        let mut classpath = (*jar).to_owned();
        if Path::new("/usr/share/java/slf4j-nop.jar").exists() {
            classpath.push_str(":/usr/share/java/slf4j-nop.jar");
        }
        let mut zk = ZooKeeper {
            port: free_port()?,
            dir: dir.join("zookeeper"),
            classpath,
            proc: None,
        };
        zk.spawn()?;
        Ok(zk)
    }

    fn spawn(&mut self) -> Result<(), String> {
        let data = self.dir.join("data");
        std::fs::create_dir_all(&data).map_err(|e| format!("{}: {e}", data.display()))?;
        let mut cmd = Command::new("java");
        cmd.args([
            "-Xmx256m",
            "-XX:+UseSerialGC",
            "-Dzookeeper.admin.enableServer=false",
            "-Dzookeeper.4lw.commands.whitelist=ruok",
            "-cp",
            &self.classpath,
            "org.apache.zookeeper.server.ZooKeeperServerMain",
            &self.port.to_string(),
        ])
        .arg(&data)
        .arg("200");
        self.proc = Some(Proc::spawn(&mut cmd, &self.dir.join("stderr.log"))?);
        let port = self.port;
        wait_until(Duration::from_secs(30), "zookeeper", || ruok(port))?;
        // `imok` comes before the server takes sessions: wait until a client gets one.
        wait_for_locker(
            &ZooKeeper::url(port, Duration::from_secs(2)),
            "zookeeper sessions",
            &self.dir.join("stderr.log"),
        )
    }

    /// `zookeeper://127.0.0.1:<port>/chaos?session_timeout=<session>` (through `port`, which
    /// may be a proxy in front of the server).
    pub fn url(port: u16, session: Duration) -> String {
        format!(
            "zookeeper://127.0.0.1:{port}/chaos?session_timeout={}ms",
            session.as_millis()
        )
    }

    /// The server's pid (0 when not running).
    pub fn pid(&self) -> u32 {
        self.proc.as_ref().map_or(0, Proc::pid)
    }

    /// SIGKILL, then a new server on the same port and data directory (sessions and nodes come
    /// back from the snapshot and transaction log).
    ///
    /// # Errors
    /// When it does not start again.
    pub fn kill_and_restart(&mut self) -> Result<(), String> {
        if let Some(mut p) = self.proc.take() {
            p.kill();
        }
        self.spawn()
    }
}

impl Drop for ZooKeeper {
    fn drop(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// ZooKeeper's `ruok` four-letter word answered `imok`.
fn ruok(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
    if s.write_all(b"ruok").is_err() {
        return false;
    }
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    answer == "imok"
}

/// A private single-member etcd.
pub struct Etcd {
    /// Its client port.
    pub port: u16,
    peer_port: u16,
    dir: PathBuf,
    proc: Option<Proc>,
}

impl Etcd {
    /// Starts a member on free ports with a fresh data directory, and waits until a Locker
    /// connects.
    ///
    /// # Errors
    /// When `etcd` is missing or does not start.
    pub fn start(dir: &Path) -> Result<Etcd, String> {
        if !have("etcd") {
            return Err(missing("etcd"));
        }
        let mut etcd = Etcd {
            port: free_port()?,
            peer_port: free_port()?,
            dir: dir.join("etcd"),
            proc: None,
        };
        etcd.spawn()?;
        Ok(etcd)
    }

    fn spawn(&mut self) -> Result<(), String> {
        std::fs::create_dir_all(&self.dir).map_err(|e| format!("{}: {e}", self.dir.display()))?;
        let client = format!("http://127.0.0.1:{}", self.port);
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let mut cmd = Command::new("etcd");
        cmd.args(["--name", "chaos", "--data-dir"])
            .arg(self.dir.join("data"))
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("chaos={peer}")]);
        self.proc = Some(Proc::spawn(&mut cmd, &self.dir.join("stderr.log"))?);
        wait_for_locker(&Etcd::url(self.port), "etcd", &self.dir.join("stderr.log"))
    }

    /// `etcd://127.0.0.1:<port>/chaos` (through `port`, which may be a proxy in front).
    pub fn url(port: u16) -> String {
        format!("etcd://127.0.0.1:{port}/chaos")
    }

    /// The server's pid (0 when not running).
    pub fn pid(&self) -> u32 {
        self.proc.as_ref().map_or(0, Proc::pid)
    }

    /// SIGKILL, then the same member again on the same ports and data directory (keys, leases
    /// and the revision come back from its write-ahead log).
    ///
    /// # Errors
    /// When it does not start again.
    pub fn kill_and_restart(&mut self) -> Result<(), String> {
        if let Some(mut p) = self.proc.take() {
            p.kill();
        }
        self.spawn()
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A private PostgreSQL cluster (`initdb` into the scenario's directory), its postmaster run
/// as user `postgres` in a process group of its own, so that a stop or a kill reaches its
/// backends too (they are its children).
pub struct Postgres {
    /// Its port.
    pub port: u16,
    dir: PathBuf,
    proc: Option<Proc>,
}

/// Debian's PostgreSQL 15 programs.
const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

impl Postgres {
    /// `initdb` (as `postgres`, trusting local TCP), then the server on a free port.
    ///
    /// # Errors
    /// When PostgreSQL is missing, this is not root, or the server does not start.
    pub fn start(dir: &Path) -> Result<Postgres, String> {
        if !Path::new(&format!("{PG_BIN}/postgres")).exists() {
            return Err(missing("postgres (PostgreSQL 15)"));
        }
        if !as_root() {
            return Err(
                "the PostgreSQL scenarios run the server as user postgres: run as root".into(),
            );
        }
        let pg = Postgres {
            port: free_port()?,
            dir: dir.join("postgres"),
            proc: None,
        };
        std::fs::create_dir_all(&pg.dir).map_err(|e| format!("{}: {e}", pg.dir.display()))?;
        output(Command::new("chown").arg("postgres").arg(&pg.dir))?;
        output(
            Command::new("setpriv")
                .args([
                    "--reuid=postgres",
                    "--regid=postgres",
                    "--init-groups",
                    "--",
                ])
                .arg(format!("{PG_BIN}/initdb"))
                .args([
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "-E",
                    "UTF8",
                    "--no-sync",
                    "-D",
                ])
                .arg(pg.dir.join("data")),
        )?;
        let mut pg = pg;
        pg.spawn()?;
        Ok(pg)
    }

    fn spawn(&mut self) -> Result<(), String> {
        use std::os::unix::process::CommandExt;
        let mut cmd = Command::new("setpriv");
        cmd.args([
            "--reuid=postgres",
            "--regid=postgres",
            "--init-groups",
            "--",
        ])
        .arg(format!("{PG_BIN}/postgres"))
        .arg("-D")
        .arg(self.dir.join("data"))
        .args(["-p", &self.port.to_string(), "-k"])
        .arg(&self.dir)
        .args(["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"])
        .process_group(0);
        self.proc = Some(Proc::spawn(&mut cmd, &self.dir.join("stderr.log"))?);
        wait_for_locker(
            &Postgres::url(self.port),
            "postgres",
            &self.dir.join("stderr.log"),
        )
    }

    /// `postgres://postgres@127.0.0.1:<port>/postgres` (through `port`, which may be a proxy).
    pub fn url(port: u16) -> String {
        format!("postgres://postgres@127.0.0.1:{port}/postgres")
    }

    /// The postmaster's pid, which is also its process group (0 when not running).
    pub fn pid(&self) -> u32 {
        self.proc.as_ref().map_or(0, Proc::pid)
    }

    /// SIGKILL of the whole group, then the server again on the same port and data directory
    /// (crash recovery from the WAL).
    ///
    /// # Errors
    /// When it does not start again.
    pub fn kill_and_restart(&mut self) -> Result<(), String> {
        self.kill_group();
        self.spawn()
    }

    fn kill_group(&mut self) {
        if let Some(mut p) = self.proc.take() {
            let _ = signal_group(p.pid(), libc::SIGCONT);
            let _ = signal_group(p.pid(), libc::SIGKILL);
            p.kill();
        }
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.kill_group();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
