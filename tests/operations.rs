//! Owners, inspection, listing and force-release, on every backend against its real server
//! (issue 15). One check, run per backend: owners shown, fence and time left plausible, `list`
//! finds exactly the held keys under a prefix among others (awkward and long keys included,
//! which some backends store digested), and `force_release` frees the key, wakes a waiter of
//! another Locker, and makes the old holder's next renewal find the lock gone.

mod support;

use std::time::{Duration, Instant};

use dlock::{Error, LockInfo, Locker};

/// Every lease here is long enough that nothing expires by itself during a check.
const LEASE: Duration = Duration::from_secs(60);
/// The force-released holder renews every second (a 3 s watchdog lease).
const WATCHDOG: Duration = Duration::from_secs(3);

/// `expires_in` must be reported where the backend counts leases in time.
fn counts_time(backend: &str) -> bool {
    backend != "zookeeper"
}

fn assert_plausible(info: &LockInfo, backend: &str, lease: Duration) {
    match info.expires_in {
        Some(left) => assert!(
            left > Duration::ZERO && left <= lease + Duration::from_millis(50),
            "{backend}: {left:?} left on a lease of {lease:?}"
        ),
        None => assert!(!counts_time(backend), "{backend} reports no time left"),
    }
}

async fn check_operations(a: Locker, b: Locker) {
    let backend = a.backend_name();
    let a = a.with_owner("billing-7f9c");
    let prefix = format!("{}/", support::unique("ops"));
    let plain = format!("{prefix}order:42");
    let awkward = format!("{prefix}Order 43 ünïcode/%{{x}}*?[");
    let long = format!("{prefix}{}", "long-".repeat(80));
    let watched = format!("{prefix}renewed");
    let unheld = format!("{prefix}free");
    // Outside the prefix: the prefix without its last character, and another prefix entirely.
    let outside = [
        prefix[..prefix.len() - 1].to_owned(),
        support::unique("other"),
    ];

    let g_plain = a.lock(&plain).ttl(LEASE).await.expect("plain key");
    let g_awkward = a.lock(&awkward).ttl(LEASE).await.expect("awkward key");
    let g_long = b.lock(&long).ttl(LEASE).await.expect("long key");
    let g_watched = b
        .lock(&watched)
        .ttl(WATCHDOG)
        .watchdog(true)
        .await
        .expect("watchdog key");
    let mut g_outside = Vec::new();
    for key in &outside {
        g_outside.push(
            a.lock(key)
                .ttl(LEASE)
                .await
                .expect("key outside the prefix"),
        );
    }
    // Released keys are not listed.
    a.lock(&unheld)
        .ttl(LEASE)
        .await
        .unwrap()
        .release()
        .await
        .unwrap();

    // inspect: owner, fence, time left.
    let info = b
        .inspect(&plain)
        .await
        .unwrap()
        .expect("a held key is found");
    assert_eq!(info.key, plain);
    assert_eq!(info.owner.as_deref(), Some("billing-7f9c"), "{backend}");
    assert_eq!(info.fence, g_plain.fence(), "{backend}: the holder's fence");
    assert_plausible(&info, backend, LEASE);
    let info = a
        .inspect(&long)
        .await
        .unwrap()
        .expect("a long key is found");
    assert_eq!(info.key, long);
    assert_eq!(
        info.owner.as_deref(),
        Some(b.owner()),
        "{backend}: the default owner"
    );
    assert!(b.owner().ends_with(&format!(":{}", std::process::id())));
    assert_eq!(
        a.inspect(&unheld).await.unwrap(),
        None,
        "{backend}: a free key"
    );
    assert!(matches!(a.inspect("").await, Err(Error::InvalidKey { .. })));

    // list: exactly the held keys under the prefix, each as inspect shows it.
    let listed = a.list(&prefix).await.unwrap();
    let keys: Vec<&str> = listed.iter().map(|i| i.key.as_str()).collect();
    let mut expected = vec![
        plain.as_str(),
        awkward.as_str(),
        long.as_str(),
        watched.as_str(),
    ];
    expected.sort();
    assert_eq!(keys, expected, "{backend}: list({prefix:?})");
    for info in &listed {
        let fence = [&g_plain, &g_awkward, &g_long, &g_watched]
            .iter()
            .find(|g| g.key() == info.key)
            .unwrap()
            .fence();
        assert_eq!(info.fence, fence, "{backend}: fence of {}", info.key);
        assert_plausible(info, backend, LEASE);
    }
    let everything = a.list("").await.unwrap();
    for key in expected
        .iter()
        .copied()
        .chain(outside.iter().map(String::as_str))
    {
        assert!(
            everything.iter().any(|i| i.key == key),
            "{backend}: list(\"\") misses {key}"
        );
    }

    // force_release: frees the key; the old holder's next renewal finds it gone.
    let forced_at = Instant::now();
    assert!(
        b.force_release(&watched).await.unwrap(),
        "{backend}: a holder was removed"
    );
    assert_eq!(a.inspect(&watched).await.unwrap(), None, "{backend}: freed");
    assert!(
        !a.force_release(&watched).await.unwrap(),
        "{backend}: nobody to remove now"
    );
    // A watchdog lease of 3 s renews every second; 10 s is generous for a loaded machine.
    tokio::time::timeout(Duration::from_secs(10), g_watched.lost())
        .await
        .unwrap_or_else(|_| panic!("{backend}: lost() did not fire after a force-release"));
    assert!(!g_watched.is_held());
    eprintln!(
        "{backend}: lost() fired {:?} after the force-release",
        forced_at.elapsed()
    );
    assert!(matches!(g_watched.release().await, Err(Error::Lost { .. })));

    // A waiter of another Locker is let in by a force-release, long before the 60 s lease ends.
    let waiter = {
        let b = b.clone();
        let key = plain.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let guard = b.lock(&key).ttl(LEASE).wait(Duration::from_secs(45)).await;
            (guard, started.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(a.force_release(&plain).await.unwrap());
    let (guard, waited) = waiter.await.unwrap();
    let guard = guard.unwrap_or_else(|e| panic!("{backend}: the waiter was not let in: {e}"));
    // Generous: MySQL's waiters poll; a bound far below the lease shows it was not expiry.
    assert!(
        waited < Duration::from_secs(20),
        "{backend}: the waiter waited {waited:?}"
    );
    if let (Some(old), Some(new)) = (g_plain.fence(), guard.fence()) {
        assert!(new > old, "{backend}: fence {new} after {old}");
    }
    let info = a
        .inspect(&plain)
        .await
        .unwrap()
        .expect("held by the waiter");
    assert_eq!(info.owner.as_deref(), Some(b.owner()));
    assert!(matches!(g_plain.release().await, Err(Error::Lost { .. })));
    guard.release().await.unwrap();

    for guard in [g_awkward, g_long] {
        guard.release().await.unwrap();
    }
    for guard in g_outside {
        guard.release().await.unwrap();
    }
    assert_eq!(
        a.list(&prefix).await.unwrap(),
        Vec::new(),
        "{backend}: all released"
    );
}

#[allow(dead_code)] // unused when no networked backend is compiled in
async fn pair(server: &str, url: &str) -> (Locker, Locker) {
    (
        support::connect(server, url).await,
        support::connect(server, url).await,
    )
}

#[tokio::test]
async fn memory() {
    let a = Locker::memory();
    check_operations(a.clone(), a.with_owner("")).await;
}

#[cfg(feature = "redis")]
#[tokio::test]
async fn redis() {
    let (a, b) = pair("Redis", &support::redis_url()).await;
    check_operations(a, b).await;
}

#[cfg(feature = "redlock")]
#[tokio::test]
async fn redlock() {
    let servers: Vec<support::RedisServer> =
        (0..3).map(|_| support::RedisServer::start()).collect();
    let hosts: Vec<String> = servers
        .iter()
        .map(|s| format!("127.0.0.1:{}", s.port))
        .collect();
    let url = format!("redlock://{}", hosts.join(","));
    let (a, b) = pair("Redis (3 private servers)", &url).await;
    check_operations(a, b).await;
}

#[cfg(feature = "mysql")]
#[tokio::test]
async fn mysql() {
    let (a, b) = pair("MariaDB", &support::mysql_url()).await;
    check_operations(a, b).await;
}

#[cfg(feature = "postgres")]
#[tokio::test]
async fn postgres() {
    let (a, b) = pair("PostgreSQL", &support::postgres_url()).await;
    check_operations(a, b).await;
}

#[cfg(feature = "zookeeper")]
#[tokio::test]
async fn zookeeper() {
    let (a, b) = pair("ZooKeeper", &support::zookeeper_url()).await;
    check_operations(a, b).await;
}

#[cfg(feature = "etcd")]
#[tokio::test]
async fn etcd() {
    let (a, b) = pair("etcd", &support::etcd_url()).await;
    check_operations(a, b).await;
}

/// Every metric is recorded with the backend and outcome as labels, never the key.
#[cfg(feature = "metrics")]
#[tokio::test]
async fn metrics_count_what_happened() {
    let handle = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .expect("the only recorder of this test process");
    let locker = Locker::memory();
    let key = support::unique("metrics");
    let held = locker
        .lock(&key)
        .ttl(Duration::from_millis(600))
        .watchdog(true)
        .await
        .unwrap();
    let busy = support::in_another_task(locker.lock(&key).wait(Duration::from_millis(50))).await;
    assert!(busy.unwrap_err().is_busy());
    tokio::time::sleep(Duration::from_millis(500)).await; // two renewals (every 200 ms)
    assert!(locker.force_release(&key).await.unwrap());
    tokio::time::timeout(Duration::from_secs(5), held.lost())
        .await
        .expect("lost");
    drop(held);
    let again = locker.lock(&key).await.unwrap();
    again.release().await.unwrap();

    let text = handle.render();
    let value = |line_start: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(line_start))
            .unwrap_or_else(|| panic!("no `{line_start}` in:\n{text}"))
            .rsplit(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    let acquired = r#"dlock_acquisitions_total{backend="memory",outcome="acquired"}"#;
    assert_eq!(value(acquired), 2.0);
    assert_eq!(
        value(r#"dlock_acquisitions_total{backend="memory",outcome="busy"}"#),
        1.0
    );
    assert!(value(r#"dlock_renewals_total{backend="memory",outcome="renewed"}"#) >= 1.0);
    assert_eq!(value(r#"dlock_losses_total{backend="memory"}"#), 1.0);
    assert_eq!(
        value(r#"dlock_force_releases_total{backend="memory"}"#),
        1.0
    );
    assert_eq!(value(r#"dlock_hold_seconds_count{backend="memory"}"#), 2.0);
    assert_eq!(
        value(r#"dlock_wait_seconds_count{backend="memory",outcome="busy"}"#),
        1.0
    );
    assert!(!text.contains(&key), "a key never becomes a label");
}
