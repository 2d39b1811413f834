//! The Lua scripts of the Redis backend: every state change of a lock is one of them, atomic on
//! the server (see the backend's module docs for why each step must be one script).

use std::sync::LazyLock;

use redis::{Cmd, FromRedisValue, Script};

/// `EVALSHA <script> <numkeys>`, for the caller to add keys and arguments to: one command built
/// in place, where `Script::key(..).arg(..)` first copies every argument into a vector of its
/// own and then into the command (the hot path's scripts; callgrind counted those copies).
///
/// Sized for the largest hot-path command (an acquire: the sha, three key names, a token with its
/// owner, four short arguments; about 250 bytes in 11 parts with a short host name): a buffer
/// that must grow is a `realloc` and a copy on every acquire (callgrind).
pub(crate) fn evalsha(script: &Script, numkeys: usize) -> Cmd {
    let mut cmd = Cmd::with_capacity(12, 320);
    cmd.arg("EVALSHA").arg(script.get_hash()).arg(numkeys);
    cmd
}

/// Runs an [`evalsha`] command of `script`; a server that does not know the script yet
/// (`NOSCRIPT`: a restart, a failover, a new cluster node) is sent it and asked again, as
/// `Script::invoke_async` does.
pub(crate) async fn run<T: FromRedisValue>(
    con: &mut (impl redis::aio::ConnectionLike + Send),
    script: &Script,
    cmd: &Cmd,
) -> redis::RedisResult<T> {
    match cmd.query_async(con).await {
        Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
            script.load_async(con).await?;
            cmd.query_async(con).await
        }
        done => done,
    }
}

/// How long a Locker's place in a key's queue of waiting Lockers lasts unless renewed (ms). A
/// waiting Locker renews it at least every second (each attempt of its front waiter does), so a
/// Locker that died or froze while queued holds a free key back for at most this long.
pub(super) const QUEUE_MARK_MS: u64 = 3_000;

/// Lua helpers over a key's queue of waiting Lockers (fair waiting across Lockers: see the
/// module docs, "Waiting"): a list of entries `<mark end, server ms>:<locker id>` in arrival
/// order. `queue_now()` is the server's clock in ms; `queue_live(q, now)` returns the live
/// entries in order as `{id, mark end, entry}`, dropping ended marks; `queue_leave(q, live,
/// me)` takes `me` out; `queue_mark(q, live, me, now)` renews `me`'s place, or adds it at the
/// back.
const QUEUE: &str = r"
local function queue_now()
  local c = redis.call('TIME')
  return tonumber(c[1]) * 1000 + math.floor(tonumber(c[2]) / 1000)
end
local function queue_live(q, now)
  local live = {}
  for _, e in ipairs(redis.call('LRANGE', q, 0, -1)) do
    local sep = string.find(e, ':', 1, true)
    local ends = sep and tonumber(string.sub(e, 1, sep - 1))
    if ends and ends > now then
      live[#live + 1] = {string.sub(e, sep + 1), ends, e}
    else
      redis.call('LREM', q, 1, e)
    end
  end
  return live
end
local function queue_leave(q, live, me)
  for i, e in ipairs(live) do
    if e[1] == me then
      redis.call('LREM', q, 1, e[3])
      table.remove(live, i)
      return true
    end
  end
  return false
end
local function queue_mark(q, live, me, now)
  local entry = string.format('%d', now + QUEUE_MARK_MS) .. ':' .. me
  local at = nil
  for i, e in ipairs(live) do
    if e[1] == me then at = i end
  end
  if at then
    redis.call('LSET', q, at - 1, entry)
  else
    redis.call('RPUSH', q, entry)
  end
  redis.call('PEXPIRE', q, QUEUE_MARK_MS)
end";

/// [`QUEUE`] with its mark length filled in.
fn queue_helpers() -> String {
    QUEUE.replace("QUEUE_MARK_MS", &QUEUE_MARK_MS.to_string())
}

/// Token-checked release. KEYS: lock, queue of waiting Lockers. ARGV: token, notice channel,
/// this Locker's id. `DEL` if the lock holds the token, then a notice on the channel with
/// `publish` (`PUBLISH`, or `SPUBLISH` in a cluster) naming whose turn it is: the first queued
/// Locker's id, or `1` (anyone) when none is queued. This Locker's own place, if any, goes (it
/// has no waiter left for the key when it releases this way). Returns 1, or 0 when not held.
fn release_script(publish: &str) -> Script {
    Script::new(&format!(
        r"if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
redis.call('DEL', KEYS[1])
local turn = '1'
if redis.call('EXISTS', KEYS[2]) == 1 then
  {queue}
  local live = queue_live(KEYS[2], queue_now())
  queue_leave(KEYS[2], live, ARGV[3])
  if live[1] then turn = live[1][1] end
end
redis.call('{publish}', ARGV[2], turn)
return 1",
        queue = queue_helpers()
    ))
}

pub(crate) static RELEASE: LazyLock<Script> = LazyLock::new(|| release_script("PUBLISH"));

/// [`RELEASE`] for a Redis Cluster: the notice is sharded (`SPUBLISH`), published on the node
/// that holds the key (the channel shares the key's hash tag) to that shard's subscribers.
pub(crate) static RELEASE_SHARDED: LazyLock<Script> = LazyLock::new(|| release_script("SPUBLISH"));

/// A Locker whose last local waiter for a key gave up leaves the key's queue. KEYS: lock,
/// queue. ARGV: the Locker's id, notice channel, `PUBLISH`|`SPUBLISH`. When it was first in line
/// and the key is free, the next Locker is told it is its turn. Returns 1 when it was queued.
pub(super) static LEAVE_QUEUE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r"if redis.call('EXISTS', KEYS[2]) == 0 then
  return 0
end
{queue}
local live = queue_live(KEYS[2], queue_now())
local was_first = live[1] ~= nil and live[1][1] == ARGV[1]
if not queue_leave(KEYS[2], live, ARGV[1]) then
  return 0
end
if was_first and live[1] and redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call(ARGV[3], ARGV[2], live[1][1])
end
return 1",
        queue = queue_helpers()
    ))
});

/// The fence rule every grant follows: `max(counter + 1, server time in µs)`, stored back as the
/// counter (see the module docs, "Fences"). The scripts compare `f` with the highest fence the
/// client has seen and refuse a fence not above it (each says how it answers then).
const FENCE_RULE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local stored = redis.call('GET', KEYS[2])
local f = math.max(tonumber(stored or '0') + 1, now)";

/// [`FENCE_RULE`] with the counter in `counter` (a Lua expression such as `KEYS[4]`), for the
/// scripts of read-write locks and semaphores: it leaves `f` (the fence) and `stored` (the
/// counter before, `false` when missing) in scope.
pub(super) fn fence_rule(counter: &str) -> String {
    FENCE_RULE.replace("KEYS[2]", counter)
}

/// Acquire. KEYS: lock, fence counter, queue of waiting Lockers. ARGV: token, ttl ms, highest
/// fence seen, this Locker's id, `1` when the acquire waits (a lost attempt then takes or
/// renews the Locker's place in the queue) or `0`.
///
/// While other Lockers are queued, the key goes only to the first of them (also when free: no
/// barging past a queue); otherwise `SET lock token NX PX ttl`, and when that wins, the fence by
/// [`FENCE_RULE`] and the Locker's place in the queue, if any, is given up.
///
/// Answers one integer (an array reply costs the client a parse and a conversion per element,
/// most of its per-cycle excess over the floor in callgrind; see [`AcquireReply`]):
/// `2 * (fence + 1) + counter_was_missing` when won, `-(ms + 1)` when busy (`ms`: the holder's
/// lease left, or the first queued Locker's place while the key is free), `0` when busy for an
/// unknown time, and the error `DLOCKFENCE <fence>` when the fence would not be above `ARGV[3]`
/// (the lock is then given back). A key already holding `ARGV[1]` (this acquisition's own
/// token: an unannounced hand-off, or an earlier try of this acquire whose answer was lost)
/// counts as won: its lease is set afresh and the fence it drew returned. Lua numbers are
/// doubles, exact below 2^53: the encoding is exact while fences stay below 2^52 (a fence is
/// about the server clock in µs, which reaches 2^52 in 2112).
pub(super) static ACQUIRE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r"local queued = redis.call('EXISTS', KEYS[3]) == 1
{queue}
local now_ms, live
if queued then
  now_ms = queue_now()
  live = queue_live(KEYS[3], now_ms)
  local first = live[1]
  if first and first[1] ~= ARGV[4] and redis.call('GET', KEYS[1]) ~= ARGV[1] then
    if ARGV[5] == '1' then queue_mark(KEYS[3], live, ARGV[4], now_ms) end
    local left = redis.call('PTTL', KEYS[1])
    if left < 0 then left = first[2] - now_ms end
    return -(left + 1)
  end
end
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  if redis.call('GET', KEYS[1]) == ARGV[1] then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    if queued then queue_leave(KEYS[3], live, ARGV[4]) end
    return 2 * (tonumber(redis.call('GET', KEYS[2]) or '0') + 1)
  end
  if ARGV[5] == '1' then
    if not queued then
      now_ms = queue_now()
      live = {{}}
    end
    queue_mark(KEYS[3], live, ARGV[4], now_ms)
  end
  local left = redis.call('PTTL', KEYS[1])
  if left < 0 then return 0 end
  return -(left + 1)
end
if queued then queue_leave(KEYS[3], live, ARGV[4]) end
{FENCE_RULE}
if f <= tonumber(ARGV[3]) then
  redis.call('DEL', KEYS[1])
  return redis.error_reply('DLOCKFENCE ' .. string.format('%d', f))
end
redis.call('SET', KEYS[2], string.format('%d', f))
if stored then return 2 * (f + 1) end
return 2 * (f + 1) + 1",
        queue = queue_helpers()
    ))
});

/// What [`ACQUIRE`] answered (see its encoding there).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum AcquireReply {
    /// Held by another token, or another Locker's turn; how long that lasts when known (ms).
    Busy { left_ms: Option<u64> },
    /// Won, with this fence; `counter_was_missing` when the key's fence counter was not there.
    Won {
        fence: u64,
        counter_was_missing: bool,
    },
}

impl AcquireReply {
    pub(super) fn decode(reply: i64) -> Self {
        match reply {
            0 => AcquireReply::Busy { left_ms: None },
            r if r < 0 => AcquireReply::Busy {
                left_ms: Some(r.unsigned_abs() - 1),
            },
            r => AcquireReply::Won {
                fence: (r / 2 - 1).unsigned_abs(),
                counter_was_missing: r % 2 == 1,
            },
        }
    }
}

/// The error code [`ACQUIRE`] answers when the fence would not be above the highest seen.
pub(super) const FENCE_REFUSED: &str = "DLOCKFENCE";

/// Gives back a grant made during a restart delay: deletes the lock if `ARGV[1]` holds it, and
/// the fence counter if it still holds the fence that grant drew (`ARGV[2]`).
pub(super) static GIVE_BACK: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
redis.call('DEL', KEYS[1])
if redis.call('GET', KEYS[2]) == ARGV[2] then
  redis.call('DEL', KEYS[2])
end
return 1",
    )
});

/// Release straight to a local waiter. KEYS: lock, fence counter, queue. ARGV: old token, new
/// token, new ttl ms, this Locker's id, notice channel, `PUBLISH`|`SPUBLISH`.
///
/// When another Locker is queued for the key, it is its turn: the lock is released, this
/// Locker (it still has waiters) goes to the back of the queue and the notice names the Locker
/// now first; returns -1. Otherwise the lock goes from `old` to `new` token with a fresh lease
/// and a fence by [`FENCE_RULE`], without ever being free (no notice, no second round trip);
/// returns the fence. Returns 0 when `old` no longer holds the lock.
pub(super) static HANDOFF: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r"if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
{queue}
if redis.call('EXISTS', KEYS[3]) == 1 then
  local now_ms = queue_now()
  local live = queue_live(KEYS[3], now_ms)
  queue_leave(KEYS[3], live, ARGV[4])
  if live[1] then
    redis.call('DEL', KEYS[1])
    queue_mark(KEYS[3], live, ARGV[4], now_ms)
    redis.call(ARGV[6], ARGV[5], live[1][1])
    return -1
  end
end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
{FENCE_RULE}
redis.call('SET', KEYS[2], string.format('%d', f))
return f",
        queue = queue_helpers()
    ))
});

pub(crate) static EXTEND: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0",
    )
});

#[cfg(test)]
mod tests {
    use super::AcquireReply;

    #[test]
    fn acquire_replies_decode() {
        let fence = 1_764_482_000_000_000_u64; // a fence drawn in 2025 (µs)
        let won = 2 * (fence as i64 + 1);
        assert_eq!(
            AcquireReply::decode(won + 1),
            AcquireReply::Won {
                fence,
                counter_was_missing: true
            }
        );
        assert_eq!(
            AcquireReply::decode(won),
            AcquireReply::Won {
                fence,
                counter_was_missing: false
            }
        );
        assert_eq!(
            AcquireReply::decode(0),
            AcquireReply::Busy { left_ms: None }
        );
        assert_eq!(
            AcquireReply::decode(-1),
            AcquireReply::Busy { left_ms: Some(0) }
        );
        assert_eq!(
            AcquireReply::decode(-30_001),
            AcquireReply::Busy {
                left_ms: Some(30_000)
            }
        );
    }
}
