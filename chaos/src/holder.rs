//! The holder sub-mode: one process that loops acquire → read → pause → write → release on one
//! key, writing through the fenced register, and records every step in its history file.
//!
//! Why a process of its own: the faults include SIGSTOP of one holder past its lease, which
//! needs a holder that can be frozen alone, with its own connection, its own timers and its own
//! view of time (a task in a shared process would be frozen with all the others). The suite
//! starts this same binary as `dlock-chaos holder ...`.
//!
//! Why the holder is "naive": it writes after its pause without asking whether its lease is
//! still held (it records `guard.is_held()` with the write, for the reader). A holder that
//! checked first would still race (the lease can end between the check and the write, which is
//! what a process pause does), and the suite exists to show that the fence, not the check,
//! keeps the register safe.
//!
//! Errors are expected here (the faults cause them): every one is recorded as an event, and the
//! loop goes on. The process ends when the suite creates the `stop` file in the scenario
//! directory, or when its parent (the suite) is gone.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::history::{now_us, Event, HistoryWriter, Kind};
use crate::register::FencedRegister;

/// What one holder process does: parsed from its command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HolderConfig {
    /// The lock service URL.
    pub url: String,
    /// The one key every holder locks.
    pub key: String,
    /// This holder's number (1-based).
    pub id: u32,
    /// The scenario directory: history file, register, stop file.
    pub dir: PathBuf,
    /// The fixed lease of each acquisition.
    pub ttl: Duration,
    /// How long an acquire waits before giving up (`Error::Busy`).
    pub wait: Duration,
    /// The pause between the read and the write (the "work" inside the critical section).
    pub pause: Duration,
}

impl HolderConfig {
    /// The arguments after `holder` that [`HolderConfig::parse`] reads back.
    pub fn to_args(&self) -> Vec<String> {
        vec![
            self.url.clone(),
            self.key.clone(),
            self.id.to_string(),
            self.dir.display().to_string(),
            self.ttl.as_millis().to_string(),
            self.wait.as_millis().to_string(),
            self.pause.as_millis().to_string(),
        ]
    }

    /// Parses `<url> <key> <id> <dir> <ttl_ms> <wait_ms> <pause_ms>`.
    ///
    /// # Errors
    /// A usage message.
    pub fn parse(args: &[String]) -> Result<HolderConfig, String> {
        let usage =
            "usage: dlock-chaos holder <url> <key> <id> <dir> <ttl_ms> <wait_ms> <pause_ms>";
        let [url, key, id, dir, ttl, wait, pause] = args else {
            return Err(usage.to_owned());
        };
        let ms = |s: &str| {
            s.parse::<u64>()
                .map(Duration::from_millis)
                .map_err(|e| format!("{usage}: {s:?}: {e}"))
        };
        Ok(HolderConfig {
            url: url.clone(),
            key: key.clone(),
            id: id.parse().map_err(|e| format!("{usage}: id {id:?}: {e}"))?,
            dir: PathBuf::from(dir),
            ttl: ms(ttl)?,
            wait: ms(wait)?,
            pause: ms(pause)?,
        })
    }

    /// This holder's history file.
    pub fn history_path(&self) -> PathBuf {
        history_path(&self.dir, self.id)
    }
}

/// The history file of holder `id` in scenario directory `dir`.
pub fn history_path(dir: &Path, id: u32) -> PathBuf {
    dir.join(format!("holder-{id}.history"))
}

/// The file whose existence tells the holders of a scenario to stop.
pub fn stop_path(dir: &Path) -> PathBuf {
    dir.join("stop")
}

/// Runs the holder loop until told to stop.
///
/// # Errors
/// Only when the holder cannot do its job at all (no runtime, history file not writable);
/// lock-service errors are recorded, not returned.
pub fn run(config: &HolderConfig) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))?;
    runtime.block_on(holder_loop(config))
}

struct Recorder {
    writer: HistoryWriter,
    holder: u32,
}

impl Recorder {
    fn record(
        &mut self,
        t_us: u64,
        seq: u64,
        kind: Kind,
        fence: Option<u64>,
        detail: impl Into<String>,
    ) -> Result<(), String> {
        let mut event = Event::new(t_us, self.holder, seq, kind, fence);
        event.detail = detail.into();
        if event.detail.len() > 300 {
            let cut = (0..=300)
                .rev()
                .find(|&i| event.detail.is_char_boundary(i))
                .unwrap_or(0);
            event.detail.truncate(cut);
        }
        self.writer
            .record(&event)
            .map_err(|e| format!("write history: {e}"))
    }
}

fn should_stop(dir: &Path, parent: i32) -> bool {
    // SAFETY: getppid has no preconditions.
    let ppid = unsafe { libc::getppid() };
    ppid != parent || stop_path(dir).exists()
}

/// Resolves once the stop file appears (or the parent is gone).
async fn stopped(dir: &Path, parent: i32) {
    while !should_stop(dir, parent) {
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn holder_loop(cfg: &HolderConfig) -> Result<(), String> {
    let writer = HistoryWriter::open(&cfg.history_path())
        .map_err(|e| format!("open {}: {e}", cfg.history_path().display()))?;
    let mut rec = Recorder {
        writer,
        holder: cfg.id,
    };
    let register = FencedRegister::new(&cfg.dir);
    // SAFETY: getppid has no preconditions.
    let parent = unsafe { libc::getppid() };

    // Connect (the server is up when holders start, but retry: a fault may already be on).
    let locker = loop {
        if should_stop(&cfg.dir, parent) {
            return Ok(());
        }
        match dlock::Locker::connect(&cfg.url).await {
            Ok(locker) => break locker,
            Err(e) => {
                rec.record(
                    now_us(),
                    0,
                    Kind::AcquireError,
                    None,
                    format!("connect: {e}"),
                )?;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };

    let mut seq = 0u64;
    while !should_stop(&cfg.dir, parent) {
        let asked = std::time::Instant::now();
        let request = locker.lock(cfg.key.as_str()).ttl(cfg.ttl).wait(cfg.wait);
        let result = tokio::select! {
            r = request => r,
            () = stopped(&cfg.dir, parent) => break,
        };
        let guard = match result {
            Ok(guard) => guard,
            Err(e) if e.is_busy() => {
                rec.record(now_us(), seq, Kind::Busy, None, "")?;
                // A backend that knows it cannot grant within the wait says so at once (Redis
                // after a restart): do not spin on it.
                if asked.elapsed() < cfg.wait / 2 {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                continue;
            }
            Err(e) => {
                rec.record(now_us(), seq, Kind::AcquireError, None, e.to_string())?;
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        seq += 1;
        let fence = guard.fence();
        // `held=false` here: the guard came back with its lease already gone.
        let held = format!("held={}", guard.is_held());
        rec.record(now_us(), seq, Kind::Acquired, fence, held)?;
        // Every backend the suite runs hands out fences; a missing one reads as 0, the lowest.
        let f = fence.unwrap_or(0);
        match register.read(f, cfg.id) {
            Ok(read) if read.accepted => {
                rec.record(
                    read.t_us,
                    seq,
                    Kind::ReadOk,
                    fence,
                    format!("value={}", read.value),
                )?;
                tokio::time::sleep(cfg.pause).await;
                let held = guard.is_held();
                match register.write(f, cfg.id, read.value + 1) {
                    Ok(w) => {
                        let kind = if w.accepted {
                            Kind::WriteOk
                        } else {
                            Kind::WriteRefused
                        };
                        let detail = format!(
                            "value={} held={held} register_max_before={}",
                            read.value + 1,
                            w.max_before
                        );
                        rec.record(w.t_us, seq, kind, fence, detail)?;
                    }
                    Err(e) => {
                        rec.record(now_us(), seq, Kind::RegisterError, fence, e.to_string())?
                    }
                }
            }
            Ok(read) => rec.record(
                read.t_us,
                seq,
                Kind::ReadRefused,
                fence,
                format!("register_max_before={}", read.max_before),
            )?,
            Err(e) => rec.record(now_us(), seq, Kind::RegisterError, fence, e.to_string())?,
        }
        rec.record(now_us(), seq, Kind::End, fence, "")?;
        match guard.release().await {
            Ok(()) => rec.record(now_us(), seq, Kind::Released, fence, "")?,
            Err(e) if e.is_lost() => rec.record(now_us(), seq, Kind::ReleaseLost, fence, "")?,
            Err(e) => rec.record(now_us(), seq, Kind::ReleaseError, fence, e.to_string())?,
        }
    }
    // Bounded: a server that is still down must not keep the holder alive.
    let _ = tokio::time::timeout(Duration::from_secs(3), locker.close()).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_round_trips() {
        let cfg = HolderConfig {
            url: "redis://127.0.0.1:1".into(),
            key: "chaos".into(),
            id: 3,
            dir: PathBuf::from("/tmp/x"),
            ttl: Duration::from_millis(1000),
            wait: Duration::from_millis(2000),
            pause: Duration::from_millis(250),
        };
        assert_eq!(HolderConfig::parse(&cfg.to_args()), Ok(cfg));
        assert!(HolderConfig::parse(&["x".to_owned()]).is_err());
    }
}
