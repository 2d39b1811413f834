//! Release notices on Redis: one pub/sub connection per Locker (RESP3 pushes), the channels it
//! listens on, and the local waiters each notice wakes (FIFO per key, the queue shared with the
//! other backends: [`Waiters`]). A notice names whose turn it is (a Locker's id, or `1` for
//! anyone); one naming another Locker wakes no one here.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::{PushInfo, PushKind, Value};

use super::connection::{manager_config, Conn, Target};
use super::{
    backend_err, RedisBackend, CONNECT_TIMEOUT, MAX_HANDOFFS_IN_A_ROW, NAME, RESPONSE_TIMEOUT,
};
use crate::backend::waiters::Waiters;
use crate::{Error, Result};

/// Local waiters per channel, in arrival order, and the Locker's id that notices name.
pub(super) struct Notices {
    /// The Locker's id: a notice naming another Locker's turn wakes no one here.
    id: Arc<str>,
    pub(super) waiters: Waiters<Vec<u8>>,
    /// The notice connection dropped since the last subscription check.
    disconnected: AtomicBool,
}

impl Notices {
    pub(super) fn new(id: Arc<str>) -> Self {
        Notices {
            id,
            waiters: Waiters::new(MAX_HANDOFFS_IN_A_ROW),
            disconnected: AtomicBool::new(false),
        }
    }
}

/// How often the notice connection is checked while waiters listen on it, and how long its
/// `PING` may take: a connection that stopped answering (a half-open socket, a server that
/// came back after the client's reconnects gave up) is replaced within about two seconds.
const NOTICE_CHECK: Duration = Duration::from_secs(1);

/// The pub/sub connection of one backend and what it listens on.
pub(super) struct NoticeConnection {
    /// RESP3 client for the same server, to replace a connection that stopped answering (a
    /// cluster's client replaces its node connections and subscriptions itself: `None`).
    client: Option<redis::Client>,
    /// Whether [`supervise`] watches it (single servers).
    supervised: bool,
    notices: Weak<Notices>,
    state: tokio::sync::Mutex<PubSub>,
}

async fn open_notice_connection(
    client: &redis::Client,
    notices: &Arc<Notices>,
) -> Result<ConnectionManager> {
    let notices = Arc::downgrade(notices);
    let config = manager_config()
        .set_automatic_resubscription()
        .set_push_sender(move |push: PushInfo| on_push(&notices, push));
    ConnectionManager::new_with_config(client.clone(), config)
        .await
        .map_err(backend_err)
}

/// Checks the notice connection while waiters listen on it; replaces one that does not answer
/// its `PING`, subscribes every queued channel again and wakes the front waiters (a notice may
/// have been missed meanwhile). Ends with the backend.
async fn supervise(connection: Weak<NoticeConnection>) {
    loop {
        tokio::time::sleep(NOTICE_CHECK).await;
        let Some(connection) = connection.upgrade() else {
            return;
        };
        let Some(notices) = connection.notices.upgrade() else {
            return;
        };
        if notices.waiters.is_empty() {
            continue;
        }
        let mut state = connection.state.lock().await;
        let mut con = state.con.clone();
        let ping = tokio::time::timeout(
            NOTICE_CHECK,
            redis::cmd("PING").query_async::<Value>(&mut con),
        )
        .await;
        if matches!(ping, Ok(Ok(_))) {
            continue;
        }
        tracing::debug!(target: "dlock", backend = NAME, "the notice connection does not answer; reconnecting");
        let Some(client) = &connection.client else {
            continue;
        };
        let Ok(Ok(fresh)) =
            tokio::time::timeout(CONNECT_TIMEOUT, open_notice_connection(client, &notices)).await
        else {
            continue; // the server is still away: try again at the next check
        };
        state.con = Conn::Single(fresh);
        state.subscribed.clear();
        let channels = notices.waiters.keys();
        for channel in channels {
            let subscribe = state.con.subscribe(&channel);
            if let Ok(Ok(())) = tokio::time::timeout(RESPONSE_TIMEOUT, subscribe).await {
                state.subscribed.insert(channel);
            }
        }
        drop(state);
        notices.waiters.wake_all_fronts();
    }
}

/// The pub/sub connection and the channels it listens on.
struct PubSub {
    con: Conn,
    subscribed: HashSet<Vec<u8>>,
}

/// Unsubscribes from `channel` if no local waiter wants it any more.
pub(super) async fn unsubscribe_if_idle(
    connection: Arc<NoticeConnection>,
    notices: Weak<Notices>,
    channel: Vec<u8>,
) {
    let mut pubsub = connection.state.lock().await;
    let idle = notices
        .upgrade()
        .is_some_and(|n| !n.waiters.has_entry(channel.as_slice()));
    if idle && pubsub.subscribed.remove(&channel) {
        if let Err(e) = pubsub.con.unsubscribe(&channel).await {
            tracing::debug!(target: "dlock", backend = NAME, error = %e, "unsubscribe failed");
        }
    }
}

/// Runs on the pub/sub connection's reader: must not block.
fn on_push(notices: &Weak<Notices>, push: PushInfo) -> std::result::Result<(), ()> {
    let Some(notices) = notices.upgrade() else {
        return Err(());
    };
    match push.kind {
        PushKind::Message | PushKind::SMessage => {
            // A notice names whose turn it is: a queued Locker's id, or `1` (anyone).
            if let [Value::BulkString(channel), Value::BulkString(turn), ..] = &push.data[..] {
                if turn == b"1" || turn.as_slice() == notices.id.as_bytes() {
                    notices.waiters.wake_front(channel.as_slice());
                }
            }
        }
        // A notice may have been lost while reconnecting: let every front waiter subscribe
        // again (the subscriptions may be gone) and retry.
        PushKind::Disconnection => {
            notices.disconnected.store(true, Ordering::Release);
            notices.waiters.wake_all_fronts();
        }
        _ => {}
    }
    Ok(())
}

impl RedisBackend {
    /// Makes sure the pub/sub connection listens on `channel` (for a waiter already queued).
    /// Called before every attempt of a queued waiter: after a disconnection it subscribes
    /// again before the attempt, so a release between the two is not missed.
    pub(super) async fn ensure_subscribed(&self, channel: &[u8]) -> Result<()> {
        let notices = self
            .pubsub
            .get_or_try_init(|| async {
                let (client, con) = match &self.target {
                    Target::Single(client) => {
                        let info = client.get_connection_info().clone();
                        let settings = info
                            .redis_settings()
                            .clone()
                            .set_protocol(redis::ProtocolVersion::RESP3);
                        let client = redis::Client::open(info.set_redis_settings(settings))
                            .map_err(backend_err)?;
                        let con = open_notice_connection(&client, &self.notices).await?;
                        (Some(client), Conn::Single(con))
                    }
                    Target::Cluster { builder, .. } => {
                        let notices = Arc::downgrade(&self.notices);
                        let client = builder()
                            .use_protocol(redis::ProtocolVersion::RESP3)
                            .push_sender(move |push: PushInfo| on_push(&notices, push))
                            .build()
                            .map_err(backend_err)?;
                        let con = tokio::time::timeout(
                            CONNECT_TIMEOUT * 2,
                            client.get_async_connection(),
                        )
                        .await
                        .map_err(|_| backend_err("the cluster notice connection timed out"))?
                        .map_err(backend_err)?;
                        (None, Conn::Cluster(con))
                    }
                };
                let notices = Arc::new(NoticeConnection {
                    supervised: client.is_some(),
                    client,
                    notices: Arc::downgrade(&self.notices),
                    state: tokio::sync::Mutex::new(PubSub {
                        con,
                        subscribed: HashSet::new(),
                    }),
                });
                if notices.supervised {
                    crate::runtime::spawn_background(supervise(Arc::downgrade(&notices)));
                }
                Ok::<_, Error>(notices)
            })
            .await?;
        // Checked and changed under the one mutex, so SUBSCRIBE and UNSUBSCRIBE of a channel
        // reach the server in the order the queue state asked for them.
        let mut pubsub = notices.state.lock().await;
        if self.notices.disconnected.swap(false, Ordering::AcqRel) {
            pubsub.subscribed.clear();
        }
        if !pubsub.subscribed.contains(channel) {
            // Bounded here too: a waiter without a deadline must not hold the mutex (which the
            // supervisor needs to replace a dead connection) on a socket that never answers.
            tokio::time::timeout(RESPONSE_TIMEOUT, pubsub.con.subscribe(channel))
                .await
                .map_err(|_| backend_err("SUBSCRIBE got no answer"))?
                .map_err(backend_err)?;
            pubsub.subscribed.insert(channel.to_vec());
        }
        Ok(())
    }
}
