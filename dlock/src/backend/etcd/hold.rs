//! A hold's key after its creation: its lease kept alive while it waits in the queue, renewed
//! (or moved to a longer lease) by the watchdog's `extend`, and its release; the same for
//! every kind (mutex, read, write, permit), found by the key's path.

use std::time::{Duration, Instant};

use etcd_client::{Compare, CompareOp, GetOptions, PutOptions, Txn, TxnOp};

use super::{backend_err, lease_secs, EtcdBackend, Held, NAME, REQUEST_TIMEOUT};
use crate::Result;

/// The shortest pause between keep-alives of a queued key's lease.
const MIN_RENEW: Duration = Duration::from_millis(500);

impl Held {
    /// Every lease of this hold: its key's, then those of earlier tries of its acquire.
    pub(super) fn leases(&self) -> impl Iterator<Item = i64> + '_ {
        std::iter::once(self.lease).chain(self.earlier.iter().copied().filter(|&l| l != self.lease))
    }
}

impl EtcdBackend {
    /// Grants the lease of `token`'s key `path` (`ttl`, in whole seconds) and records the hold
    /// before its key is put, so a cancelled acquire's release finds and revokes it; the leases
    /// of earlier tries of this acquire stay recorded (see [`Held::earlier`]). Returns the hold
    /// and when the grant was sent (the lease counts from there).
    pub(super) async fn new_lease(
        &self,
        path: &[u8],
        ttl: Duration,
        token: &str,
    ) -> Result<(Held, Instant)> {
        let mut client = self.client.clone();
        let sent = Instant::now();
        let lease = client
            .lease_grant(lease_secs(ttl), None)
            .await
            .map_err(|e| self.err(e))?;
        let mut held = self.held();
        let earlier = held
            .get(token)
            .filter(|h| h.path == path)
            .map(|h| h.leases().collect())
            .unwrap_or_default();
        let new = Held {
            path: path.to_vec(),
            lease: lease.id(),
            ttl_s: lease.ttl(),
            earlier,
        };
        held.insert(token.to_owned(), new.clone());
        Ok((new, sent))
    }

    /// Takes over `token`'s key made by an earlier try of this acquire, on that try's `lease`
    /// (`held` is this try's, whose lease is revoked): renews `lease` at once, since it was last
    /// renewed before this try began (up to a third of its length earlier, more after a slow
    /// failure), and returns the hold and when that renewal was sent (the lease counts from
    /// there, not from this try's start).
    pub(super) async fn adopt(
        &self,
        held: Held,
        lease: i64,
        token: &str,
    ) -> Result<(Held, Instant)> {
        let mut client = self.client.clone();
        let _ = client.lease_revoke(held.lease).await;
        let held = Held {
            lease,
            earlier: held.earlier.into_iter().filter(|&l| l != lease).collect(),
            ..held
        };
        self.held().insert(token.to_owned(), held.clone());
        let sent = Instant::now();
        let answer = tokio::time::timeout(REQUEST_TIMEOUT, client.lease_keep_alive(lease)).await;
        match answer {
            Ok(Ok(_)) => Ok((held, sent)),
            Ok(Err(etcd_client::Error::LeaseKeepAliveError(why)))
                if why.contains("lease not found") =>
            {
                Err(backend_err(
                    "the lock key of this token lost its lease while being made",
                ))
            }
            Ok(Err(e)) => Err(self.err(e)),
            Err(_) => Err(backend_err(
                "no answer to the keep-alive of the lock key's lease within 5s",
            )),
        }
    }

    /// Forgets `token`'s hold after its acquire found its key gone, revoking the leases of
    /// earlier tries (best effort), on which a late put could still make the key.
    pub(super) async fn forget(&self, token: &str) {
        let Some(held) = self.held().remove(token) else {
            return;
        };
        let mut client = self.client.clone();
        for lease in held.leases() {
            let _ = client.lease_revoke(lease).await;
        }
    }

    /// Keeps the lease of a queued key (one waiting for its turn) alive: nobody else renews
    /// it before the lock is granted (the Locker's watchdog starts then), and a wait may be
    /// longer than the lease. A keep-alive every third of the lease's length (at least
    /// [`MIN_RENEW`] apart), counted from `lease_from`, the moment the last renewal the server
    /// answered was sent, which each such renewal moves on (the grant's lease is counted from
    /// it). The schedule survives the caller's wake-ups, since it is `lease_from`'s, not a
    /// fresh timer's. A failed keep-alive is tried again after [`MIN_RENEW`]; returns only when
    /// the server says the lease is gone (expired or revoked), so the caller looks again and
    /// finds its key gone.
    pub(super) async fn keep_queued(&self, held: &Held, lease_from: &mut Instant) {
        let every =
            (Duration::from_secs(u64::try_from(held.ttl_s).unwrap_or(1)) / 3).max(MIN_RENEW);
        let mut client = self.client.clone();
        let mut next = *lease_from + every;
        loop {
            tokio::time::sleep_until(next.into()).await;
            let sent = Instant::now();
            let answer =
                tokio::time::timeout(REQUEST_TIMEOUT, client.lease_keep_alive(held.lease)).await;
            let failure = match answer {
                Ok(Ok(_)) => {
                    *lease_from = sent;
                    next = sent + every;
                    continue;
                }
                Ok(Err(etcd_client::Error::LeaseKeepAliveError(why)))
                    if why.contains("lease not found") =>
                {
                    return;
                }
                Ok(Err(e)) => e.to_string(),
                Err(_) => "no answer".to_owned(),
            };
            tracing::debug!(target: "dlock", backend = NAME, error = %failure, "keeping a queued key's lease alive failed; trying again");
            next = Instant::now() + MIN_RENEW;
        }
    }

    /// Release of `token`'s hold whose key is `path` (any kind).
    pub(super) async fn release_inner(&self, path: &[u8], token: &str) -> Result<bool> {
        let known = {
            let mut held = self.held();
            match held.get(token) {
                Some(h) if h.path == path => held.remove(token),
                _ => None,
            }
        };
        match known {
            Some(held) => self.remove(&held).await,
            None => {
                // Not known here (an acquire cancelled mid-way): delete by name.
                let mut client = self.client.clone();
                let deleted = client.delete(path, None).await.map_err(|e| self.err(e))?;
                Ok(deleted.deleted() > 0)
            }
        }
    }

    /// Renewal of `token`'s hold whose key is `path` (any kind).
    pub(super) async fn extend_inner(
        &self,
        path: &[u8],
        token: &str,
        ttl: Duration,
    ) -> Result<bool> {
        let mut client = self.client.clone();
        let known = self.held().get(token).filter(|h| h.path == path).cloned();
        let held = match known {
            Some(held) => held,
            // Not known here (this Locker reconnected since the acquire): the key and its
            // lease are on the server; find them.
            None => {
                let found = client.get(path, None).await.map_err(|e| self.err(e))?;
                let Some(kv) = found.kvs().first() else {
                    return Ok(false);
                };
                let lease = kv.lease();
                let granted = client
                    .lease_time_to_live(lease, None)
                    .await
                    .map_err(|e| self.err(e))?
                    .granted_ttl();
                let held = Held {
                    path: path.to_vec(),
                    lease,
                    ttl_s: granted,
                    earlier: Vec::new(),
                };
                self.held().insert(token.to_owned(), held.clone());
                held
            }
        };
        if lease_secs(ttl) <= held.ttl_s {
            // Renew to the granted length (never longer than the client records: the
            // lease task records `ttl`, at most the granted length).
            // Opening the keep-alive stream sends one keep-alive and reads its answer: that is
            // the renewal. The client reports an answer of `TTL 0` (the lease expired, or was
            // revoked by a force-release) as this error: the lock is lost, not unreachable.
            let answer = tokio::time::timeout(REQUEST_TIMEOUT, client.lease_keep_alive(held.lease));
            match answer.await.unwrap_or_else(|_| {
                Err(etcd_client::Error::LeaseKeepAliveError("no answer".into()))
            }) {
                Ok(_) => {}
                Err(etcd_client::Error::LeaseKeepAliveError(why))
                    if why.contains("lease not found") =>
                {
                    return Ok(false)
                }
                Err(e) => return Err(self.err(e)),
            }
            // The lease lives; the key must too (it may have been deleted by hand).
            let there = client
                .get(held.path.clone(), Some(GetOptions::new().with_count_only()))
                .await
                .map_err(|e| self.err(e))?;
            return Ok(there.count() > 0);
        }
        // Longer than the lease: move the key to a new lease of that length (an update:
        // its create revision, the fence, stays), if it is still ours.
        let lease = client
            .lease_grant(lease_secs(ttl), None)
            .await
            .map_err(|e| self.err(e))?;
        let txn = Txn::new()
            .when([Compare::lease(
                held.path.clone(),
                CompareOp::Equal,
                held.lease,
            )])
            .and_then([TxnOp::put(
                held.path.clone(),
                Vec::new(),
                // The value (the owner) stays.
                Some(PutOptions::new().with_lease(lease.id()).with_ignore_value()),
            )]);
        let moved = client.txn(txn).await.map_err(|e| self.err(e))?.succeeded();
        if !moved {
            let _ = client.lease_revoke(lease.id()).await;
            return Ok(false);
        }
        let _ = client.lease_revoke(held.lease).await;
        self.held().insert(
            token.to_owned(),
            Held {
                lease: lease.id(),
                ttl_s: lease.ttl(),
                ..held
            },
        );
        Ok(true)
    }
}
