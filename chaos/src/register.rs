//! The fenced register: the resource the lock protects, which refuses a holder whose fence is
//! lower than the highest fence it has seen.
//!
//! Why a file under `flock(2)`: the register must survive every fault the suite injects into the
//! lock service (a register inside the paused or killed Redis would be paused or wiped with it,
//! and hide exactly what the suite wants to see), and it must be shared by separate processes.
//! A small file on the local disk, read and rewritten under an exclusive `flock`, is both, needs
//! no server, and its critical section is a few microseconds, so it never stalls the holders.
//! (A holder is only ever SIGSTOPped in its pause, never while it holds the `flock`.)
//!
//! Rules, as Kleppmann's storage that checks fencing tokens: every operation carries the fence
//! of the caller's lock; an operation whose fence is *lower* than the highest fence the register
//! has seen is refused; an accepted one raises that highest fence. Reads carry the fence too (as
//! a storage that checks a token on every request does), so a new holder's first read already
//! shuts out every older holder, before the new holder writes anything. An equal fence is
//! accepted (the same holder reads, then writes), so a fence issued twice is *not* caught here:
//! the checker counts duplicates from the histories.
//!
//! File format: one line `max_fence value writer`. Each operation is also appended to
//! `register.log` (under the same lock) for a human reading a run afterwards.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};

use crate::history::now_us;

/// The outcome of one register operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// Whether the fence was high enough.
    pub accepted: bool,
    /// When the register decided, in µs of `CLOCK_MONOTONIC` (taken under the register's lock,
    /// so the order of these times is the order in which the register saw the operations).
    pub t_us: u64,
    /// The value stored after the operation (for a read: the value read).
    pub value: u64,
    /// The highest fence the register had seen before this operation.
    pub max_before: u64,
}

/// A register shared by the holder processes of one scenario: a file in the scenario's directory.
#[derive(Clone, Debug)]
pub struct FencedRegister {
    path: PathBuf,
    log: PathBuf,
}

/// The register's state: the highest fence seen, the value, and who wrote it last.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct State {
    max_fence: u64,
    value: u64,
    writer: u32,
}

impl FencedRegister {
    /// The register kept in `dir` (created on first use).
    pub fn new(dir: &Path) -> FencedRegister {
        FencedRegister {
            path: dir.join("register"),
            log: dir.join("register.log"),
        }
    }

    /// Reads the value with `fence`: refused when a higher fence has been seen, else the register
    /// remembers `fence` as the highest seen.
    ///
    /// # Errors
    /// An I/O error on the register's file.
    pub fn read(&self, fence: u64, holder: u32) -> std::io::Result<Outcome> {
        self.operate(fence, holder, "read", |_| None)
    }

    /// Writes `value` with `fence`: refused when a higher fence has been seen.
    ///
    /// # Errors
    /// An I/O error on the register's file.
    pub fn write(&self, fence: u64, holder: u32, value: u64) -> std::io::Result<Outcome> {
        self.operate(fence, holder, "write", |_| Some(value))
    }

    fn operate(
        &self,
        fence: u64,
        holder: u32,
        op: &str,
        new_value: impl FnOnce(u64) -> Option<u64>,
    ) -> std::io::Result<Outcome> {
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&self.path)?;
        let _lock = Flock::exclusive(&file)?;
        let t_us = now_us();
        let mut text = String::new();
        file.read_to_string(&mut text)?;
        let before = parse_state(&text)?;
        let accepted = fence >= before.max_fence;
        let mut after = before;
        if accepted {
            after.max_fence = fence;
            if let Some(value) = new_value(before.value) {
                after.value = value;
                after.writer = holder;
            }
            if after != before {
                file.seek(SeekFrom::Start(0))?;
                file.set_len(0)?;
                file.write_all(
                    format!("{} {} {}\n", after.max_fence, after.value, after.writer).as_bytes(),
                )?;
            }
        }
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        log.write_all(
            format!(
                "{t_us}\t{op}\tholder={holder}\tfence={fence}\t{}\tmax_before={}\tvalue={}\n",
                if accepted { "accepted" } else { "REFUSED" },
                before.max_fence,
                after.value
            )
            .as_bytes(),
        )?;
        Ok(Outcome {
            accepted,
            t_us,
            value: after.value,
            max_before: before.max_fence,
        })
    }
}

fn parse_state(text: &str) -> std::io::Result<State> {
    let bad = || std::io::Error::other(format!("corrupt register file: {text:?}"));
    let text = text.trim();
    if text.is_empty() {
        return Ok(State::default());
    }
    let mut it = text.split(' ').map(str::parse::<u64>);
    let mut next = || it.next().and_then(Result::ok).ok_or_else(bad);
    Ok(State {
        max_fence: next()?,
        value: next()?,
        writer: u32::try_from(next()?).map_err(|_| bad())?,
    })
}

/// An exclusive `flock` on a file, released on drop (and by the kernel if the process dies).
/// Declared after the file it locks, so it is dropped (unlocked) before the file is closed.
struct Flock {
    fd: RawFd,
}

impl Flock {
    fn exclusive(file: &File) -> std::io::Result<Flock> {
        let fd = file.as_raw_fd();
        loop {
            // SAFETY: `fd` is the open descriptor of `file`.
            let rc = unsafe { libc::flock(fd, libc::LOCK_EX) };
            if rc == 0 {
                return Ok(Flock { fd });
            }
            let err = std::io::Error::last_os_error();
            if err.kind() != std::io::ErrorKind::Interrupted {
                return Err(err);
            }
        }
    }
}

impl Drop for Flock {
    fn drop(&mut self) {
        // SAFETY: the file outlives this guard (see the type's docs); unlocking a held flock
        // cannot fail in a way we could handle (closing the file would release it anyway).
        unsafe { libc::flock(self.fd, libc::LOCK_UN) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "dlock-chaos-register-{name}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        dir
    }

    #[test]
    fn a_lower_fence_is_refused_after_a_higher_one_was_seen() {
        let dir = temp_dir("order");
        let reg = FencedRegister::new(&dir);
        assert!(reg.read(5, 1).expect("read").accepted);
        assert!(reg.write(5, 1, 1).expect("write").accepted);
        // A new holder's read alone shuts the old one out.
        assert!(reg.read(6, 2).expect("read").accepted);
        let stale = reg.write(5, 1, 2).expect("write");
        assert!(!stale.accepted);
        assert_eq!(stale.max_before, 6);
        assert_eq!(stale.value, 1, "a refused write changes nothing");
        let ok = reg.write(6, 2, 2).expect("write");
        assert!(ok.accepted);
        assert_eq!(ok.value, 2);
        assert!(!reg.read(4, 3).expect("read").accepted);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn writers_in_many_threads_never_lose_the_maximum() {
        let dir = temp_dir("threads");
        let reg = FencedRegister::new(&dir);
        let joins: Vec<_> = (0..4u64)
            .map(|t| {
                let reg = reg.clone();
                std::thread::spawn(move || {
                    for i in 0..50 {
                        reg.write(i * 4 + t, t as u32, i).expect("write");
                    }
                })
            })
            .collect();
        for j in joins {
            j.join().expect("thread");
        }
        assert!(!reg.read(49 * 4 + 2, 9).expect("read").accepted);
        assert!(reg.read(49 * 4 + 3, 9).expect("read").accepted);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
