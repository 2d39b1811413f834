//! The `dlock` command, run as a process against the real servers (issue 15).
//!
//! Each backend's checks hold locks through the library under a unique key prefix, then run the
//! built binary on them: `list` (table and JSON), `inspect`, `release --force` (with `--yes`, and
//! answering the question with `n`, nothing, `y`), `watch --count`, and `DLOCK_URL` in place of
//! `--url`. The rest needs no server: help, usage errors, a bad URL, a refused and a silent
//! server, masked passwords.
//!
//! Servers: `DLOCK_TEST_REDIS_URL`, `DLOCK_TEST_POSTGRES_URL`, `DLOCK_TEST_MYSQL_URL`,
//! `DLOCK_TEST_ZOOKEEPER_URL`, `DLOCK_TEST_ETCD_URL`, or the defaults of `scripts/services.sh up`;
//! a server that cannot be reached fails the test and says so.

// Built without any backend (`--no-default-features`), only the server-less tests remain.
#![cfg_attr(
    not(any(
        feature = "redis",
        feature = "postgres",
        feature = "mysql",
        feature = "zookeeper",
        feature = "etcd"
    )),
    allow(dead_code, unused_imports)
)]

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use dlock::{LockGuard, Locker};
use serde_json::Value;

/// Long enough that no lease runs out by itself during a check.
const LEASE: Duration = Duration::from_secs(60);
/// The longest a run of the binary may take before the test fails.
const RUN_LIMIT: Duration = Duration::from_secs(30);

/// One finished run of the binary.
#[derive(Debug)]
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    took: Duration,
}

impl Run {
    /// Fails the test unless the run exited with `code`, showing what it printed.
    #[track_caller]
    fn expect_code(&self, code: i32) -> &Run {
        assert_eq!(self.code, Some(code), "exit status of {self:#?}");
        self
    }
}

/// The binary with no `DLOCK_URL` from the caller's environment.
fn dlock() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_dlock"));
    command.env_remove("DLOCK_URL");
    command
}

/// Runs `command` with `input` on its standard input (closed after it), within [`RUN_LIMIT`].
fn run(mut command: Command, input: &str) -> Run {
    let started = Instant::now();
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the dlock binary starts");
    let mut stdin = child.stdin.take().expect("piped stdin");
    // The binary may exit without reading: a failed write is no error here.
    let _ = stdin.write_all(input.as_bytes());
    drop(stdin);
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            text
        })
    };
    let stdout = drain(Box::new(child.stdout.take().expect("piped stdout")));
    let stderr = drain(Box::new(child.stderr.take().expect("piped stderr")));
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for dlock") {
            break status;
        }
        if started.elapsed() > RUN_LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{command:?} still running after {RUN_LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Run {
        code: status.code(),
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
        took: started.elapsed(),
    }
}

/// `dlock --url URL ARGS...`, nothing on standard input.
fn dlock_at(url: &str, args: &[&str]) -> Run {
    let mut command = dlock();
    command.arg("--url").arg(url).args(args);
    run(command, "")
}

/// Connects the library to `url` or fails naming `server` and how to start it.
async fn connect(server: &str, url: &str) -> Locker {
    match Locker::connect(url).await {
        Ok(locker) => locker,
        Err(e) => panic!(
            "{server} is not reachable at {url}: {e}\n\
             start the test servers with `scripts/services.sh up` (or set DLOCK_TEST_*_URL)"
        ),
    }
}

/// A key prefix no other test (or test run) uses.
fn unique_prefix(name: &str) -> String {
    format!("cli-{name}:{}/", uuid::Uuid::new_v4().simple())
}

async fn hold(locker: &Locker, key: &str) -> LockGuard {
    locker
        .lock(key)
        .ttl(LEASE)
        .wait(Duration::from_secs(10))
        .await
        .unwrap_or_else(|e| panic!("{}: cannot take {key}: {e}", locker.backend_name()))
}

/// The lines of a table (`dlock list` / `watch` output) that name `key` as their first column.
fn rows<'a>(text: &'a str, key: &str) -> Vec<&'a str> {
    text.lines()
        .filter(|line| line.split("  ").next() == Some(key))
        .collect()
}

/// The checks every backend runs; `url` is the server both the library and the binary use.
mod checks {
    use super::*;

    /// `list`: a table with the held keys and their owners, the same as JSON, nothing else.
    pub async fn list(locker: Locker, url: &str) {
        let backend = locker.backend_name();
        let prefix = unique_prefix("list");
        let keys = [
            format!("{prefix}order:1"),
            format!("{prefix}order:2"),
            format!("{prefix}job nightly"),
        ];
        let owners = ["billing-7f9c", "billing-7f9c", "reports-1"];
        // Outside the prefix: the prefix without its last character.
        let outside = format!("{}x", &prefix[..prefix.len() - 1]);
        let mut guards = Vec::new();
        for (key, owner) in keys.iter().zip(owners) {
            guards.push(hold(&locker.with_owner(owner), key).await);
        }
        let other = hold(&locker, &outside).await;

        let table = dlock_at(url, &["list", &prefix]);
        table.expect_code(0);
        let header = table.stdout.lines().next().unwrap_or_default();
        for column in ["KEY", "OWNER", "FENCE", "EXPIRES IN"] {
            assert!(header.contains(column), "{backend}: header {header:?}");
        }
        for ((key, owner), guard) in keys.iter().zip(owners).zip(&guards) {
            let lines = rows(&table.stdout, key);
            assert_eq!(lines.len(), 1, "{backend}: {key} in\n{}", table.stdout);
            assert!(lines[0].contains(owner), "{backend}: {}", lines[0]);
            if let Some(fence) = guard.fence() {
                assert!(
                    lines[0].contains(&format!(" {fence} ")),
                    "{backend}: {}",
                    lines[0]
                );
            }
            // A 60 s lease shows as seconds or minutes left.
            assert!(
                lines[0].ends_with('s') || backend == "zookeeper",
                "{backend}: {}",
                lines[0]
            );
        }
        assert!(
            !table.stdout.contains(&outside),
            "{backend}: {}",
            table.stdout
        );
        assert_eq!(table.stdout.lines().count(), 1 + keys.len());

        let json = dlock_at(url, &["list", &prefix, "--json"]);
        json.expect_code(0);
        let parsed: Value = serde_json::from_str(&json.stdout)
            .unwrap_or_else(|e| panic!("{backend}: {e} in {:?}", json.stdout));
        let listed = parsed.as_array().expect("a JSON array");
        let mut listed_keys: Vec<&str> = listed.iter().filter_map(|i| i["key"].as_str()).collect();
        let mut expected: Vec<&str> = keys.iter().map(String::as_str).collect();
        listed_keys.sort_unstable();
        expected.sort_unstable();
        assert_eq!(listed_keys, expected, "{backend}: {}", json.stdout);
        for item in listed {
            let fields: Vec<&String> = item.as_object().expect("objects").keys().collect();
            assert_eq!(fields.len(), 4, "{backend}: {item}");
            let at = keys.iter().position(|k| item["key"] == **k).expect("held");
            assert_eq!(item["owner"], owners[at], "{backend}: {item}");
            assert_eq!(
                item["fence"],
                guards[at].fence().map_or(Value::Null, Value::from),
                "{backend}: {item}"
            );
            match item["expires_in_ms"].as_u64() {
                Some(left) => assert!(left > 0 && left <= 60_000, "{backend}: {item}"),
                None => assert!(
                    item["expires_in_ms"].is_null() && backend == "zookeeper",
                    "{backend}: {item}"
                ),
            }
        }

        for guard in guards {
            guard.release().await.expect("release");
        }
        other.release().await.expect("release");
        let empty = dlock_at(url, &["list", &prefix]);
        empty.expect_code(0);
        assert_eq!(
            empty.stdout.trim(),
            format!("no locks held under `{prefix}`"),
            "{backend}"
        );
        let empty = dlock_at(url, &["list", &prefix, "--json"]);
        empty.expect_code(0);
        assert_eq!(empty.stdout.trim(), "[]", "{backend}");
    }

    /// `inspect`: exit 0 and the holder for a held key, exit 1 for a free one.
    pub async fn inspect(locker: Locker, url: &str) {
        let backend = locker.backend_name();
        let prefix = unique_prefix("inspect");
        let key = format!("{prefix}order:42");
        let free = format!("{prefix}free");
        let guard = hold(&locker.with_owner("billing-7f9c"), &key).await;

        let found = dlock_at(url, &["inspect", &key]);
        found.expect_code(0);
        let lines = rows(&found.stdout, &key);
        assert_eq!(lines.len(), 1, "{backend}: {}", found.stdout);
        assert!(lines[0].contains("billing-7f9c"), "{backend}: {}", lines[0]);

        let json = dlock_at(url, &["inspect", &key, "--json"]);
        json.expect_code(0);
        let item: Value = serde_json::from_str(&json.stdout)
            .unwrap_or_else(|e| panic!("{backend}: {e} in {:?}", json.stdout));
        assert_eq!(item["key"], *key, "{backend}: {item}");
        assert_eq!(item["owner"], "billing-7f9c", "{backend}: {item}");
        assert_eq!(
            item["fence"],
            guard.fence().map_or(Value::Null, Value::from),
            "{backend}: {item}"
        );

        let missing = dlock_at(url, &["inspect", &free]);
        missing.expect_code(1);
        assert!(missing.stdout.contains("is free"), "{backend}: {missing:?}");
        let missing = dlock_at(url, &["inspect", &free, "--json"]);
        missing.expect_code(1);
        assert_eq!(missing.stdout.trim(), "null", "{backend}");

        guard.release().await.expect("release");
        dlock_at(url, &["inspect", &key]).expect_code(1);
    }

    /// `release --force --yes`: frees the key at once (exit 0); a free key is exit 1.
    pub async fn release_force_yes(locker: Locker, url: &str) {
        let backend = locker.backend_name();
        let key = format!("{}stuck", unique_prefix("release"));
        let guard = hold(&locker.with_owner("stuck-worker"), &key).await;

        let released = dlock_at(url, &["release", "--force", "--yes", &key]);
        released.expect_code(0);
        assert!(
            released.stdout.contains("released") && released.stdout.contains("stuck-worker"),
            "{backend}: {released:?}"
        );
        assert_eq!(
            locker.inspect(&key).await.expect("inspect"),
            None,
            "{backend}"
        );
        // The holder finds its lock gone.
        assert!(guard.release().await.is_err(), "{backend}");

        let again = dlock_at(url, &["release", "--force", "--yes", &key]);
        again.expect_code(1);
        assert!(again.stdout.contains("free"), "{backend}: {again:?}");
    }

    /// `release --force` asks first: `n` or no answer leaves the lock held, `y` frees it.
    pub async fn release_asks_first(locker: Locker, url: &str) {
        let backend = locker.backend_name();
        let key = format!("{}asked", unique_prefix("release"));
        let guard = hold(&locker.with_owner("asked-worker"), &key).await;
        let ask = |answer: &str| {
            let mut command = dlock();
            command.args(["--url", url, "release", "--force", &key]);
            run(command, answer)
        };
        let question = format!("release lock `{key}` held by asked-worker? [y/N]");

        for answer in ["n\n", "", "nope\n"] {
            let declined = ask(answer);
            declined.expect_code(1);
            assert!(
                declined.stderr.contains(&question),
                "{backend}: {declined:?}"
            );
            let info = locker.inspect(&key).await.expect("inspect");
            assert_eq!(
                info.and_then(|i| i.owner).as_deref(),
                Some("asked-worker"),
                "{backend}: still held after answering {answer:?}"
            );
        }
        assert!(guard.is_held(), "{backend}");

        let accepted = ask("y\n");
        accepted.expect_code(0);
        assert!(
            accepted.stderr.contains(&question),
            "{backend}: {accepted:?}"
        );
        assert_eq!(
            locker.inspect(&key).await.expect("inspect"),
            None,
            "{backend}"
        );
        assert!(guard.release().await.is_err(), "{backend}");
    }

    /// `watch --count 3`: the table three times, plain (stdout is a pipe), then exit 0.
    pub async fn watch(locker: Locker, url: &str) {
        let backend = locker.backend_name();
        let prefix = unique_prefix("watch");
        let keys = [format!("{prefix}a"), format!("{prefix}b")];
        let mut guards = Vec::new();
        for key in &keys {
            guards.push(hold(&locker.with_owner("watched"), key).await);
        }
        let watched = dlock_at(
            url,
            &["watch", &prefix, "--count", "3", "--interval", "200ms"],
        );
        watched.expect_code(0);
        let out = &watched.stdout;
        let headers = out.lines().filter(|l| l.starts_with("KEY ")).count();
        assert_eq!(headers, 3, "{backend}: three tables in\n{out}");
        for key in &keys {
            assert_eq!(rows(out, key).len(), 3, "{backend}: {key} in\n{out}");
        }
        assert_eq!(
            out.matches(&format!("2 locks under `{prefix}`")).count(),
            3,
            "{backend}: {out}"
        );
        assert!(
            !out.contains('\x1b'),
            "{backend}: no terminal codes into a pipe"
        );
        // Three frames, each after a blank line but the first.
        assert_eq!(out.split("\n\n2 locks").count(), 3, "{backend}: {out}");
        assert!(
            watched.took >= Duration::from_millis(400),
            "{backend}: 3 refreshes 200ms apart took {:?}",
            watched.took
        );
        for guard in guards {
            guard.release().await.expect("release");
        }
    }

    /// `DLOCK_URL` names the service when `--url` is absent; `--url` wins over it.
    pub async fn env_url(locker: Locker, url: &str) {
        let backend = locker.backend_name();
        let key = format!("{}env", unique_prefix("env"));
        let guard = hold(&locker.with_owner("env-worker"), &key).await;

        let mut command = dlock();
        command.env("DLOCK_URL", url).args(["inspect", &key]);
        let from_env = run(command, "");
        from_env.expect_code(0);
        assert!(
            from_env.stdout.contains("env-worker"),
            "{backend}: {from_env:?}"
        );

        let mut command = dlock();
        command
            .env("DLOCK_URL", "redis://127.0.0.1:1")
            .args(["inspect", &key, "--url", url]);
        run(command, "").expect_code(0);

        guard.release().await.expect("release");
    }
}

/// One test per check for a backend compiled in (`cargo nextest run -p dlock-rs-cli` has them all).
macro_rules! backend_tests {
    ($backend:ident, $feature:literal, $server:literal, $env:literal, $default:literal) => {
        #[cfg(feature = $feature)]
        mod $backend {
            use super::*;

            fn url() -> String {
                std::env::var($env).unwrap_or_else(|_| $default.into())
            }

            async fn locker() -> Locker {
                connect($server, &url()).await
            }

            #[tokio::test(flavor = "multi_thread")]
            async fn list_shows_the_held_locks_as_a_table_and_as_json() {
                checks::list(locker().await, &url()).await;
            }

            #[tokio::test(flavor = "multi_thread")]
            async fn inspect_exits_0_for_a_held_key_and_1_for_a_free_one() {
                checks::inspect(locker().await, &url()).await;
            }

            #[tokio::test(flavor = "multi_thread")]
            async fn release_force_yes_frees_the_lock_and_a_free_key_exits_1() {
                checks::release_force_yes(locker().await, &url()).await;
            }

            #[tokio::test(flavor = "multi_thread")]
            async fn release_asks_first_and_only_y_releases() {
                checks::release_asks_first(locker().await, &url()).await;
            }

            #[tokio::test(flavor = "multi_thread")]
            async fn watch_count_3_prints_the_table_3_times() {
                checks::watch(locker().await, &url()).await;
            }

            #[tokio::test(flavor = "multi_thread")]
            async fn dlock_url_names_the_service_without_url() {
                checks::env_url(locker().await, &url()).await;
            }
        }
    };
}

backend_tests!(
    redis,
    "redis",
    "Redis",
    "DLOCK_TEST_REDIS_URL",
    "redis://127.0.0.1:6379?restart_delay=0"
);
backend_tests!(
    postgres,
    "postgres",
    "PostgreSQL",
    "DLOCK_TEST_POSTGRES_URL",
    "postgres://postgres@127.0.0.1:5432/test"
);
backend_tests!(
    mysql,
    "mysql",
    "MariaDB/MySQL",
    "DLOCK_TEST_MYSQL_URL",
    "mysql://root@127.0.0.1:3306/test"
);
backend_tests!(
    zookeeper,
    "zookeeper",
    "ZooKeeper",
    "DLOCK_TEST_ZOOKEEPER_URL",
    "zookeeper://127.0.0.1:2181/dlock-test"
);
backend_tests!(
    etcd,
    "etcd",
    "etcd",
    "DLOCK_TEST_ETCD_URL",
    "etcd://127.0.0.1:2379/dlock-test"
);

#[test]
fn help_describes_every_command() {
    let mut command = dlock();
    command.arg("--help");
    let help = run(command, "");
    help.expect_code(0);
    for word in [
        "list",
        "inspect",
        "release",
        "watch",
        "--url",
        "DLOCK_URL",
        "Exit status",
        "Examples",
    ] {
        assert!(help.stdout.contains(word), "{word} in\n{}", help.stdout);
    }
    let mut command = dlock();
    command.args(["release", "--help"]);
    let help = run(command, "");
    help.expect_code(0);
    assert!(help.stdout.contains("--force") && help.stdout.contains("--yes"));
    let mut command = dlock();
    command.args(["watch", "--help"]);
    let help = run(command, "");
    help.expect_code(0);
    assert!(help.stdout.contains("--interval") && help.stdout.contains("--count"));
}

#[test]
fn release_without_force_is_a_usage_error() {
    // Refused before any connection: the URL names no server.
    let refused = dlock_at("redis://127.0.0.1:1", &["release", "order:42"]);
    refused.expect_code(2);
    assert!(
        refused.stderr.contains("--force") && refused.stderr.contains("someone else's lock"),
        "{refused:?}"
    );
    let refused = dlock_at("redis://127.0.0.1:1", &["release", "--yes", "order:42"]);
    refused.expect_code(2);
}

#[test]
fn other_usage_errors_exit_2() {
    for args in [
        &["frobnicate"][..],
        &["inspect"],
        &["watch", "--interval", "fast"],
        &["watch", "--count", "0"],
    ] {
        let run = dlock_at("redis://127.0.0.1:1", args);
        run.expect_code(2);
        assert!(run.stderr.contains("error"), "{args:?}: {run:?}");
    }
}

#[test]
fn a_missing_url_says_how_to_give_one() {
    let mut command = dlock();
    command.args(["list"]);
    let missing = run(command, "");
    missing.expect_code(2);
    assert!(
        missing.stderr.contains("--url") && missing.stderr.contains("DLOCK_URL"),
        "{missing:?}"
    );
}

#[test]
fn a_bad_url_names_the_accepted_schemes() {
    let bad = dlock_at("foo://x", &["list"]);
    bad.expect_code(2);
    for part in [
        "foo://x",
        "redis://",
        "mysql://",
        "postgres://",
        "zookeeper://",
        "etcd://",
    ] {
        assert!(bad.stderr.contains(part), "{part} in {bad:?}");
    }
    let bad = dlock_at("127.0.0.1:6379", &["inspect", "k"]);
    bad.expect_code(2);
    assert!(bad.stderr.contains("redis://"), "{bad:?}");
}

#[cfg(feature = "redis")]
#[test]
fn a_refused_connection_fails_fast_and_names_the_url() {
    let refused = dlock_at("redis://127.0.0.1:1", &["list"]);
    refused.expect_code(2);
    assert!(refused.took < Duration::from_secs(5), "{refused:?}");
    assert!(
        refused.stderr.contains("redis://127.0.0.1:1") && refused.stderr.contains("refused"),
        "{refused:?}"
    );
    assert!(refused.stderr.contains("DLOCK_URL"), "{refused:?}");
}

#[cfg(feature = "redis")]
#[test]
fn a_server_that_never_answers_fails_within_5s() {
    // Accepts connections (the kernel completes them) and never says a word.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!(
        "redis://127.0.0.1:{}",
        silent.local_addr().expect("addr").port()
    );
    let silence = dlock_at(&url, &["inspect", "k"]);
    silence.expect_code(2);
    assert!(silence.took < Duration::from_secs(5), "{silence:?}");
    assert!(silence.stderr.contains(&url), "{silence:?}");
    assert!(
        silence.stderr.contains("no answer") || silence.stderr.contains("time"),
        "{silence:?}"
    );
}

#[test]
fn passwords_never_appear_in_messages() {
    for url in [
        "redis://admin:s3cret-pw@127.0.0.1:1",
        "postgres://postgres:s3cret-pw@127.0.0.1:1/test",
        "mysql://root:s3cret-pw@127.0.0.1:1/test",
        "etcd://root:s3cret-pw@127.0.0.1:1/dlock",
        "nosuch://root:s3cret-pw@127.0.0.1:1/dlock",
    ] {
        let failed = dlock_at(url, &["list"]);
        failed.expect_code(2);
        assert!(!failed.stderr.contains("s3cret-pw"), "{failed:?}");
        assert!(failed.stderr.contains(":***@127.0.0.1:1"), "{failed:?}");
    }
}

#[test]
fn watch_on_a_terminal_redraws_in_place() {
    // `script` (util-linux) gives the binary a terminal; `memory://` needs no server.
    let mut command = Command::new("script");
    command.args([
        "-qec",
        &format!(
            "{} --url memory:// watch --count 2 --interval 100ms",
            env!("CARGO_BIN_EXE_dlock")
        ),
        "/dev/null",
    ]);
    command.env_remove("DLOCK_URL");
    let shown = run(command, "");
    shown.expect_code(0);
    // Each refresh: cursor home, every line cleared to its end, the rest of the screen cleared.
    assert_eq!(shown.stdout.matches("\x1b[H").count(), 2, "{shown:?}");
    assert_eq!(shown.stdout.matches("\x1b[J").count(), 2, "{shown:?}");
    assert_eq!(
        shown.stdout.matches("no locks held\x1b[K").count(),
        2,
        "{shown:?}"
    );
}

#[test]
fn watch_ends_at_ctrl_c_with_exit_0() {
    use std::io::BufRead;
    let mut child = dlock()
        .args(["--url", "memory://", "watch", "--interval", "100ms"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the dlock binary starts");
    let mut stdout = std::io::BufReader::new(child.stdout.take().expect("piped stdout"));
    let mut first = String::new();
    stdout.read_line(&mut first).expect("the first refresh");
    assert!(first.contains("0 locks at memory://"), "{first:?}");
    let interrupted = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill -INT");
    assert!(interrupted.success());
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for dlock") {
            break status;
        }
        if started.elapsed() > Duration::from_secs(5) {
            let _ = child.kill();
            panic!("dlock watch still running 5 s after Ctrl-C");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(status.code(), Some(0), "{status:?}");
}
