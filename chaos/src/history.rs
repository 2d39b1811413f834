//! The recorded history: one line per event, appended by each holder process to its own file.
//!
//! Why files and why this clock: the holders are separate processes (a holder must be stoppable
//! with SIGSTOP on its own, and must not share a runtime or a connection with the others), so the
//! only thing they share is the machine. Each appends its events to its own file with one
//! `write(2)` per line (`O_APPEND`, no buffering), so a line is complete even when the process is
//! stopped or killed right after it; the checker merges the files afterwards.
//!
//! Timestamps are microseconds of `CLOCK_MONOTONIC` read with `clock_gettime(2)`: on Linux that
//! clock is one system-wide counter (time since boot, not counting suspend), so readings from
//! different processes on one machine are comparable, and unlike the wall clock it never jumps
//! (NTP steps, a changed date). `std::time::Instant` reads the same clock but does not expose the
//! value, so it cannot be written down and compared with another process's.
//!
//! Line format (tab-separated): `t_us holder seq kind fence detail`, where `seq` numbers the
//! acquisitions of one holder (an acquisition is identified by `(holder, seq)`), `fence` is `-`
//! when the event has none, and `detail` is free text without tabs or newlines.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::str::FromStr;

/// Microseconds of `CLOCK_MONOTONIC`: comparable across the processes of one machine (see the
/// module docs).
pub fn now_us() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always exists on Linux.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_MONOTONIC) failed");
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1_000
}

/// What happened. An acquisition's critical section runs from [`Kind::Acquired`] to
/// [`Kind::End`] (recorded just before the release is sent: from then on the holder no longer
/// acts as the lock's owner).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// The lock was granted (with `fence`).
    Acquired,
    /// The acquire gave up after its wait: someone else held the lock.
    Busy,
    /// The acquire failed with an error other than busy (server down, timeout, ...).
    AcquireError,
    /// The fenced register let this fence read (and now knows it).
    ReadOk,
    /// The fenced register refused the read: it has seen a higher fence.
    ReadRefused,
    /// The fenced register accepted the write (timestamp: taken by the register, under its lock).
    WriteOk,
    /// The fenced register refused the write: it has seen a higher fence.
    WriteRefused,
    /// The register itself failed (I/O error); should never happen.
    RegisterError,
    /// The critical section ends: the holder is about to release.
    End,
    /// The release reached the server and the lock was ours.
    Released,
    /// The release found the lease gone (`Error::Lost`): the lock had run out or been taken.
    ReleaseLost,
    /// The release failed with another error (server unreachable, ...).
    ReleaseError,
}

impl Kind {
    const ALL: [(Kind, &'static str); 12] = [
        (Kind::Acquired, "acquired"),
        (Kind::Busy, "busy"),
        (Kind::AcquireError, "acquire_error"),
        (Kind::ReadOk, "read_ok"),
        (Kind::ReadRefused, "read_refused"),
        (Kind::WriteOk, "write_ok"),
        (Kind::WriteRefused, "write_refused"),
        (Kind::RegisterError, "register_error"),
        (Kind::End, "end"),
        (Kind::Released, "released"),
        (Kind::ReleaseLost, "release_lost"),
        (Kind::ReleaseError, "release_error"),
    ];

    /// The name used in history files.
    pub fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(k, _)| *k == self)
            .map_or("?", |(_, n)| n)
    }
}

impl FromStr for Kind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .iter()
            .find(|(_, n)| *n == s)
            .map(|(k, _)| *k)
            .ok_or_else(|| format!("unknown event kind {s:?}"))
    }
}

/// One recorded event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// When, in µs of `CLOCK_MONOTONIC` ([`now_us`]).
    pub t_us: u64,
    /// Which holder process (1-based).
    pub holder: u32,
    /// Which acquisition of that holder (1-based; 0 for events outside any acquisition).
    pub seq: u64,
    /// What happened.
    pub kind: Kind,
    /// The fence involved, if any.
    pub fence: Option<u64>,
    /// Free text (an error message, the value read or written).
    pub detail: String,
}

impl Event {
    /// An event without detail.
    pub fn new(t_us: u64, holder: u32, seq: u64, kind: Kind, fence: Option<u64>) -> Event {
        Event {
            t_us,
            holder,
            seq,
            kind,
            fence,
            detail: String::new(),
        }
    }

    /// Parses one history line.
    ///
    /// # Errors
    /// A message naming what is malformed.
    pub fn parse(line: &str) -> Result<Event, String> {
        let mut parts = line.splitn(6, '\t');
        let mut next = |what: &str| {
            parts
                .next()
                .ok_or_else(|| format!("history line without {what}: {line:?}"))
        };
        let num = |s: &str, what: &str| {
            s.parse::<u64>()
                .map_err(|e| format!("bad {what} {s:?} in {line:?}: {e}"))
        };
        let t_us = num(next("time")?, "time")?;
        let holder = u32::try_from(num(next("holder")?, "holder")?)
            .map_err(|e| format!("bad holder in {line:?}: {e}"))?;
        let seq = num(next("seq")?, "seq")?;
        let kind = next("kind")?.parse()?;
        let fence = match next("fence")? {
            "-" => None,
            f => Some(num(f, "fence")?),
        };
        let detail = parts.next().unwrap_or("").to_owned();
        Ok(Event {
            t_us,
            holder,
            seq,
            kind,
            fence,
            detail,
        })
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let fence = self.fence.map_or("-".to_owned(), |x| x.to_string());
        let detail: String = self
            .detail
            .chars()
            .map(|c| if c == '\t' || c == '\n' { ' ' } else { c })
            .collect();
        write!(
            f,
            "{}\t{}\t{}\t{}\t{}\t{}",
            self.t_us,
            self.holder,
            self.seq,
            self.kind.name(),
            fence,
            detail
        )
    }
}

/// A holder's history file, appended one whole line per `write(2)`.
pub struct HistoryWriter {
    file: File,
}

impl HistoryWriter {
    /// Opens (creating) `path` for appending.
    ///
    /// # Errors
    /// The I/O error.
    pub fn open(path: &Path) -> std::io::Result<HistoryWriter> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(HistoryWriter { file })
    }

    /// Appends `event` as one line.
    ///
    /// # Errors
    /// The I/O error.
    pub fn record(&mut self, event: &Event) -> std::io::Result<()> {
        self.file.write_all(format!("{event}\n").as_bytes())
    }
}

/// Reads every `*.history` file in `dir`, in no particular order.
///
/// # Errors
/// An I/O error or a malformed line (a torn last line, from a process killed mid-write, is
/// skipped: lines are written whole, so only a line without its newline can be torn).
pub fn read_dir(dir: &Path) -> Result<Vec<Event>, String> {
    let mut events = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(|e| format!("read {}: {e}", dir.display()))?;
    for entry in entries {
        let path = entry.map_err(|e| e.to_string())?.path();
        if path.extension().is_some_and(|e| e == "history") {
            let text = std::fs::read_to_string(&path)
                .map_err(|e| format!("read {}: {e}", path.display()))?;
            for line in text.split_inclusive('\n') {
                if let Some(line) = line.strip_suffix('\n') {
                    events.push(Event::parse(line)?);
                }
            }
        }
    }
    Ok(events)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_round_trips() {
        let mut e = Event::new(12, 3, 4, Kind::WriteOk, Some(99));
        e.detail = "value=7\twith a tab".into();
        let back = Event::parse(&e.to_string()).expect("parse");
        assert_eq!(back.t_us, 12);
        assert_eq!(back.holder, 3);
        assert_eq!(back.seq, 4);
        assert_eq!(back.kind, Kind::WriteOk);
        assert_eq!(back.fence, Some(99));
        assert_eq!(back.detail, "value=7 with a tab");
        let none = Event::new(1, 1, 0, Kind::Busy, None);
        assert_eq!(Event::parse(&none.to_string()).expect("parse"), none);
    }

    #[test]
    fn every_kind_has_a_name() {
        for (kind, name) in Kind::ALL {
            assert_eq!(kind.name(), name);
            assert_eq!(name.parse::<Kind>(), Ok(kind));
        }
        assert!(Event::parse("1\t2\t3\tnonsense\t-\t").is_err());
    }

    #[test]
    fn the_clock_moves_forward() {
        let a = now_us();
        std::thread::sleep(std::time::Duration::from_millis(2));
        assert!(now_us() >= a + 2_000);
    }
}
