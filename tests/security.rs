//! Issue 19: TLS and least-privilege credentials on every networked backend.
//!
//! Each test starts its own server with TLS (certificates made here with the `openssl` CLI: a CA,
//! a server certificate for IP 127.0.0.1 only, a client certificate, and an unrelated CA), gives
//! dlock an account with exactly the rights the README's "Security" section lists, and shows:
//! mutual exclusion over that connection (the shared counter helper), and a clear
//! `Error::Backend` for an untrusted CA, a host name the certificate does not list, a plaintext
//! client on the TLS port, a TLS client on a plaintext port and a wrong password. A distinctive
//! password must never appear in an error, its `Debug`, or any tracing event.

mod support;

use std::path::PathBuf;
use std::process::Command;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use dlock::{Error, Locker};
use support::Process;

const SECOND: Duration = Duration::from_secs(1);
/// The password of every account these tests make; searched for in every error and log line.
const PASSWORD: &str = "Zq7-dlock-PASSWORD-never-shown";

// ---------------------------------------------------------------------------------------------
// Certificates

/// The test PKI, made once per test process.
struct Certs {
    dir: PathBuf,
}

impl Certs {
    fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }
    /// `tls_ca=...&tls_cert=...&tls_key=...` trusting the test CA, with the client certificate.
    fn params(&self) -> String {
        format!(
            "tls_ca={}&tls_cert={}&tls_key={}",
            self.path("ca.crt"),
            self.path("client.crt"),
            self.path("client.key")
        )
    }
    /// Trusting an unrelated CA (with the right client certificate).
    fn params_other_ca(&self) -> String {
        format!(
            "tls_ca={}&tls_cert={}&tls_key={}",
            self.path("other-ca.crt"),
            self.path("client.crt"),
            self.path("client.key")
        )
    }
}

fn certs() -> &'static Certs {
    static CERTS: OnceLock<Certs> = OnceLock::new();
    CERTS.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("dlock-certs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        // PKCS#8 P-256 keys (ZooKeeper wants PKCS#8; every server and rustls take P-256) and
        // X.509 v3 certificates (rustls refuses v1). The server certificate names only the IP
        // 127.0.0.1, so `localhost` is a name it does not list; it is also a client
        // certificate because etcd's gateway dials etcd with it.
        let script = r#"
set -eu
cd "$1"
umask 077
key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1.key" 2>/dev/null; }
ca() {
  key "$1"
  openssl req -x509 -new -key "$1.key" -days 3650 -subj "/CN=$2" -out "$1.crt" \
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign
}
leaf() {
  key "$1"
  openssl req -x509 -new -key "$1.key" -days 3650 -subj "/CN=$2" -CA "$3.crt" -CAkey "$3.key" \
    -addext basicConstraints=critical,CA:FALSE -addext keyUsage=critical,digitalSignature \
    -addext extendedKeyUsage=$4 ${5:+-addext subjectAltName=$5} -out "$1.crt"
}
ca ca "dlock test CA"
ca other-ca "unrelated test CA"
leaf server localhost ca serverAuth,clientAuth IP:127.0.0.1
leaf client dlock ca clientAuth
cat server.key server.crt > server-keystore.pem
chmod 644 ./*.crt ./*.key ./*.pem
"#;
        let out = Command::new("sh")
            .args(["-c", script, "gen"])
            .arg(&dir)
            .output()
            .unwrap_or_else(|e| panic!("cannot run sh to make test certificates: {e}"));
        assert!(
            out.status.success(),
            "making test certificates with `openssl` failed (install it: apt-get install \
             openssl): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Certs { dir }
    })
}

// ---------------------------------------------------------------------------------------------
// Everything dlock logs, to search for the password

#[derive(Default)]
struct Captured(Mutex<String>);

static CAPTURED: OnceLock<&'static Captured> = OnceLock::new();

struct Recorder(&'static Captured);

impl tracing::field::Visit for Recorder {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        let mut all = self.0 .0.lock().unwrap_or_else(|p| p.into_inner());
        all.push_str(&format!("{}={value:?} ", field.name()));
    }
}

/// A subscriber that keeps every event and span field dlock emits, at every level.
struct Everything(&'static Captured);

impl tracing::Subscriber for Everything {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, span: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        span.record(&mut Recorder(self.0));
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, values: &tracing::span::Record<'_>) {
        values.record(&mut Recorder(self.0));
    }
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        event.record(&mut Recorder(self.0));
        self.0
             .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push('\n');
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

/// Starts recording (once per process: nextest runs each test in a process of its own).
fn record_logs() {
    CAPTURED.get_or_init(|| {
        let captured: &'static Captured = Box::leak(Box::default());
        let _ = tracing::subscriber::set_global_default(Everything(captured));
        captured
    });
}

/// Fails when the password shows in anything logged so far.
fn assert_password_never_logged() {
    let logged = CAPTURED
        .get()
        .map(|c| c.0.lock().unwrap_or_else(|p| p.into_inner()).clone())
        .unwrap_or_default();
    // Not vacuous: dlock's acquires, releases and waits were recorded.
    assert!(logged.contains("key="), "no event was recorded: {logged}");
    assert!(
        !logged.contains(PASSWORD),
        "the password was logged: {logged}"
    );
}

/// Connecting to `url` fails with an `Error::Backend` within `limit` whose message contains
/// one of `expected` (lower case); and the password shows neither in it nor in its `Debug`.
async fn refused(url: &str, expected: &[&str], limit: Duration) -> String {
    let started = Instant::now();
    let result = Locker::connect(url).await;
    let elapsed = started.elapsed();
    let err = match result {
        Err(e) => e,
        Ok(_) => panic!("{url}: connected, expected a refusal"),
    };
    let shown = format!("{err} | {err:?}");
    assert!(
        matches!(err, Error::Backend { .. }),
        "{url}: expected Error::Backend, got {shown}"
    );
    assert!(!shown.contains(PASSWORD), "the password shows: {shown}");
    let lower = shown.to_lowercase();
    assert!(
        expected.iter().any(|e| lower.contains(e)),
        "{url}: the message should say {expected:?}: {shown}"
    );
    assert!(elapsed < limit, "{url}: took {elapsed:?}: {shown}");
    eprintln!("refused in {elapsed:?}: {err}");
    shown
}

/// The mistakes every backend names the same way: a server certificate from a CA the client does
/// not trust, a host name the certificate does not list (`localhost`: it lists only 127.0.0.1)
/// and, where the server checks the password at login, a wrong password.
/// `url(password, host, params)` makes the URL.
async fn refuses_the_usual_mistakes(
    url: impl Fn(&str, &str, &str) -> String,
    password_checked_at_login: bool,
    limit: Duration,
) {
    let c = certs();
    refused(
        &url(PASSWORD, "127.0.0.1", &c.params_other_ca()),
        &["not signed by a ca"],
        limit,
    )
    .await;
    refused(
        &url(PASSWORD, "localhost", &c.params()),
        &["not valid for the host name"],
        limit,
    )
    .await;
    if password_checked_at_login {
        refused(
            &url("wrong-password", "127.0.0.1", &c.params()),
            &["bad credentials"],
            limit,
        )
        .await;
    }
}

/// Two Lockers on `url`, four tasks, a non-atomic counter that must end exact and fences that
/// must grow (the shared helper), then nothing left held.
async fn exclusive_over(server: &str, url: &str) {
    let a = support::connect_when_up(server, url, 30 * SECOND).await;
    let b = support::connect(server, url).await;
    let key = support::unique("secure");
    support::contend(&[a.clone(), b.clone()], &key, 4, 10).await;
    assert!(
        a.try_lock(key.as_str()).await.unwrap().is_some(),
        "left held"
    );
    let shown = format!("{a:?} {b:?}");
    assert!(
        !shown.contains(PASSWORD),
        "Debug shows the password: {shown}"
    );
}

/// Read-write locks and semaphores work with exactly the least privileges of the README too.
async fn shared_holds_over(server: &str, url: &str) {
    let a = support::connect(server, url).await;
    let key = support::unique("secure-shared");
    let read = a
        .read_lock(key.as_str())
        .wait(10 * SECOND)
        .await
        .expect("read lock");
    let reader = tokio::spawn(a.read_lock(key.as_str()).wait(10 * SECOND).acquire());
    let reader = reader.await.unwrap().expect("a second reader");
    let writer = tokio::spawn(a.write_lock(key.as_str()).wait(Duration::ZERO).acquire());
    assert!(matches!(
        writer.await.unwrap(),
        Err(dlock::Error::Busy { .. })
    ));
    read.release().await.expect("release read");
    reader.release().await.expect("release read");
    let write = a
        .write_lock(key.as_str())
        .wait(10 * SECOND)
        .await
        .expect("write lock");
    write.release().await.expect("release write");
    let permit = a
        .semaphore(key.as_str(), 2)
        .wait(10 * SECOND)
        .await
        .expect("permit");
    permit.release().await.expect("release permit");
}

fn run(what: &str, command: &mut Command) -> String {
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run ({e})"));
    assert!(
        out.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

// ---------------------------------------------------------------------------------------------
// Redis

/// The ACL of dlock's Redis user (the README's "Security" section): its keys and channels only
/// (`dlock:*`), the commands its scripts and connections use, nothing else.
const REDIS_ACL: &[&str] = &[
    "on",
    "resetkeys",
    "~dlock:*",
    "resetchannels",
    "&dlock:*",
    "-@all",
    "+evalsha",
    "+script|load",
    "+get",
    "+set",
    "+del",
    "+pexpire",
    "+pttl",
    "+publish",
    "+time",
    "+wait",
    "+ping",
    "+info|server",
    "+subscribe",
    "+unsubscribe",
    "+select",
    "+zadd",
    "+zrem",
    "+zremrangebyscore",
    "+zrange",
    "+zscore",
    "+zcard",
    "+pexpireat",
    "+exists",
    "+lrange",
    "+lrem",
    "+lset",
    "+rpush",
];

/// A TLS-only `redis-server` asking clients for a certificate, with `default` off, an `admin`
/// and dlock's least-privilege user `dlock`.
fn redis_tls() -> (Process, u16) {
    let c = certs();
    let port = support::free_port();
    let dir = support::temp_dir("redis");
    let password = format!(">{PASSWORD}");
    let mut dlock_user = vec!["--user", "dlock"];
    dlock_user.extend_from_slice(REDIS_ACL);
    dlock_user.push(&password);
    let mut command = Command::new("redis-server");
    command
        .args([
            "--port",
            "0",
            "--tls-port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
        ])
        .args(["--save", "", "--appendonly", "no"])
        .arg("--dir")
        .arg(&dir)
        .args(["--tls-cert-file", &c.path("server.crt")])
        .args(["--tls-key-file", &c.path("server.key")])
        .args(["--tls-ca-cert-file", &c.path("ca.crt")])
        .args(["--tls-auth-clients", "yes"])
        .args(["--user", "default", "off"])
        .args(["--user", "admin", "on", ">admin-pw", "~*", "&*", "+@all"])
        .args(&dlock_user);
    let server = Process::spawn("redis-server (TLS)", &mut command, dir);
    server.wait_for_port(port);
    (server, port)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_over_tls_with_least_privilege() {
    record_logs();
    let c = certs();
    let (_server, port) = redis_tls();
    let url = |user: &str, password: &str, host: &str, params: &str| {
        format!("rediss://{user}:{password}@{host}:{port}?restart_delay=0&{params}")
    };
    let good = url("dlock", PASSWORD, "127.0.0.1", &c.params());
    exclusive_over("TLS redis-server", &good).await;
    shared_holds_over("TLS redis-server", &good).await;
    // Waiting goes through the pub/sub connection (same TLS, same user).
    let locker = support::connect("TLS redis-server", &good).await;
    let key = support::unique("wait");
    let held = locker.lock(key.as_str()).ttl(10 * SECOND).await.unwrap();
    let waiter = support::in_another_task(locker.lock(key.as_str()).wait(10 * SECOND));
    tokio::time::sleep(Duration::from_millis(200)).await;
    held.release().await.unwrap();
    let next = waiter.await.unwrap();
    assert!(next.fence() > Some(0));
    next.release().await.unwrap();

    // The least-privilege user cannot do what dlock does not need.
    let raw = redis::Client::build_with_tls(
        format!("rediss://dlock:{PASSWORD}@127.0.0.1:{port}"),
        redis::TlsCertificates {
            client_tls: Some(redis::ClientTlsConfig {
                client_cert: std::fs::read(c.path("client.crt")).unwrap(),
                client_key: std::fs::read(c.path("client.key")).unwrap(),
            }),
            root_cert: Some(std::fs::read(c.path("ca.crt")).unwrap()),
        },
    )
    .unwrap();
    let mut con = raw.get_multiplexed_async_connection().await.unwrap();
    for (command, args) in [
        ("FLUSHALL", vec![]),
        ("KEYS", vec!["*"]),
        ("SET", vec!["other:key", "1"]),
        ("CONFIG", vec!["SET", "maxmemory-policy", "allkeys-lru"]),
    ] {
        let refused: redis::RedisResult<redis::Value> =
            redis::cmd(command).arg(&args).query_async(&mut con).await;
        let e = refused.expect_err(command);
        assert_eq!(e.code(), Some("NOPERM"), "{command}: {e}");
    }

    // The mistakes, each named.
    let limit = 10 * SECOND;
    refuses_the_usual_mistakes(|p, h, q| url("dlock", p, h, q), true, limit).await;
    refused(
        &format!("redis://dlock:{PASSWORD}@127.0.0.1:{port}?restart_delay=0"),
        &["expects tls", "tls"],
        limit,
    )
    .await;
    let no_client_cert = format!(
        "rediss://dlock:{PASSWORD}@127.0.0.1:{port}?restart_delay=0&tls_ca={}",
        c.path("ca.crt")
    );
    refused(&no_client_cert, &["client certificate", "tls"], limit).await;
    let plain = support::RedisServer::start();
    refused(
        &format!(
            "rediss://127.0.0.1:{}?restart_delay=0&{}",
            plain.port,
            c.params()
        ),
        &["plaintext port"],
        limit,
    )
    .await;
    // Redlock over TLS: three more TLS servers with the same user.
    let nodes = [redis_tls(), redis_tls(), redis_tls()];
    let hosts: Vec<String> = nodes
        .iter()
        .map(|(_, port)| format!("127.0.0.1:{port}"))
        .collect();
    let redlock = format!(
        "redlocks://dlock:{PASSWORD}@{}?{}",
        hosts.join(","),
        c.params()
    );
    let locker = support::connect("TLS redis-servers (Redlock)", &redlock).await;
    support::contend(
        std::slice::from_ref(&locker),
        &support::unique("redlock"),
        2,
        5,
    )
    .await;
    assert_password_never_logged();
}

// ---------------------------------------------------------------------------------------------
// MariaDB / MySQL

/// A private MariaDB with TLS (`mariadb-install-db` into a temporary directory, `mariadbd` on a
/// free port); administered as root over its unix socket.
struct Mariadb {
    _server: Process,
    port: u16,
    socket: PathBuf,
}

impl Mariadb {
    fn start() -> Mariadb {
        let c = certs();
        let dir = support::temp_dir("mariadb");
        let port = support::free_port();
        let data = dir.join("data");
        run(
            "mariadb-install-db (run `scripts/services.sh up` to install MariaDB)",
            Command::new("mariadb-install-db")
                .args(["--no-defaults", "--user=root"])
                .arg(format!("--datadir={}", data.display()))
                .arg("--auth-root-authentication-method=normal"),
        );
        let socket = dir.join("sock");
        let mut command = Command::new("mariadbd");
        command
            .arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--socket={}", socket.display()))
            .arg(format!("--port={port}"))
            .args(["--bind-address=127.0.0.1", "--user=root", "--skip-log-bin"])
            .arg(format!("--pid-file={}", dir.join("pid").display()))
            .arg("--innodb-buffer-pool-size=16M")
            .arg(format!("--ssl-cert={}", c.path("server.crt")))
            .arg(format!("--ssl-key={}", c.path("server.key")))
            .arg(format!("--ssl-ca={}", c.path("ca.crt")));
        let server = Process::spawn("mariadbd (TLS)", &mut command, dir);
        server.wait_for_port(port);
        Mariadb {
            _server: server,
            port,
            socket,
        }
    }

    /// Runs `sql` as root over the unix socket (`--force`: the statements after a failing one
    /// still run).
    fn admin(&self, sql: &str) -> String {
        run(
            "mariadb (admin)",
            Command::new("mariadb")
                .args(["--no-defaults", "--force", "-uroot"])
                .arg(format!("--socket={}", self.socket.display()))
                .args(["-e", sql]),
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_over_tls_with_least_privilege() {
    record_logs();
    let c = certs();
    let db = Mariadb::start();
    let port = db.port;
    // An administrator makes the table (here: dlock connected as root) and grants dlock's user
    // the four statements on it, nothing else; the account requires a client certificate.
    let root = format!("mysql://root@127.0.0.1:{port}/test?{}", c.params());
    drop(support::connect_when_up("TLS MariaDB (root)", &root, 30 * SECOND).await);
    db.admin(&format!(
        "REVOKE ALL ON test.* FROM PUBLIC; REVOKE ALL ON `test\\_%`.* FROM PUBLIC; \
         DELETE FROM mysql.global_priv WHERE User=''; FLUSH PRIVILEGES; \
         CREATE USER 'dlock'@'%' IDENTIFIED BY '{PASSWORD}' REQUIRE X509; \
         GRANT SELECT, INSERT, UPDATE, DELETE ON test.distributed_lock TO 'dlock'@'%'; \
         GRANT SELECT, INSERT, UPDATE, DELETE ON test.distributed_lock_holds TO 'dlock'@'%';"
    ));
    let url = |password: &str, host: &str, params: &str| {
        format!("mysql://dlock:{password}@{host}:{port}/test?{params}")
    };
    exclusive_over("TLS MariaDB", &url(PASSWORD, "127.0.0.1", &c.params())).await;
    shared_holds_over("TLS MariaDB", &url(PASSWORD, "127.0.0.1", &c.params())).await;
    // The user really has no more than that.
    let grants = db.admin("SHOW GRANTS FOR 'dlock'@'%'");
    assert!(
        grants.contains("GRANT SELECT, INSERT, UPDATE, DELETE ON `test`.`distributed_lock`"),
        "{grants}"
    );
    assert!(
        !grants.contains("CREATE") || !grants.contains("GRANT CREATE"),
        "{grants}"
    );

    let limit = 10 * SECOND;
    refuses_the_usual_mistakes(url, true, limit).await;
    // A plaintext client: the account requires TLS (MariaDB says only "access denied").
    refused(
        &url(PASSWORD, "127.0.0.1", "ssl-mode=DISABLED"),
        &["only tls"],
        limit,
    )
    .await;
    // A TLS client on a server without TLS (the shared MariaDB has none).
    refused(
        &format!(
            "{}?ssl-mode=REQUIRED",
            support::mysql_url().split('?').next().unwrap_or_default()
        ),
        &["plaintext", "tls"],
        limit,
    )
    .await;
    assert_password_never_logged();
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL

const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

/// A private PostgreSQL cluster that accepts only TLS over TCP (`hostnossl ... reject`), with
/// its own copies of the server key (PostgreSQL wants it 0600 and its own); administered over
/// its unix socket.
struct Postgres {
    dir: PathBuf,
    port: u16,
}

impl Postgres {
    fn start() -> Postgres {
        Self::start_with(true)
    }

    /// `tls: false`: a cluster without TLS at all, trusting every local TCP client.
    fn start_with(tls: bool) -> Postgres {
        let c = certs();
        let dir = support::temp_dir("postgres");
        let port = support::free_port();
        run("chown", Command::new("chown").arg("postgres").arg(&dir));
        let data = dir.join("data");
        let as_postgres = |program: &str| {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--", &format!("{PG_BIN}/{program}")]);
            command
        };
        run(
            "initdb (PostgreSQL 15 is installed by `scripts/services.sh up`)",
            as_postgres("initdb")
                .args([
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "-E",
                    "UTF8",
                    "--no-sync",
                    "-D",
                ])
                .arg(&data),
        );
        for (name, mode) in [
            ("server.key", "600"),
            ("server.crt", "644"),
            ("ca.crt", "644"),
        ] {
            run(
                "install",
                Command::new("install")
                    .args(["-o", "postgres", "-m", mode, &c.path(name)])
                    .arg(data.join(name)),
            );
        }
        let (hba, ssl) = if tls {
            (
                "local all all trust\n\
                 hostssl all postgres 127.0.0.1/32 trust\n\
                 hostssl all dlock 127.0.0.1/32 scram-sha-256 clientcert=verify-full\n\
                 hostnossl all all 0.0.0.0/0 reject\n",
                "-c ssl=on -c ssl_cert_file=server.crt -c ssl_key_file=server.key \
                 -c ssl_ca_file=ca.crt",
            )
        } else {
            (
                "local all all trust\nhost all all 127.0.0.1/32 trust\n",
                "-c ssl=off",
            )
        };
        std::fs::write(data.join("pg_hba.conf"), hba).expect("pg_hba.conf");
        let options = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 {ssl} -c fsync=off",
            dir.display()
        );
        run(
            "pg_ctl start",
            as_postgres("pg_ctl")
                .args(["-w", "-D"])
                .arg(&data)
                .arg("-l")
                .arg(dir.join("log"))
                .args(["-o", &options, "start"]),
        );
        Postgres { dir, port }
    }

    fn admin(&self, sql: &str) -> String {
        run(
            "psql (admin)",
            Command::new("runuser")
                .args(["-u", "postgres", "--", &format!("{PG_BIN}/psql")])
                .args(["-v", "ON_ERROR_STOP=1", "-h"])
                .arg(&self.dir)
                .args(["-p", &self.port.to_string(), "-d", "postgres", "-c", sql]),
        )
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = Command::new("runuser")
            .args(["-u", "postgres", "--", &format!("{PG_BIN}/pg_ctl")])
            .args(["-D"])
            .arg(self.dir.join("data"))
            .args(["-m", "immediate", "stop"])
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_over_tls_with_least_privilege() {
    record_logs();
    let c = certs();
    let pg = Postgres::start();
    let port = pg.port;
    // What an administrator runs (the README's "Security"): the table and the sequence, and
    // dlock's user gets the statements on the one and USAGE on the other.
    pg.admin("CREATE DATABASE test");
    pg.admin(&format!("CREATE USER dlock PASSWORD '{PASSWORD}'"));
    let root = format!("postgres://postgres@127.0.0.1:{port}/test?{}", c.params());
    drop(support::connect_when_up("TLS PostgreSQL (admin)", &root, 30 * SECOND).await);
    run(
        "psql grants",
        Command::new("runuser")
            .args(["-u", "postgres", "--", &format!("{PG_BIN}/psql")])
            .args(["-v", "ON_ERROR_STOP=1", "-h"])
            .arg(&pg.dir)
            .args(["-p", &port.to_string(), "-d", "test", "-c"])
            .arg(
                "GRANT SELECT, INSERT, UPDATE, DELETE ON dlock_locks, dlock_locks_holds TO dlock; \
                 GRANT USAGE ON SEQUENCE dlock_locks_fence TO dlock;",
            ),
    );
    let url = |password: &str, host: &str, params: &str| {
        format!("postgres://dlock:{password}@{host}:{port}/test?{params}")
    };
    exclusive_over("TLS PostgreSQL", &url(PASSWORD, "127.0.0.1", &c.params())).await;
    shared_holds_over("TLS PostgreSQL", &url(PASSWORD, "127.0.0.1", &c.params())).await;

    let limit = 10 * SECOND;
    refuses_the_usual_mistakes(url, true, limit).await;
    refused(
        &url(PASSWORD, "127.0.0.1", "sslmode=disable"),
        &["only tls"],
        limit,
    )
    .await;
    let plain = Postgres::start_with(false);
    refused(
        &format!(
            "postgres://postgres@127.0.0.1:{}/postgres?{}",
            plain.port,
            c.params()
        ),
        &["plaintext"],
        limit,
    )
    .await;
    assert_password_never_logged();
}

// ---------------------------------------------------------------------------------------------
// etcd

/// A private etcd serving clients over TLS only, asking for a client certificate; its auth
/// tokens expire after `token_ttl` seconds of disuse.
fn etcd_tls(token_ttl: u32) -> (Process, u16) {
    let c = certs();
    let dir = support::temp_dir("etcd");
    let (port, peer) = (support::free_port(), support::free_port());
    let client_url = format!("https://127.0.0.1:{port}");
    let mut command = support::etcd_command("secure", &dir, &client_url, peer);
    command
        .args(["--cert-file", &c.path("server.crt")])
        .args(["--key-file", &c.path("server.key")])
        .args(["--trusted-ca-file", &c.path("ca.crt")])
        .arg("--client-cert-auth")
        .args(["--auth-token-ttl", &token_ttl.to_string()]);
    let server = Process::spawn("etcd (TLS)", &mut command, dir);
    server.wait_for_port(port);
    (server, port)
}

/// An administrator's client (before auth is on: the client certificate is enough).
async fn etcd_admin(port: u16) -> etcd_client::Client {
    let c = certs();
    let tls = etcd_client::TlsOptions::new()
        .ca_certificate(etcd_client::Certificate::from_pem(
            std::fs::read(c.path("ca.crt")).unwrap(),
        ))
        .identity(etcd_client::Identity::from_pem(
            std::fs::read(c.path("client.crt")).unwrap(),
            std::fs::read(c.path("client.key")).unwrap(),
        ));
    let options = etcd_client::ConnectOptions::new()
        .with_tls(tls)
        .with_connect_timeout(5 * SECOND)
        .with_timeout(5 * SECOND);
    let until = Instant::now() + 30 * SECOND;
    loop {
        let client = etcd_client::Client::connect(
            [format!("https://127.0.0.1:{port}")],
            Some(options.clone()),
        )
        .await;
        if let Ok(mut client) = client {
            if client.status().await.is_ok() {
                return client;
            }
        }
        assert!(
            Instant::now() < until,
            "the TLS etcd on {port} never answered"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_over_tls_with_a_role_on_its_prefix_only() {
    record_logs();
    let c = certs();
    // Tokens live 2 s unused: the Locker must log in again by itself after an idle spell.
    let (_server, port) = etcd_tls(2);
    let mut admin = etcd_admin(port).await;
    // The README's "Security": a role with readwrite on the lock root's prefix, nothing else.
    admin.user_add("root", "root-pw", None).await.unwrap();
    admin.user_grant_role("root", "root").await.unwrap();
    admin.role_add("dlock-locks").await.unwrap();
    admin
        .role_grant_permission(
            "dlock-locks",
            etcd_client::Permission::read_write("/dlock-sec/").with_prefix(),
        )
        .await
        .unwrap();
    admin.user_add("dlock", PASSWORD, None).await.unwrap();
    admin.user_grant_role("dlock", "dlock-locks").await.unwrap();
    admin.auth_enable().await.unwrap();

    let url = |password: &str, host: &str, params: &str| {
        format!("etcds://dlock:{password}@{host}:{port}/dlock-sec?{params}")
    };
    let good = url(PASSWORD, "127.0.0.1", &c.params());
    exclusive_over("TLS etcd", &good).await;
    shared_holds_over("TLS etcd", &good).await;
    // Idle longer than the token lives, then lock again: the Locker logs in again.
    let locker = support::connect("TLS etcd", &good).await;
    tokio::time::sleep(3 * SECOND).await;
    let guard = locker
        .lock(support::unique("after-idle"))
        .ttl(5 * SECOND)
        .await
        .expect("a lock after the auth token expired");
    tokio::time::sleep(3 * SECOND).await;
    guard
        .extend(5 * SECOND)
        .await
        .expect("an extend after the auth token expired");
    tokio::time::sleep(3 * SECOND).await;
    guard
        .release()
        .await
        .expect("a release after the auth token expired");
    // Outside its prefix the user can do nothing: a Locker rooted elsewhere is refused.
    refused(
        &format!(
            "etcds://dlock:{PASSWORD}@127.0.0.1:{port}/elsewhere?{}",
            c.params()
        ),
        &["no rights on the lock root"],
        10 * SECOND,
    )
    .await;

    let limit = 10 * SECOND;
    refuses_the_usual_mistakes(url, true, limit).await;
    refused(
        &format!("etcd://dlock:{PASSWORD}@127.0.0.1:{port}/dlock-sec"),
        &["tls"],
        limit,
    )
    .await;
    let plain = support::etcd_url();
    let plain_host = plain
        .split("://")
        .nth(1)
        .and_then(|r| r.split('/').next())
        .unwrap_or("127.0.0.1:2379");
    refused(
        &format!("etcds://{plain_host}/dlock-sec?{}", c.params()),
        &["plaintext"],
        limit,
    )
    .await;
    assert_password_never_logged();
}

// ---------------------------------------------------------------------------------------------
// ZooKeeper

/// A private ZooKeeper listening with TLS only (Netty; a PEM key store), taking a client
/// certificate when one is offered.
fn zookeeper_tls() -> (Process, u16) {
    let c = certs();
    let dir = support::temp_dir("zookeeper");
    let port = support::free_port();
    let config = dir.join("zoo.cfg");
    std::fs::write(
        &config,
        format!(
            "tickTime=500\nminSessionTimeout=1000\ndataDir={}\nsecureClientPort={port}\n\
             admin.enableServer=false\n\
             serverCnxnFactory=org.apache.zookeeper.server.NettyServerCnxnFactory\n\
             ssl.keyStore.location={}\nssl.keyStore.type=PEM\n\
             ssl.trustStore.location={}\nssl.trustStore.type=PEM\nssl.clientAuth=want\n",
            dir.join("data").display(),
            c.path("server-keystore.pem"),
            c.path("ca.crt"),
        ),
    )
    .expect("zoo.cfg");
    // netty-codec is not on zookeeper.jar's manifest class path; without it every TLS
    // connection is dropped.
    let mut command = Command::new("java");
    command
        .arg("-cp")
        .arg("/etc/zookeeper/conf:/usr/share/java/zookeeper.jar:/usr/share/java/netty-codec.jar")
        .arg("org.apache.zookeeper.server.ZooKeeperServerMain")
        .arg(&config);
    let server = Process::spawn("ZooKeeper (TLS)", &mut command, dir);
    server.wait_for_port(port);
    (server, port)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zookeeper_over_tls_with_digest_acls() {
    record_logs();
    let c = certs();
    let (_server, port) = zookeeper_tls();
    let url = |userinfo: &str, host: &str, params: &str| {
        format!("zookeeper://{userinfo}{host}:{port}/dlock-sec?session_timeout=4s&{params}")
    };
    let good = url(&format!("dlock:{PASSWORD}@"), "127.0.0.1", &c.params());
    exclusive_over("TLS ZooKeeper", &good).await;
    shared_holds_over("TLS ZooKeeper", &good).await;

    // Another client (TLS, no digest, no certificate) can neither delete a held lock's node
    // nor queue under its key.
    let locker = support::connect("TLS ZooKeeper", &good).await;
    let key = support::unique("acl");
    let guard = locker.lock(key.as_str()).ttl(30 * SECOND).await.unwrap();
    let ca = std::fs::read_to_string(c.path("ca.crt")).unwrap();
    let stranger = zookeeper_client::Client::connector()
        .with_tls(
            zookeeper_client::TlsOptions::new()
                .with_pem_ca(&ca)
                .unwrap(),
        )
        .secure_connect(&format!("127.0.0.1:{port}"))
        .await
        .expect("an unauthenticated TLS session");
    let dir = format!("/dlock-sec/{key}");
    let (children, _) = stranger
        .get_children(&dir)
        .await
        .expect("others may read (world:anyone READ)");
    assert_eq!(children.len(), 1, "{children:?}");
    let node = format!("{dir}/{}", children[0]);
    assert_eq!(
        stranger.delete(&node, None).await,
        Err(zookeeper_client::Error::NoAuth),
        "another client deleted a held lock's node"
    );
    let queued = stranger
        .create(
            &format!("{dir}/intruder-"),
            b"",
            &zookeeper_client::CreateMode::EphemeralSequential
                .with_acls(zookeeper_client::Acls::anyone_all()),
        )
        .await;
    assert!(
        matches!(queued, Err(zookeeper_client::Error::NoAuth)),
        "{queued:?}"
    );
    assert!(guard.is_held());
    guard.release().await.unwrap();

    // A wrong password is not refused by ZooKeeper at login (digest ids are just recorded):
    // it shows at the first lock, as the lock root belonging to another user. (Without the
    // client certificate: ZooKeeper also counts a certificate's `x509:CN=dlock` as an identity
    // that the owner ACL grants.)
    let wrong = support::connect(
        "TLS ZooKeeper",
        &url(
            "dlock:wrong-password@",
            "127.0.0.1",
            &format!("tls_ca={}", c.path("ca.crt")),
        ),
    )
    .await;
    let denied = wrong.lock(support::unique("wrong")).wait(2 * SECOND).await;
    let shown = match &denied {
        Err(e) => e.to_string(),
        Ok(guard) => format!("acquired: {guard:?}"),
    };
    assert!(
        matches!(denied, Err(Error::Backend { .. })) && shown.contains("another ZooKeeper user"),
        "{shown}"
    );

    // (ZooKeeper's digest scheme takes any password at login: shown above, at the first lock.)
    let limit = 20 * SECOND;
    refuses_the_usual_mistakes(|_, h, q| url("", h, q), false, limit).await;
    refused(&url("", "127.0.0.1", ""), &["tls"], limit).await;
    let plain = support::zookeeper_url();
    let plain_host = plain
        .split("://")
        .nth(1)
        .and_then(|r| r.split('/').next())
        .unwrap_or("127.0.0.1:2181");
    refused(
        &format!(
            "zookeeper://{plain_host}/dlock-sec?session_timeout=4s&{}",
            c.params()
        ),
        &["plaintext"],
        limit,
    )
    .await;
    assert_password_never_logged();
}
