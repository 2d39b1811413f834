//! Redlock over 3 private `redis-server`s (started here on free ports, stopped by pid): dlock
//! against the Rust peer `rslock` over the same masters. Neither fences.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use crate::{compare, Op, Res};

/// A `redis-server` on a free port, killed on drop.
struct Node {
    port: u16,
    child: Child,
}

impl Node {
    fn start() -> Result<Node, String> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| e.to_string())?
            .port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .map_err(|e| format!("redis-server: {e} (install it with `scripts/services.sh up`)"))?;
        let started = std::time::Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if started.elapsed() > Duration::from_secs(10) {
                return Err(format!("redis-server on {port} did not start"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Node { port, child })
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Three private masters, stopped when dropped.
pub struct Masters {
    nodes: Vec<Node>,
}

impl Masters {
    pub fn start() -> Result<Masters, String> {
        let nodes = (0..3)
            .map(|_| Node::start())
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Masters { nodes })
    }

    /// `host:port` of each master.
    pub fn hosts(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect()
    }

    /// The `redlock://` URL over all of them.
    pub fn url(&self) -> String {
        format!("redlock://{}", self.hosts().join(","))
    }
}

pub async fn uncontended(tasks: usize, per_task: usize, rounds: usize) -> Res {
    let masters = Masters::start()?;
    let hosts = masters.hosts();
    let run = uuid::Uuid::new_v4().simple().to_string();
    let locker = dlock::Locker::connect(&masters.url())
        .await
        .map_err(|e| e.to_string())?;
    let dlock_op = crate::dlock_cycle(locker, &run);
    let rslock_op: Op = {
        let urls: Vec<String> = hosts.iter().map(|h| format!("redis://{h}")).collect();
        let manager = Arc::new(rslock::LockManager::new(urls));
        let run = run.clone();
        Arc::new(move |t| {
            let (manager, key) = (manager.clone(), format!("bench:{run}:rslock:{t}"));
            Box::pin(async move {
                let lock = manager
                    .lock(key.as_bytes(), Duration::from_secs(30))
                    .await
                    .map_err(|e| format!("rslock: {e:?}"))?;
                manager.unlock(&lock).await;
                Ok(())
            })
        })
    };
    compare(
        &format!("Redlock over 3 local masters, {tasks} task(s) on {tasks} key(s)"),
        vec![("rslock 0.10", rslock_op), ("dlock redlock", dlock_op)],
        "rslock 0.10",
        tasks,
        per_task,
        rounds,
    )
    .await?;
    drop(masters);
    Ok(())
}
