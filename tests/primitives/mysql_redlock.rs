//! MySQL/MariaDB and Redlock: no read-write locks or semaphores (each answers
//! `Error::Unsupported` naming the backends that have them), but leader election, a mutex, works.
//!
//! Why not: MySQL's lock table has one row per key, so shared holds would need a second table and
//! a server-side queue it does not have (its fair waiting borrows `GET_LOCK`, which is exclusive);
//! Redlock's quorum cannot count holders safely (a permit counted on a majority of nodes can be
//! counted again after a node restarts empty), so a semaphore there would over-admit.

use std::time::Duration;

use dlock::Locker;

use crate::scenarios;
use crate::support::{connect, mysql_url, unique, RedisServer};

async fn mysql_lockers(n: usize) -> Vec<Locker> {
    let mut lockers = Vec::new();
    for i in 0..n {
        lockers.push(
            connect("MariaDB", &mysql_url())
                .await
                .with_owner(format!("mysql-{i}")),
        );
    }
    lockers
}

fn redlock_url(servers: &[RedisServer]) -> String {
    let hosts: Vec<String> = servers
        .iter()
        .map(|s| format!("127.0.0.1:{}", s.port))
        .collect();
    format!("redlock://{}", hosts.join(","))
}

#[tokio::test]
async fn mysql_has_no_read_write_locks_or_semaphores() {
    let locker = connect("MariaDB", &mysql_url()).await;
    scenarios::unsupported_kinds_say_where_to_go(&locker, &unique("mysql-unsupported")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_elects_one_leader_at_a_time() {
    scenarios::five_candidates_one_leader_at_a_time(
        &mysql_lockers(5).await,
        &unique("mysql-elect"),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_replaces_a_killed_leader() {
    let lockers = mysql_lockers(4).await;
    let lease = Duration::from_secs(2);
    // The lease runs out on the server; waiters poll the row (with GET_LOCK turns) at most every
    // 2 s, so the bound allows that plus a loaded machine.
    scenarios::killing_the_leader_elects_another(
        &lockers,
        &mysql_url(),
        &unique("mysql-kill"),
        lease,
        Duration::from_secs(15),
    )
    .await;
}

#[tokio::test]
async fn redlock_has_no_read_write_locks_or_semaphores() {
    let servers: Vec<RedisServer> = (0..3).map(|_| RedisServer::start()).collect();
    let locker = connect("redlock", &redlock_url(&servers)).await;
    scenarios::unsupported_kinds_say_where_to_go(&locker, &unique("redlock-unsupported")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redlock_elects_one_leader_at_a_time() {
    let servers: Vec<RedisServer> = (0..3).map(|_| RedisServer::start()).collect();
    let mut lockers = Vec::new();
    for i in 0..5 {
        lockers.push(
            connect("redlock", &redlock_url(&servers))
                .await
                .with_owner(format!("redlock-{i}")),
        );
    }
    scenarios::five_candidates_one_leader_at_a_time(&lockers, &unique("redlock-elect")).await;
}
