//! What every backend's read-write locks, semaphores and elections must show, written once; each
//! backend's file calls these with its own lockers (issue 16).

#![allow(dead_code)] // each backend runs the scenarios it offers
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dlock::{Error, Locker};

/// Generous: a loaded 2-core CI machine runs several test binaries at once.
const LONG_WAIT: Duration = Duration::from_secs(60);

/// Readers and writers over `lockers`: readers overlap (more than one at once was seen), no
/// reader ever overlaps a writer, and the writers' non-atomic counter ends exact; writer fences
/// strictly increase, and a reader sees the fence of the last write (when the backend gives one).
pub async fn readers_overlap_and_writers_exclude(lockers: &[Locker], key: &str) {
    let readers_in = Arc::new(AtomicUsize::new(0));
    let writers_in = Arc::new(AtomicUsize::new(0));
    let most_readers = Arc::new(AtomicUsize::new(0));
    let counter = Arc::new(AtomicU64::new(0));
    let write_fences = Arc::new(Mutex::new(Vec::new()));
    let violations = Arc::new(AtomicUsize::new(0));
    let (writers, readers, rounds) = (4usize, 8usize, 6u64);
    let mut joins = Vec::new();
    for i in 0..writers + readers {
        let locker = lockers[i % lockers.len()].clone();
        let key = key.to_owned();
        let (readers_in, writers_in, most_readers, counter, write_fences, violations) = (
            readers_in.clone(),
            writers_in.clone(),
            most_readers.clone(),
            counter.clone(),
            write_fences.clone(),
            violations.clone(),
        );
        let writer = i < writers;
        joins.push(tokio::spawn(async move {
            for _ in 0..rounds {
                if writer {
                    let guard = locker
                        .write_lock(key.as_str())
                        .wait(LONG_WAIT)
                        .await
                        .expect("write lock");
                    if writers_in.fetch_add(1, Ordering::SeqCst) != 0
                        || readers_in.load(Ordering::SeqCst) != 0
                    {
                        violations.fetch_add(1, Ordering::SeqCst);
                    }
                    let seen = counter.load(Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    counter.store(seen + 1, Ordering::SeqCst);
                    if let Some(f) = guard.fence() {
                        write_fences.lock().unwrap().push(f);
                    }
                    writers_in.fetch_sub(1, Ordering::SeqCst);
                    guard.release().await.expect("release write");
                } else {
                    let guard = locker
                        .read_lock(key.as_str())
                        .wait(LONG_WAIT)
                        .await
                        .expect("read lock");
                    let now_in = readers_in.fetch_add(1, Ordering::SeqCst) + 1;
                    most_readers.fetch_max(now_in, Ordering::SeqCst);
                    if writers_in.load(Ordering::SeqCst) != 0 {
                        violations.fetch_add(1, Ordering::SeqCst);
                    }
                    // Long enough for other readers to join.
                    tokio::time::sleep(Duration::from_millis(40)).await;
                    if writers_in.load(Ordering::SeqCst) != 0 {
                        violations.fetch_add(1, Ordering::SeqCst);
                    }
                    readers_in.fetch_sub(1, Ordering::SeqCst);
                    guard.release().await.expect("release read");
                }
            }
        }));
    }
    for j in joins {
        j.await.expect("task");
    }
    assert_eq!(
        violations.load(Ordering::SeqCst),
        0,
        "a reader overlapped a writer, or two writers overlapped"
    );
    assert_eq!(
        counter.load(Ordering::SeqCst),
        writers as u64 * rounds,
        "writers' counter must end exact"
    );
    assert!(
        most_readers.load(Ordering::SeqCst) > 1,
        "readers never overlapped: read holds must be shared"
    );
    let fences = write_fences.lock().unwrap().clone();
    assert!(
        fences.windows(2).all(|w| w[0] < w[1]),
        "write fences must strictly increase: {fences:?}"
    );
}

/// A reader holding while a writer writes: the reader that comes after the write sees that
/// write's fence (on backends with fences).
pub async fn a_reader_sees_the_last_write_fence(locker: &Locker, key: &str) {
    let w = locker.write_lock(key).wait(LONG_WAIT).await.expect("write");
    let fence = w.fence();
    w.release().await.expect("release");
    let r = locker.read_lock(key).wait(LONG_WAIT).await.expect("read");
    assert_eq!(
        r.fence(),
        fence,
        "a reader sees the fence of the last write hold"
    );
    r.release().await.expect("release");
    let w2 = locker.write_lock(key).wait(LONG_WAIT).await.expect("write");
    if let (Some(a), Some(b)) = (fence, w2.fence()) {
        assert!(b > a, "write fences grow: {a} then {b}");
    }
}

/// Readers keep arriving (each new one before the last leaves) from `lockers`; a writer that
/// asks meanwhile gets in while they still arrive: writers are not starved.
pub async fn a_waiting_writer_is_not_starved_by_new_readers(lockers: &[Locker], key: &str) {
    let stop = Arc::new(AtomicBool::new(false));
    let mut readers = Vec::new();
    // Four overlapping reader loops: at every moment some reader holds the lock.
    for i in 0..4 {
        let locker = lockers[i % lockers.len()].clone();
        let (key, stop) = (key.to_owned(), stop.clone());
        readers.push(tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(30 * i as u64)).await;
            while !stop.load(Ordering::SeqCst) {
                let r = locker
                    .read_lock(key.as_str())
                    .wait(LONG_WAIT)
                    .await
                    .expect("read");
                tokio::time::sleep(Duration::from_millis(120)).await;
                r.release().await.expect("release read");
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    let asked = Instant::now();
    let writer = lockers[lockers.len() - 1].clone();
    let w = writer
        .write_lock(key)
        .wait(LONG_WAIT)
        .await
        .expect("the writer must get in");
    let waited = asked.elapsed();
    // The readers never stopped arriving: the writer got in anyway. Bound generous (a loaded CI
    // machine); without writer preference it would wait until the readers stop (never here).
    assert!(
        waited < Duration::from_secs(20),
        "writer waited {waited:?} behind a stream of readers"
    );
    w.release().await.expect("release write");
    stop.store(true, Ordering::SeqCst);
    for r in readers {
        r.await.expect("reader");
    }
}

/// 12 tasks over `lockers` share a semaphore of 3: never more than 3 inside, and 3 is reached.
pub async fn a_semaphore_of_3_admits_3(lockers: &[Locker], key: &str) {
    let inside = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let mut joins = Vec::new();
    for i in 0..12 {
        let locker = lockers[i % lockers.len()].clone();
        let (key, inside, most) = (key.to_owned(), inside.clone(), most.clone());
        joins.push(tokio::spawn(async move {
            for _ in 0..3 {
                let permit = locker
                    .semaphore(key.as_str(), 3)
                    .wait(LONG_WAIT)
                    .await
                    .expect("permit");
                let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(30)).await;
                inside.fetch_sub(1, Ordering::SeqCst);
                permit.release().await.expect("release permit");
            }
        }));
    }
    for j in joins {
        j.await.expect("task");
    }
    assert_eq!(
        most.load(Ordering::SeqCst),
        3,
        "at most 3 holders, and 3 reached"
    );
}

/// Holders must agree on the number of permits: another count is an error, not a second
/// semaphore.
pub async fn a_permit_count_mismatch_is_an_error(locker: &Locker, key: &str) {
    let held = locker
        .semaphore(key, 3)
        .wait(LONG_WAIT)
        .await
        .expect("permit");
    let other = tokio::spawn(
        locker
            .semaphore(key, 4)
            .wait(Duration::from_secs(2))
            .acquire(),
    )
    .await
    .expect("task");
    match other {
        Err(Error::InvalidArgument { reason }) => {
            assert!(
                reason.contains('3') && reason.contains('4'),
                "names both counts: {reason}"
            )
        }
        other => panic!("a different permit count must be InvalidArgument, got {other:?}"),
    }
    held.release().await.expect("release");
    // Once nobody holds it, a new count is a new semaphore.
    let fresh = locker
        .semaphore(key, 4)
        .wait(LONG_WAIT)
        .await
        .expect("a free semaphore takes a new count");
    fresh.release().await.expect("release");
}

/// Kinds live in their own key spaces: a mutex, a write lock and a semaphore of one key are held
/// at once.
pub async fn kinds_have_their_own_key_spaces(locker: &Locker, key: &str) {
    let m = locker.lock(key).wait(LONG_WAIT).await.expect("mutex");
    let w = tokio::spawn(
        locker
            .write_lock(key)
            .wait(Duration::from_secs(5))
            .acquire(),
    );
    let s = tokio::spawn(
        locker
            .semaphore(key, 1)
            .wait(Duration::from_secs(5))
            .acquire(),
    );
    let w = w.await.expect("task").expect("write lock beside the mutex");
    let s = s.await.expect("task").expect("semaphore beside both");
    for g in [m, w, s] {
        g.release().await.expect("release");
    }
}

/// Five Lockers (five owners) campaign for `name`: exactly one leads at any time, `leader()`
/// names it, and each resignation elects another, until all five have led.
pub async fn five_candidates_one_leader_at_a_time(lockers: &[Locker], name: &str) {
    assert_eq!(lockers.len(), 5);
    let leading = Arc::new(AtomicUsize::new(0));
    let overlaps = Arc::new(AtomicUsize::new(0));
    let named_right = Arc::new(AtomicUsize::new(0));
    let mut joins = Vec::new();
    for locker in lockers {
        let (locker, name) = (locker.clone(), name.to_owned());
        let (leading, overlaps, named_right) =
            (leading.clone(), overlaps.clone(), named_right.clone());
        joins.push(tokio::spawn(async move {
            let term = locker
                .campaign(&name)
                .wait(LONG_WAIT * 2)
                .await
                .expect("elected");
            if leading.fetch_add(1, Ordering::SeqCst) != 0 {
                overlaps.fetch_add(1, Ordering::SeqCst);
            }
            let who = locker.leader(&name).await.expect("leader()");
            if who.as_deref() == Some(locker.owner()) {
                named_right.fetch_add(1, Ordering::SeqCst);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            leading.fetch_sub(1, Ordering::SeqCst);
            term.release().await.expect("resign");
        }));
    }
    for j in joins {
        j.await.expect("candidate");
    }
    assert_eq!(overlaps.load(Ordering::SeqCst), 0, "two leaders at once");
    assert_eq!(
        named_right.load(Ordering::SeqCst),
        5,
        "leader() names the owner leading"
    );
    assert_eq!(
        lockers[0].leader(name).await.expect("leader()"),
        None,
        "nobody leads after all resigned"
    );
}

/// `lead` runs the work while leading and cancels it when leadership is lost (`lose` makes the
/// lease lost: a paused server, a frozen connection, a force-release); it then campaigns again
/// and runs the work a second time once re-elected. `campaign` is `locker.campaign(name)`, best
/// with a short watchdog lease (`.ttl(3 s).watchdog(true)`) so the loss is found quickly.
pub async fn lead_cancels_the_work_when_leadership_is_lost<L>(campaign: dlock::LockRequest, lose: L)
where
    L: std::future::Future<Output = ()> + Send + 'static,
{
    struct Cancelled(Arc<AtomicUsize>);
    impl Drop for Cancelled {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
    let started = Arc::new(AtomicUsize::new(0));
    let dropped = Arc::new(AtomicUsize::new(0));
    let (started2, dropped2) = (started.clone(), dropped.clone());
    let run = tokio::spawn(async move {
        campaign
            .lead(move |_fence| {
                let (started, dropped) = (started2.clone(), dropped2.clone());
                async move {
                    let term = started.fetch_add(1, Ordering::SeqCst) + 1;
                    let _cancelled = Cancelled(dropped);
                    if term == 1 {
                        std::future::pending::<()>().await; // works until cancelled
                    }
                    term
                }
            })
            .await
    });
    let until = Instant::now() + LONG_WAIT;
    while started.load(Ordering::SeqCst) == 0 {
        assert!(Instant::now() < until, "never elected");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    lose.await;
    let output = tokio::time::timeout(LONG_WAIT * 2, run)
        .await
        .expect("lead returns after the second term's work")
        .expect("task")
        .expect("lead");
    assert_eq!(output, 2, "the second term's work finished");
    assert_eq!(
        started.load(Ordering::SeqCst),
        2,
        "elected again after the loss"
    );
    assert_eq!(
        dropped.load(Ordering::SeqCst),
        2,
        "the first term's work was cancelled (dropped), the second ended"
    );
}

/// [`lead_cancels_the_work_when_leadership_is_lost`] with the loss a silent network failure
/// causes: the leader reaches the server (at `server_port`) through a proxy (`url(port)` is the
/// URL through a proxy on `port`) whose connections are then all frozen, so renewals stall and
/// the 3 s lease runs out; connections opened later (to campaign again) pass.
pub async fn lead_cancels_the_work_when_its_connections_freeze(
    server: &str,
    server_port: u16,
    url: impl Fn(u16) -> String,
    name: &str,
) {
    let proxy = crate::support::FreezingProxy::start(server_port);
    let locker = crate::support::connect(server, &url(proxy.port)).await;
    let frozen_at = Arc::new(Mutex::new(None));
    let frozen_at2 = frozen_at.clone();
    let lose = async move {
        for i in 0..proxy.accepted() {
            proxy.freeze(i);
        }
        *frozen_at2.lock().unwrap() = Some(Instant::now());
        // Later connections (opened to campaign again) pass.
        std::mem::forget(proxy);
    };
    let campaign = locker
        .campaign(name)
        .ttl(Duration::from_secs(3))
        .watchdog(true);
    lead_cancels_the_work_when_leadership_is_lost(campaign, lose).await;
    let frozen_at = frozen_at.lock().unwrap().expect("frozen");
    eprintln!(
        "lost and re-elected {:?} after the connections froze (lease 3 s)",
        frozen_at.elapsed()
    );
}

/// A backend without read-write locks or semaphores says so, naming the backends that have them;
/// leader election still works there (it is a mutex).
pub async fn unsupported_kinds_say_where_to_go(locker: &Locker, key: &str) {
    for request in [
        locker.read_lock(key),
        locker.write_lock(key),
        locker.semaphore(key, 2),
    ] {
        match request.wait(Duration::from_secs(1)).await {
            Err(Error::Unsupported { what, .. }) => {
                assert!(
                    what.contains("redis") && what.contains("zookeeper"),
                    "{what}"
                )
            }
            other => panic!("expected Unsupported, got {other:?}"),
        }
    }
    let term = locker
        .campaign(key)
        .wait(LONG_WAIT)
        .await
        .expect("campaign");
    assert_eq!(
        locker.leader(key).await.expect("leader").as_deref(),
        Some(locker.owner())
    );
    term.release().await.expect("resign");
}

/// Two processes hold the two permits of a semaphore with a lease of `lease`; one is SIGKILLed.
/// Its permit frees after its lease (`frees_within` allows for the backend's session or expiry),
/// the other's stays: a new holder gets exactly one permit.
pub async fn a_killed_permit_holder_frees_only_its_permit(
    locker: &Locker,
    url: &str,
    key: &str,
    lease: Duration,
    frees_within: Duration,
) {
    let a = crate::support::Holder::start_kind(url, key, lease, true, "permit:2");
    let _b = crate::support::Holder::start_kind(url, key, lease, true, "permit:2");
    let none = locker.semaphore(key, 2).wait(Duration::ZERO).await;
    assert!(
        matches!(none, Err(Error::Busy { .. })),
        "both permits are held: {none:?}"
    );
    a.kill();
    let killed = Instant::now();
    let permit = locker
        .semaphore(key, 2)
        .wait(frees_within)
        .await
        .expect("the killed holder's permit frees");
    let freed_after = killed.elapsed();
    let second = tokio::spawn(
        locker
            .semaphore(key, 2)
            .wait(Duration::from_millis(500))
            .acquire(),
    )
    .await
    .expect("task");
    assert!(
        matches!(second, Err(Error::Busy { .. })),
        "the live holder keeps its permit: {second:?}"
    );
    eprintln!("permit of a SIGKILLed holder freed after {freed_after:?} (lease {lease:?})");
    permit.release().await.expect("release");
}

/// A leader process is SIGKILLed while four candidates wait: another is elected within the
/// lease plus `bound`, and `leader()` names it.
pub async fn killing_the_leader_elects_another(
    lockers: &[Locker],
    url: &str,
    name: &str,
    lease: Duration,
    bound: Duration,
) {
    let leader = crate::support::Holder::start_kind(url, name, lease, true, "campaign");
    let before = lockers[0]
        .leader(name)
        .await
        .expect("leader()")
        .expect("the process leads");
    assert!(
        lockers.iter().all(|l| l.owner() != before),
        "the child process leads: {before}"
    );
    let mut candidates = Vec::new();
    for locker in lockers {
        let (locker, name) = (locker.clone(), name.to_owned());
        candidates.push(tokio::spawn(async move {
            let term = locker
                .campaign(&name)
                .wait(LONG_WAIT * 2)
                .await
                .expect("elected");
            let at = Instant::now();
            let who = locker.leader(&name).await.expect("leader()");
            assert_eq!(
                who.as_deref(),
                Some(locker.owner()),
                "leader() names the new leader"
            );
            term.release().await.expect("resign");
            at
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    leader.kill();
    let killed = Instant::now();
    let mut first = None;
    for c in candidates {
        let at = c.await.expect("candidate");
        first = Some(first.map_or(at, |f: Instant| f.min(at)));
    }
    let took = first.expect("elected").saturating_duration_since(killed);
    eprintln!("a new leader {took:?} after the old one was killed (lease {lease:?})");
    assert!(
        took < lease + bound,
        "a new leader after {took:?}; lease {lease:?} + {bound:?} promised"
    );
}

/// Permit and write fences strictly increase across kinds taken one after another, and a reader
/// carries the last write's fence.
pub async fn permit_and_write_fences_strictly_increase(locker: &Locker, key: &str) {
    let mut last = 0;
    for _ in 0..3 {
        for request in [locker.semaphore(key, 2), locker.write_lock(key)] {
            let g = request.wait(LONG_WAIT).await.expect("hold");
            let fence = g.fence().expect("a fence");
            assert!(fence > last, "{fence} after {last}");
            last = fence;
            g.release().await.expect("release");
        }
    }
    let r = locker.read_lock(key).wait(LONG_WAIT).await.expect("read");
    assert_eq!(
        r.fence(),
        Some(last),
        "a read carries the last write's fence"
    );
    r.release().await.expect("release");
}

/// Leases of 1 s renewed every 1/3 s, held for 3 s: each renewal goes through `extend` of its
/// kind; `b` (another Locker) finds every hold still there at the end.
pub async fn watchdog_renewals_keep_every_kind(a: &Locker, b: &Locker, key: &str) {
    let ttl = Duration::from_secs(1);
    let read = a
        .read_lock(key)
        .ttl(ttl)
        .watchdog(true)
        .wait(LONG_WAIT)
        .await
        .expect("read");
    let permit = a
        .semaphore(key, 1)
        .ttl(ttl)
        .watchdog(true)
        .wait(LONG_WAIT)
        .await
        .expect("permit");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(read.is_held() && permit.is_held(), "a renewal failed");
    let write = b.write_lock(key).wait(Duration::ZERO).await;
    assert!(matches!(write, Err(Error::Busy { .. })), "{write:?}");
    let second = b.semaphore(key, 1).wait(Duration::ZERO).await;
    assert!(matches!(second, Err(Error::Busy { .. })), "{second:?}");
    read.release().await.expect("release");
    let write = b
        .write_lock(key)
        .ttl(ttl)
        .watchdog(true)
        .wait(LONG_WAIT)
        .await
        .expect("write");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(write.is_held(), "a write renewal failed");
    let r = a.read_lock(key).wait(Duration::ZERO).await;
    assert!(matches!(r, Err(Error::Busy { .. })), "{r:?}");
    write.release().await.expect("release");
    permit.release().await.expect("release");
}

/// The scenarios every backend with read-write locks and semaphores runs, as `#[tokio::test]`s
/// of the calling module: `$lockers` is an `async fn(usize) -> Vec<Locker>` of that module
/// giving `n` Lockers as `n` processes would have them (own connections, distinct owners), and
/// `$prefix` starts the test keys. With `, then $leaves_nothing`, an `async fn(&str)` of the
/// module that asserts nothing of a key is left on the server, run after each scenario but the
/// election. Backend-specific tests (leases, kills, pauses) stay beside.
macro_rules! common_scenarios {
    ($lockers:ident, $prefix:literal) => {
        common_scenarios!($lockers, $prefix, then $crate::scenarios::nothing_to_check);
    };
    ($lockers:ident, $prefix:literal, then $leaves_nothing:path) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn readers_overlap_and_writers_exclude() {
            let key = $crate::support::unique(concat!($prefix, "-rw"));
            $crate::scenarios::readers_overlap_and_writers_exclude(&$lockers(4).await, &key).await;
            $leaves_nothing(&key).await;
        }

        #[tokio::test]
        async fn a_reader_sees_the_last_write_fence() {
            let key = $crate::support::unique(concat!($prefix, "-rwf"));
            $crate::scenarios::a_reader_sees_the_last_write_fence(&$lockers(1).await[0], &key)
                .await;
            $leaves_nothing(&key).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn a_waiting_writer_is_not_starved_by_new_readers() {
            let key = $crate::support::unique(concat!($prefix, "-starve"));
            $crate::scenarios::a_waiting_writer_is_not_starved_by_new_readers(
                &$lockers(3).await,
                &key,
            )
            .await;
            $leaves_nothing(&key).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn a_semaphore_of_3_admits_3() {
            let key = $crate::support::unique(concat!($prefix, "-sem"));
            $crate::scenarios::a_semaphore_of_3_admits_3(&$lockers(4).await, &key).await;
            $leaves_nothing(&key).await;
        }

        #[tokio::test]
        async fn a_permit_count_mismatch_is_an_error() {
            let key = $crate::support::unique(concat!($prefix, "-semx"));
            $crate::scenarios::a_permit_count_mismatch_is_an_error(&$lockers(1).await[0], &key)
                .await;
            $leaves_nothing(&key).await;
        }

        #[tokio::test]
        async fn kinds_have_their_own_key_spaces() {
            let key = $crate::support::unique(concat!($prefix, "-spaces"));
            $crate::scenarios::kinds_have_their_own_key_spaces(&$lockers(1).await[0], &key).await;
            $leaves_nothing(&key).await;
        }

        #[tokio::test]
        async fn permit_and_write_fences_strictly_increase() {
            let key = $crate::support::unique(concat!($prefix, "-fences"));
            $crate::scenarios::permit_and_write_fences_strictly_increase(&$lockers(1).await[0], &key)
                .await;
            $leaves_nothing(&key).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn watchdog_renewals_keep_every_kind() {
            let key = $crate::support::unique(concat!($prefix, "-renew"));
            let both = $lockers(2).await;
            $crate::scenarios::watchdog_renewals_keep_every_kind(&both[0], &both[1], &key).await;
            $leaves_nothing(&key).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn five_candidates_one_leader_at_a_time() {
            let key = $crate::support::unique(concat!($prefix, "-elect"));
            $crate::scenarios::five_candidates_one_leader_at_a_time(&$lockers(5).await, &key)
                .await;
        }
    };
}

/// For [`common_scenarios!`] on a backend without a leftovers check.
/// A writer process that died while waiting left its row, with the 12 s waiting lease it had
/// (`ghost_inserted`: the test wrote it as the acquire writes it): a reader is held back by the
/// row, then let in at its expiry (no release comes), and the expired row goes. SQL backends.
pub async fn a_vanished_waiting_writer_holds_readers_back_for_its_waiting_lease_only(
    locker: &Locker,
    key: &str,
    ghost_inserted: impl std::future::Future<Output = ()>,
) {
    ghost_inserted.await;
    let asked = Instant::now();
    let reader = locker
        .read_lock(key)
        .wait(Duration::from_secs(30))
        .await
        .expect("the reader goes once the row expires");
    let waited = asked.elapsed();
    eprintln!("a reader waited {waited:?} behind a vanished writer's row (waiting lease 12 s)");
    // 5 s of slack for a loaded machine.
    assert!(waited > Duration::from_millis(11500), "{waited:?}");
    assert!(waited < Duration::from_secs(17), "{waited:?}");
    reader.release().await.expect("release");
}

pub async fn nothing_to_check(_key: &str) {}
