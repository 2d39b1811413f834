//! ZooKeeper: create ephemeral sequential + get_children + delete (the floor) next to dlock;
//! and wake-ups per release with many waiters.

use std::sync::Arc;
use std::time::Duration;

use zookeeper_client as zk;

use crate::{compare, Op, Res};

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// `host:port[,host:port]` and the root path of a `zookeeper://` URL.
fn split(url: &str) -> (String, String) {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let rest = rest.split('?').next().unwrap_or(rest);
    match rest.find('/') {
        Some(i) => (rest[..i].to_string(), rest[i..].to_string()),
        None => (rest.to_string(), "/dlock".to_string()),
    }
}

pub async fn uncontended(url: &str, tasks: usize, per_task: usize, rounds: usize) -> Res {
    let run = uuid::Uuid::new_v4().simple().to_string();
    let (hosts, root) = split(url);
    let locker = dlock::Locker::connect(url)
        .await
        .map_err(|e| format!("ZooKeeper at {url}: {e} (start it with `scripts/services.sh up`)"))?;
    let client = zk::Client::connect(&hosts).await.map_err(err)?;
    let floor_root = format!("{root}-floor-{run}");
    let persistent = zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all());
    client
        .create(&floor_root, &[], &persistent)
        .await
        .map_err(err)?;
    for t in 0..tasks {
        client
            .create(&format!("{floor_root}/k{t}"), &[], &persistent)
            .await
            .map_err(err)?;
    }
    let floor: Op = {
        let (client, floor_root) = (client.clone(), floor_root.clone());
        Arc::new(move |t| {
            let (client, dir) = (client.clone(), format!("{floor_root}/k{t}"));
            Box::pin(async move {
                let mode = zk::CreateMode::EphemeralSequential.with_acls(zk::Acls::anyone_all());
                let (_, seq) = client
                    .create(&format!("{dir}/n-"), &[], &mode)
                    .await
                    .map_err(err)?;
                let children = client.list_children(&dir).await.map_err(err)?;
                let mine = format!("n-{seq}");
                if children.len() != 1 || children[0] != mine {
                    return Err(format!("floor: uncontended key busy: {children:?}"));
                }
                client
                    .delete(&format!("{dir}/{mine}"), None)
                    .await
                    .map_err(err)
            })
        })
    };
    let dlock_op: Op = {
        let run = run.clone();
        Arc::new(move |t| {
            let (locker, key) = (locker.clone(), format!("bench:{run}:{t}"));
            Box::pin(async move {
                let guard = locker.lock(key).wait(Duration::ZERO).await.map_err(err)?;
                guard.release().await.map_err(err)
            })
        })
    };
    let result = compare(
        &format!("ZooKeeper uncontended lock+release, {tasks} task(s)"),
        vec![
            (
                "floor (create EPHEMERAL_SEQUENTIAL + get_children + delete)",
                floor,
            ),
            ("dlock zookeeper", dlock_op),
        ],
        "floor (create EPHEMERAL_SEQUENTIAL + get_children + delete)",
        tasks,
        per_task,
        rounds,
    )
    .await;
    for t in 0..tasks {
        let _ = client.delete(&format!("{floor_root}/k{t}"), None).await;
    }
    client.delete(&floor_root, None).await.map_err(err)?;
    result
}

/// One holder, `n` waiters queued behind it on one key; each release must wake exactly one.
pub async fn waiters(url: &str, n: usize) -> Res {
    let key = format!("bench:waiters:{}", uuid::Uuid::new_v4().simple());
    let backend = dlock::backend::zookeeper::ZookeeperBackend::connect(url)
        .await
        .map_err(err)?;
    let locker = dlock::Locker::from_backend(backend.clone());
    let holder = locker.lock(key.as_str()).await.map_err(err)?;
    let counter = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut joins = Vec::new();
    for _ in 0..n {
        let (locker, key, counter) = (locker.clone(), key.clone(), counter.clone());
        joins.push(tokio::spawn(async move {
            let g = locker
                .lock(key)
                .wait(Duration::from_secs(60))
                .await
                .map_err(err)?;
            let seen = counter.load(std::sync::atomic::Ordering::SeqCst);
            counter.store(seen + 1, std::sync::atomic::Ordering::SeqCst);
            g.release().await.map_err(err)
        }));
    }
    // Let every waiter queue behind the holder before the first release.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = backend.watch_wakeups();
    let start = std::time::Instant::now();
    holder.release().await.map_err(err)?;
    for j in joins {
        j.await.map_err(err)??;
    }
    let elapsed = start.elapsed();
    let wakeups = backend.watch_wakeups() - before;
    if counter.load(std::sync::atomic::Ordering::SeqCst) != n as u64 {
        return Err("zookeeper waiters: counter not exact".into());
    }
    println!(
        "\n## ZooKeeper, {n} waiters on one key\n\n{n} hand-offs in {elapsed:?} ({:.0}/s); \
         watch wake-ups {wakeups} = {:.2} per release (a herd would be ~{:.0})",
        n as f64 / elapsed.as_secs_f64(),
        wakeups as f64 / n as f64,
        n as f64 / 2.0
    );
    Ok(())
}
