//! Redlock over five private `redis-server` processes: all up, a minority paused or killed, no
//! quorum, recovery; a SIGKILLed holder.

mod support;

use std::time::{Duration, Instant};

use dlock::{Error, Locker};
use support::{connect, Holder, RedisServer};

const SECOND: Duration = Duration::from_secs(1);

fn url(servers: &[RedisServer]) -> String {
    let hosts: Vec<String> = servers
        .iter()
        .map(|s| format!("127.0.0.1:{}", s.port))
        .collect();
    format!("redlock://{}", hosts.join(","))
}

fn five() -> Vec<RedisServer> {
    (0..5).map(|_| RedisServer::start()).collect()
}

/// Keys other than fence counters left on a node.
fn leftovers(server: &RedisServer) -> String {
    let out = std::process::Command::new("redis-cli")
        .args([
            "-p",
            &server.port.to_string(),
            "--scan",
            "--pattern",
            "dlock:*",
        ])
        .output()
        .expect("redis-cli");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

async fn assert_exclusive(a: &Locker, b: &Locker, key: &str) {
    let guard = a.lock(key).ttl(5 * SECOND).wait(10 * SECOND).await.unwrap();
    assert_eq!(guard.fence(), None, "Redlock gives no fences");
    assert!(
        b.try_lock(key).await.unwrap().is_none(),
        "exclusive across lockers"
    );
    guard.release().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_up_keeps_a_counter_exact() {
    let servers = five();
    let lockers = [
        connect("redlock", &url(&servers)).await,
        connect("redlock", &url(&servers)).await,
    ];
    let fences = support::contend(&lockers, "counter", 8, 10).await;
    assert!(fences.is_empty(), "Redlock gives no fences");
    for s in &servers {
        assert_eq!(leftovers(s), "", "nothing left on node {}", s.port);
    }
}

#[tokio::test]
async fn survives_two_paused_nodes_and_refuses_without_a_quorum() {
    let servers = five();
    let (a, b) = (
        connect("redlock", &url(&servers)).await,
        connect("redlock", &url(&servers)).await,
    );
    assert_exclusive(&a, &b, "k").await;

    servers[0].pause();
    servers[1].pause();
    let t = Instant::now();
    assert_exclusive(&a, &b, "k").await;
    // Per-node timeouts bound the cost of the paused pair (generous bound for a loaded machine).
    assert!(t.elapsed() < 10 * SECOND, "{:?}", t.elapsed());

    servers[2].pause();
    let t = Instant::now();
    let r = tokio::time::timeout(30 * SECOND, a.lock("k").ttl(5 * SECOND).wait(2 * SECOND))
        .await
        .expect("no hang without a quorum");
    assert!(matches!(r, Err(Error::Backend { .. })), "{r:?}");
    assert!(t.elapsed() < 15 * SECOND, "{:?}", t.elapsed());

    for s in &servers[..3] {
        s.resume();
    }
    // Give the resumed nodes a moment to drain the commands queued while paused.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_exclusive(&a, &b, "k").await;
}

#[tokio::test]
async fn survives_two_killed_nodes_and_works_after_restart() {
    let mut servers = five();
    let u = url(&servers);
    let (a, b) = (connect("redlock", &u).await, connect("redlock", &u).await);
    assert_exclusive(&a, &b, "k").await;
    let p0 = servers.remove(0).kill();
    let p1 = servers.remove(0).kill();
    assert_exclusive(&a, &b, "k").await;
    let killed = [RedisServer::start_on(p0), RedisServer::start_on(p1)];
    // The lockers reconnect to the restarted nodes by themselves.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_exclusive(&a, &b, "k").await;
    for s in killed.iter().chain(&servers) {
        assert_eq!(leftovers(s), "", "nothing left on node {}", s.port);
    }
}

#[tokio::test]
async fn a_sigkilled_holder_frees_after_its_lease() {
    let servers = five();
    let u = url(&servers);
    let locker = connect("redlock", &u).await;
    for watchdog in [false, true] {
        let holder = Holder::start(&u, "crash", Duration::from_millis(1000), watchdog);
        assert!(locker.try_lock("crash").await.unwrap().is_none());
        holder.kill();
        let g = locker.lock("crash").wait(15 * SECOND).await.unwrap();
        g.release().await.unwrap();
    }
}

#[tokio::test]
async fn bad_urls_say_why() {
    for (url, why) in [
        ("redlock://127.0.0.1:6400", "at least 3"),
        ("redlock://127.0.0.1:6400,127.0.0.1:6401", "at least 3"),
        ("redlock://a:1,b:2,c:3,d:4", "odd number"),
    ] {
        match Locker::connect(url).await {
            Err(Error::InvalidUrl { reason, .. }) => assert!(reason.contains(why), "{reason}"),
            other => panic!("{url}: {other:?}"),
        }
    }
}

#[tokio::test]
async fn closed_ports_error_in_bounded_time() {
    let ports: Vec<String> = (0..3)
        .map(|_| format!("127.0.0.1:{}", support::free_port()))
        .collect();
    let locker = Locker::connect(&format!("redlock://{}", ports.join(",")))
        .await
        .expect("nodes connect lazily");
    let t = Instant::now();
    let r = tokio::time::timeout(20 * SECOND, locker.lock("k").wait(SECOND)).await;
    assert!(matches!(r, Ok(Err(Error::Backend { .. }))), "{r:?}");
    assert!(t.elapsed() < 15 * SECOND, "{:?}", t.elapsed());
    // Without a wait too: no quorum is a clean refusal, not a retry for ever.
    let t = Instant::now();
    let r = tokio::time::timeout(20 * SECOND, locker.lock("k")).await;
    assert!(matches!(r, Ok(Err(Error::Backend { .. }))), "{r:?}");
    assert!(t.elapsed() < 15 * SECOND, "{:?}", t.elapsed());
}
