//! redis: read-write locks, semaphores and elections against a real Redis (127.0.0.1:6379 or
//! `DLOCK_TEST_REDIS_URL`), plus private `redis-server` processes to pause or flush.

use std::future::IntoFuture;
use std::time::{Duration, Instant};

use dlock::{Error, Locker};

use crate::scenarios;
use crate::support::{connect, redis_url, unique, Holder, RedisServer};

const SECOND: Duration = Duration::from_secs(1);

/// `n` Lockers, each its own connections (as `n` processes would have), with distinct owners.
async fn lockers(n: usize) -> Vec<Locker> {
    let mut all = Vec::new();
    for i in 0..n {
        all.push(
            connect("Redis", &redis_url())
                .await
                .with_owner(format!("redis-{i}")),
        );
    }
    all
}

async fn locker() -> Locker {
    connect("Redis", &redis_url()).await
}

async fn raw(url: &str) -> ::redis::aio::MultiplexedConnection {
    ::redis::Client::open(url)
        .expect("redis url")
        .get_multiplexed_async_connection()
        .await
        .unwrap_or_else(|e| {
            panic!("Redis is not reachable at {url} ({e}): start it with `scripts/services.sh up`")
        })
}

/// Whether the Redis key `name` exists.
async fn exists(con: &mut ::redis::aio::MultiplexedConnection, name: &str) -> bool {
    let n: i64 = ::redis::cmd("EXISTS")
        .arg(name)
        .query_async(con)
        .await
        .expect("EXISTS");
    n == 1
}

common_scenarios!(lockers, "redis");

/// The leader's server is paused (SIGSTOP) past the term's 3 s watchdog lease, so the renewals
/// fail and the lease runs out; resumed, the server has expired the term and `lead` is elected
/// again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lead_cancels_the_work_when_leadership_is_lost() {
    let server = std::sync::Arc::new(RedisServer::start());
    let locker = connect("private Redis", &server.url()).await;
    let paused = server.clone();
    let lose = async move {
        paused.pause();
        // The last renewal came at most 1 s before the pause; the lease is lost 3 s after it.
        // Two more seconds, so the server (its clock runs on) has expired the term too.
        tokio::time::sleep(5 * SECOND).await;
        paused.resume();
    };
    let started = Instant::now();
    let campaign = locker
        .campaign(&unique("lead"))
        .ttl(3 * SECOND)
        .watchdog(true);
    scenarios::lead_cancels_the_work_when_leadership_is_lost(campaign, lose).await;
    // 5 s paused, then a re-election within seconds; generous for a loaded machine.
    let took = started.elapsed();
    assert!(took < 30 * SECOND, "{took:?}");
    eprintln!("lead: lost, cancelled and re-elected in {took:?} (5 s of it paused)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_permit_holder_frees_only_its_permit() {
    // The killed holder's permit frees when its 2 s lease ends (no notice: the front waiter's
    // fallback is bounded by that lease); 5 s more for a loaded machine.
    let lease = 2 * SECOND;
    scenarios::a_killed_permit_holder_frees_only_its_permit(
        &locker().await,
        &redis_url(),
        &unique("semkill"),
        lease,
        lease + 5 * SECOND,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_leader_elects_another() {
    // As above: the dead leader's 2 s lease ends, the front candidate's fallback finds it.
    scenarios::killing_the_leader_elects_another(
        &lockers(4).await,
        &redis_url(),
        &unique("electkill"),
        2 * SECOND,
        5 * SECOND,
    )
    .await;
}

/// A writer waiting behind a reader marks itself waiting (new readers queue behind it); when it
/// gives up (its wait ran out) or its acquire is dropped, the mark goes at once: a new reader
/// gets in well within the mark's own 3 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_that_stops_waiting_stops_holding_readers_back() {
    let key = unique("ww");
    let lockers = lockers(3).await;
    let mut con = raw(&redis_url()).await;
    let waiting = format!("dlock:rw:{{{key}}}:waiting");
    let reader = lockers[0]
        .read_lock(key.as_str())
        .ttl(30 * SECOND)
        .await
        .unwrap();

    // Gave up: the wait ran out.
    let gave_up = lockers[1]
        .write_lock(key.as_str())
        .wait(Duration::from_millis(400))
        .await;
    assert!(matches!(gave_up, Err(Error::Busy { .. })), "{gave_up:?}");
    assert!(!exists(&mut con, &waiting).await, "the mark was withdrawn");
    let t = Instant::now();
    let second = lockers[2]
        .read_lock(key.as_str())
        .wait(10 * SECOND)
        .await
        .unwrap();
    // Well under the 3 s a forgotten mark would hold readers back (loaded machine: 1.5 s).
    assert!(
        t.elapsed() < Duration::from_millis(1500),
        "{:?}",
        t.elapsed()
    );
    second.release().await.unwrap();

    // Dropped: the acquire's task is aborted while it waits.
    let writer = tokio::spawn(lockers[1].write_lock(key.as_str()).into_future());
    let until = Instant::now() + 10 * SECOND;
    while !exists(&mut con, &waiting).await {
        assert!(
            Instant::now() < until,
            "the waiting writer never marked itself"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // While it waits, a new reader waits behind it.
    let held_back = lockers[2]
        .read_lock(key.as_str())
        .wait(Duration::from_millis(300))
        .await;
    assert!(
        matches!(held_back, Err(Error::Busy { .. })),
        "{held_back:?}"
    );
    writer.abort();
    let t = Instant::now();
    let third = lockers[2]
        .read_lock(key.as_str())
        .wait(10 * SECOND)
        .await
        .unwrap();
    assert!(
        t.elapsed() < Duration::from_millis(1500),
        "{:?}",
        t.elapsed()
    );
    third.release().await.unwrap();
    reader.release().await.unwrap();
}

/// A waiting writer that crashed (its mark left on the server) holds new readers back only until
/// the mark runs out; readers already in are not affected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_writers_mark_runs_out() {
    let key = unique("mark");
    let locker = locker().await;
    let mut con = raw(&redis_url()).await;
    let (secs, micros): (String, String) =
        ::redis::cmd("TIME").query_async(&mut con).await.unwrap();
    let now_ms = secs.parse::<u64>().unwrap() * 1000 + micros.parse::<u64>().unwrap() / 1000;
    let _: i64 = ::redis::cmd("ZADD")
        .arg(format!("dlock:rw:{{{key}}}:waiting"))
        .arg(now_ms + 1500)
        .arg("crashed-writer")
        .query_async(&mut con)
        .await
        .unwrap();
    let t = Instant::now();
    let r = locker
        .read_lock(key.as_str())
        .wait(10 * SECOND)
        .await
        .unwrap();
    let waited = t.elapsed();
    // Held back for the rest of the 1.5 s mark; no notice comes, the fallback is bounded by it.
    assert!(waited > Duration::from_millis(1000), "{waited:?}");
    assert!(waited < Duration::from_millis(4000), "{waited:?}");
    r.release().await.unwrap();
}

/// A SIGKILLed reader's hold ends with its lease: a writer then gets in (no notice comes), and
/// nothing of the read-write lock is left on the server once everyone is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_readers_hold_expires_and_leaves_nothing() {
    let key = unique("rkill");
    let locker = locker().await;
    let url = redis_url();
    let reader = Holder::start_kind(&url, &key, SECOND, false, "read");
    assert_eq!(reader.fence, None, "no write yet: a reader has no fence");
    reader.kill();
    let t = Instant::now();
    let w = locker
        .write_lock(key.as_str())
        .wait(10 * SECOND)
        .await
        .unwrap();
    // The 1 s lease, and a loaded machine's slack.
    assert!(t.elapsed() < 4 * SECOND, "{:?}", t.elapsed());
    let fence = w.fence().expect("a write fence");
    w.release().await.unwrap();
    let mut con = raw(&url).await;
    for part in ["readers", "writer", "waiting"] {
        let name = format!("dlock:rw:{{{key}}}:{part}");
        assert!(!exists(&mut con, &name).await, "{name} left behind");
    }
    let last: u64 = ::redis::cmd("GET")
        .arg(format!("dlock:rw:{{{key}}}:fence"))
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(last, fence, "the counter keeps the last write's fence");
}

/// Watchdog renewals keep a reader and a permit past their first lease; a released permit
/// leaves nothing but its fence counter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchdog_keeps_readers_and_permits() {
    let key = unique("renew");
    let lockers = lockers(2).await;
    let lease = Duration::from_millis(600);
    let r = lockers[0]
        .read_lock(key.as_str())
        .ttl(lease)
        .watchdog(true)
        .await
        .unwrap();
    let p = lockers[0]
        .semaphore(key.as_str(), 1)
        .ttl(lease)
        .watchdog(true)
        .await
        .unwrap();
    tokio::time::sleep(3 * lease).await;
    assert!(r.is_held() && p.is_held());
    let w = lockers[1]
        .write_lock(key.as_str())
        .wait(Duration::ZERO)
        .await;
    assert!(matches!(w, Err(Error::Busy { .. })), "{w:?}");
    let q = lockers[1]
        .semaphore(key.as_str(), 1)
        .wait(Duration::ZERO)
        .await;
    assert!(matches!(q, Err(Error::Busy { .. })), "{q:?}");
    r.release().await.unwrap();
    p.release().await.unwrap();
    let mut con = raw(&redis_url()).await;
    for part in ["holders", "permits"] {
        let name = format!("dlock:sem:{{{key}}}:{part}");
        assert!(!exists(&mut con, &name).await, "{name} left behind");
    }
}

/// Write and permit fences keep growing across a `FLUSHALL` (each is at least the server's
/// clock, and above the highest this client saw); a reader after the flush has no write to see.
#[tokio::test]
async fn fences_never_go_back_after_a_flush() {
    let server = RedisServer::start();
    let locker = connect("private Redis", &server.url()).await;
    let mut con = raw(&server.url()).await;
    let w1 = locker.write_lock("k").await.unwrap();
    let f1 = w1.fence().unwrap();
    w1.release().await.unwrap();
    let p1 = locker.semaphore("k", 2).await.unwrap();
    let g1 = p1.fence().unwrap();
    p1.release().await.unwrap();
    let _: () = ::redis::cmd("FLUSHALL")
        .query_async(&mut con)
        .await
        .unwrap();
    let r = locker.read_lock("k").await.unwrap();
    assert_eq!(r.fence(), None, "the flush took the last write's fence");
    r.release().await.unwrap();
    let w2 = locker.write_lock("k").await.unwrap();
    assert!(w2.fence().unwrap() > f1, "{:?} after {f1}", w2.fence());
    w2.release().await.unwrap();
    let p2 = locker.semaphore("k", 2).await.unwrap();
    assert!(p2.fence().unwrap() > g1, "{:?} after {g1}", p2.fence());
    p2.release().await.unwrap();
}

/// `?replicas=1` on a server without replicas: a write or permit grant is not confirmed, so it
/// is withdrawn and the acquire fails; nothing is left held.
#[tokio::test]
async fn unconfirmed_grants_are_withdrawn_with_replicas() {
    let server = RedisServer::start();
    let strict = connect("private Redis", &format!("{}&replicas=1", server.url())).await;
    let plain = connect("private Redis", &server.url()).await;
    for request in [strict.write_lock("k"), strict.semaphore("k", 1)] {
        match request.wait(2 * SECOND).await {
            Err(Error::Backend { source, .. }) => {
                assert!(source.to_string().contains("replica"), "{source}")
            }
            other => panic!("expected an unconfirmed grant to fail, got {other:?}"),
        }
    }
    let w = plain.write_lock("k").wait(Duration::ZERO).await.unwrap();
    let p = plain.semaphore("k", 1).wait(Duration::ZERO).await.unwrap();
    w.release().await.unwrap();
    p.release().await.unwrap();
}

/// A release notice admits every reader waiting in one Locker (a shared hold passes the wake-up
/// on), not one per notice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_release_admits_every_waiting_reader() {
    let key = unique("wakeall");
    let lockers = lockers(2).await;
    let w = lockers[0]
        .write_lock(key.as_str())
        .ttl(30 * SECOND)
        .await
        .unwrap();
    let mut readers = Vec::new();
    for _ in 0..5 {
        let request = lockers[1].read_lock(key.as_str()).wait(20 * SECOND);
        readers.push(tokio::spawn(request.into_future()));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let released = Instant::now();
    w.release().await.unwrap();
    let mut guards = Vec::new();
    for r in readers {
        guards.push(r.await.unwrap().unwrap());
    }
    // Far below the writer's 30 s lease and the fallback's seconds: woken by the notice.
    assert!(released.elapsed() < SECOND, "{:?}", released.elapsed());
    for g in guards {
        assert!(g.is_held());
        g.release().await.unwrap();
    }
}

/// After a restart that kept nothing, grants wait for `?restart_delay=` (a holder from before
/// may still be inside its lease): a fresh server looks the same, so read, write and permit
/// grants all come once it has been up 2 s, and the given-back grants leave nothing held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grants_wait_for_the_restart_delay() {
    let server = RedisServer::start();
    let url = server.url().replace("restart_delay=0", "restart_delay=2s");
    let locker = connect("private Redis", &url).await;
    let started = Instant::now();
    let w = locker.write_lock("k").wait(20 * SECOND).await.unwrap();
    let waited = started.elapsed();
    // The server is less than a second old: about 2 s of delay (Redis counts whole seconds).
    assert!(waited > Duration::from_millis(900), "{waited:?}");
    assert!(waited < 10 * SECOND, "{waited:?}");
    w.release().await.unwrap();
    let r = locker.read_lock("k").wait(Duration::ZERO).await.unwrap();
    let p = locker.semaphore("k", 1).wait(5 * SECOND).await.unwrap();
    r.release().await.unwrap();
    p.release().await.unwrap();
}
