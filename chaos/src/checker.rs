//! The checker: reads the merged histories of one scenario and finds what went wrong.
//!
//! Why a separate, pure module: the suite's verdict must not depend on the code that injected
//! the faults or ran the holders, only on what the processes wrote down; and a checker that
//! cannot find anything passes by accident. So it is a function of a list of events, tested on
//! hand-made histories (one with an overlap, one with stale writes, one clean, one with a fence
//! issued twice) without any server.
//!
//! Definitions (all times are `CLOCK_MONOTONIC` µs, comparable across the holder processes):
//!
//! - **critical section** of an acquisition: from its `acquired` event to its `end` event (the
//!   moment the holder stops acting as the owner and sends its release). Without an `end` (the
//!   process was stopped or died in the section), it ends at the holder's next event of another
//!   acquisition, or at the end of the observation window.
//! - **overlap**: two critical sections of different holders that share an instant. A correct
//!   lock service never produces one; a holder paused past its lease, or a server that forgot
//!   the lock, does. Counted as pairs.
//! - **stale write**: a write the fenced register *accepted* although, when the register
//!   accepted it, a higher fence had already been granted (recorded `acquired`) to another
//!   acquisition. That is the write fencing exists to refuse; it must be 0 on every fenced
//!   backend. ("Granted" uses the time the holder recorded its grant, a few µs after the server
//!   issued it: the check can miss a write in that gap, never invent one.)
//! - **duplicate fence**: an acquisition whose fence another acquisition of the key already got
//!   (counted once per extra acquisition). Must be 0: a fence issued twice lets the register
//!   accept both holders.
//! - **fence backwards**: an acquisition whose fence is lower than a fence granted before it
//!   (informational: the register then refuses the new holder until the counter catches up, a
//!   liveness problem, and duplicates usually follow).
//! - **longest unavailable**: the longest stretch, from the fault's start to the end of the
//!   observation window, during which no holder held the lock: no critical section was open
//!   within its lease (a holder stopped past its lease holds nothing from the lease's end, though
//!   its section, for the overlap count, goes on until it resumes and releases).

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

use crate::history::{Event, Kind};

/// The observation window of one scenario.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    /// When the holders were started (µs, `CLOCK_MONOTONIC`); times in the report are relative
    /// to it.
    pub start_us: u64,
    /// When the fault began and ended, `None` for a run without a fault.
    pub fault: Option<(u64, u64)>,
    /// When the holders were told to stop: sections still open end here.
    pub stop_us: u64,
    /// The lease of each acquisition, µs (`None`: unknown). For availability only: a section
    /// that outlives its lease (a stopped holder) stops counting as a holder when the lease
    /// ends, because from then on the lock service no longer keeps the lock for it.
    pub lease_us: Option<u64>,
}

/// What the checker found in one scenario.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Report {
    /// Acquisitions recorded.
    pub acquisitions: usize,
    /// Pairs of overlapping critical sections.
    pub overlaps: usize,
    /// The longest overlap, µs.
    pub max_overlap_us: u64,
    /// Writes the register accepted although a higher fence had already been granted.
    pub stale_writes: usize,
    /// Acquisitions that got a fence another acquisition had already got.
    pub duplicate_fences: usize,
    /// Acquisitions whose fence was lower than one granted before them.
    pub fences_backwards: usize,
    /// Writes the register accepted.
    pub writes_accepted: usize,
    /// Reads and writes the register refused (a lower fence than one it had seen).
    pub refused: usize,
    /// Releases that found the lease already gone (`Error::Lost`).
    pub releases_lost: usize,
    /// Acquire, release and register errors (server down, timeouts, killed connections).
    pub errors: usize,
    /// The longest time without any open critical section after the fault started (for a run
    /// without a fault: after the first acquisition), µs.
    pub longest_unavailable_us: u64,
    /// True when that longest stretch lasted until the end of the window (the lock never came
    /// back, or came back only after the window).
    pub unavailable_until_end: bool,
    /// The first few findings, in words (for the report under the table).
    pub findings: Vec<String>,
}

/// One acquisition, assembled from its events.
#[derive(Clone, Debug)]
struct Acquisition {
    holder: u32,
    seq: u64,
    fence: Option<u64>,
    start: u64,
    end: Option<u64>,
    /// Accepted writes: (register time, fence).
    writes: Vec<(u64, u64)>,
}

const MAX_FINDINGS: usize = 4;

/// Checks the events of one scenario (any order; every holder's events together).
pub fn check(events: &[Event], window: &Window) -> Report {
    let mut report = Report::default();
    let rel = |t: u64| (t as f64 - window.start_us as f64) / 1e6;

    // Assemble acquisitions; count the simple events.
    let mut acqs: BTreeMap<(u32, u64), Acquisition> = BTreeMap::new();
    let mut by_holder: HashMap<u32, Vec<&Event>> = HashMap::new();
    for e in events {
        by_holder.entry(e.holder).or_default().push(e);
        match e.kind {
            Kind::Acquired => {
                acqs.insert(
                    (e.holder, e.seq),
                    Acquisition {
                        holder: e.holder,
                        seq: e.seq,
                        fence: e.fence,
                        start: e.t_us,
                        end: None,
                        writes: Vec::new(),
                    },
                );
            }
            Kind::ReadRefused | Kind::WriteRefused => report.refused += 1,
            Kind::ReleaseLost => report.releases_lost += 1,
            Kind::AcquireError | Kind::ReleaseError | Kind::RegisterError => report.errors += 1,
            _ => {}
        }
    }
    for e in events {
        if let Some(a) = acqs.get_mut(&(e.holder, e.seq)) {
            match e.kind {
                Kind::End => a.end = Some(a.end.map_or(e.t_us, |x| x.min(e.t_us))),
                Kind::WriteOk => {
                    if let Some(f) = e.fence.or(a.fence) {
                        a.writes.push((e.t_us, f));
                    }
                }
                _ => {}
            }
        }
    }
    // Sections without an `end`: up to the holder's next event of another acquisition, or the
    // end of the window.
    for list in by_holder.values_mut() {
        list.sort_by_key(|e| e.t_us);
    }
    for a in acqs.values_mut() {
        if a.end.is_none() {
            let next = by_holder.get(&a.holder).and_then(|list| {
                list.iter()
                    .find(|e| e.t_us > a.start && e.seq != a.seq)
                    .map(|e| e.t_us)
            });
            a.end = Some(next.unwrap_or(window.stop_us).max(a.start));
        }
    }
    let mut acqs: Vec<Acquisition> = acqs.into_values().collect();
    acqs.sort_by_key(|a| (a.start, a.holder, a.seq));
    report.acquisitions = acqs.len();
    report.writes_accepted = acqs.iter().map(|a| a.writes.len()).sum();
    let end_of = |a: &Acquisition| a.end.unwrap_or(window.stop_us);

    // Overlaps (pairs; sorted by start, so only later sections can start inside an earlier one).
    for (i, a) in acqs.iter().enumerate() {
        for b in &acqs[i + 1..] {
            if b.start >= end_of(a) {
                continue;
            }
            if b.holder == a.holder {
                continue;
            }
            report.overlaps += 1;
            let amount = end_of(a).min(end_of(b)) - b.start;
            report.max_overlap_us = report.max_overlap_us.max(amount);
            if report.findings.len() < MAX_FINDINGS {
                report.findings.push(format!(
                    "overlap: holder {} (fence {}) held from {:+.3} s to {:+.3} s; holder {} \
                     (fence {}) acquired at {:+.3} s",
                    a.holder,
                    fence_text(a.fence),
                    rel(a.start),
                    rel(end_of(a)),
                    b.holder,
                    fence_text(b.fence),
                    rel(b.start)
                ));
            }
        }
    }

    // Stale writes: the highest fence granted before the register accepted the write.
    let granted: Vec<(u64, u64, u32)> = acqs
        .iter()
        .filter_map(|a| a.fence.map(|f| (a.start, f, a.holder)))
        .collect();
    for a in &acqs {
        for &(t_w, f) in &a.writes {
            let higher = granted
                .iter()
                .take_while(|(t, _, _)| *t < t_w)
                .filter(|(_, g, _)| *g > f)
                .max_by_key(|(_, g, _)| *g);
            if let Some(&(t_g, g, holder)) = higher {
                report.stale_writes += 1;
                if report.findings.len() < MAX_FINDINGS {
                    report.findings.push(format!(
                        "stale write: holder {} wrote with fence {f} at {:+.3} s, accepted, \
                         although fence {g} went to holder {holder} at {:+.3} s",
                        a.holder,
                        rel(t_w),
                        rel(t_g)
                    ));
                }
            }
        }
    }

    // Fences issued twice, and fences that went backwards.
    let mut seen: HashMap<u64, (u32, u64)> = HashMap::new();
    let mut highest: Option<u64> = None;
    for a in &acqs {
        let Some(f) = a.fence else { continue };
        if let Some(&(holder, seq)) = seen.get(&f) {
            report.duplicate_fences += 1;
            if report.findings.len() < MAX_FINDINGS {
                report.findings.push(format!(
                    "fence {f} issued twice: to holder {holder} (acquisition {seq}) and to \
                     holder {} (acquisition {}) at {:+.3} s",
                    a.holder,
                    a.seq,
                    rel(a.start)
                ));
            }
        } else {
            seen.insert(f, (a.holder, a.seq));
        }
        if highest.is_some_and(|h| f < h) {
            report.fences_backwards += 1;
        }
        highest = Some(highest.map_or(f, |h| h.max(f)));
    }

    // Longest stretch without an open section, from the fault's start (or the first
    // acquisition) to the end of the window.
    let from = match window.fault {
        Some((start, _)) => start,
        None => acqs.first().map_or(window.start_us, |a| a.start),
    };
    let mut cursor = from;
    for a in &acqs {
        let held_until = window
            .lease_us
            .map_or(end_of(a), |lease| end_of(a).min(a.start + lease));
        let (s, e) = (a.start.min(window.stop_us), held_until.min(window.stop_us));
        if e <= cursor {
            continue;
        }
        if s > cursor {
            report.longest_unavailable_us = report.longest_unavailable_us.max(s - cursor);
        }
        cursor = cursor.max(e);
    }
    if window.stop_us > cursor && window.stop_us - cursor >= report.longest_unavailable_us {
        report.longest_unavailable_us = window.stop_us - cursor;
        report.unavailable_until_end = true;
    }
    report
}

fn fence_text(f: Option<u64>) -> String {
    f.map_or("none".to_owned(), |f| f.to_string())
}

impl Report {
    /// The verdict for the table, and whether it fails the run. `fenced`: the backend hands out
    /// fences (stale writes and duplicates then fail). `baseline`: the run had no fault (an
    /// overlap then fails too: mutual exclusion broke with nothing wrong).
    pub fn verdict(&self, fenced: bool, baseline: bool) -> (String, bool) {
        let mut failures = Vec::new();
        if fenced && self.stale_writes > 0 {
            failures.push(format!("{} stale write(s) accepted", self.stale_writes));
        }
        if fenced && self.duplicate_fences > 0 {
            failures.push(format!("{} fence(s) issued twice", self.duplicate_fences));
        }
        if baseline && self.overlaps > 0 {
            failures.push("overlap without a fault".to_owned());
        }
        if self.acquisitions == 0 {
            failures.push("no acquisition at all".to_owned());
        }
        if !failures.is_empty() {
            return (format!("**FAIL**: {}", failures.join(", ")), true);
        }
        let text = if baseline {
            "clean (no fault)".to_owned()
        } else if self.overlaps > 0 {
            format!(
                "bit: {} overlap(s), up to {:.2} s; fences kept the register safe",
                self.overlaps,
                self.max_overlap_us as f64 / 1e6
            )
        } else {
            "did not bite: no overlapping sections".to_owned()
        };
        (text, false)
    }

    /// The longest unavailability, as table text.
    pub fn unavailable_text(&self) -> String {
        let s = format!("{} ms", self.longest_unavailable_us / 1000);
        if self.unavailable_until_end {
            format!("≥ {s} (not back by the end)")
        } else {
            s
        }
    }
}

/// One row of the results table.
#[derive(Clone, Debug)]
pub struct Row {
    /// Backend name (`redis`, `mysql`, `zookeeper`).
    pub backend: String,
    /// Fault name.
    pub fault: String,
    /// Whether the backend hands out fences.
    pub fenced: bool,
    /// What happened.
    pub outcome: Outcome,
}

/// The outcome of one scenario.
#[derive(Clone, Debug)]
pub enum Outcome {
    /// The scenario ran and was checked.
    Checked(Report),
    /// The scenario was not run, for a stated reason that is not a failure (a feature the
    /// library does not have yet).
    NotAvailable(String),
    /// The scenario could not run (a server would not start, ...): fails the run.
    Broken(String),
}

impl Row {
    /// Whether this row fails the run.
    pub fn failed(&self) -> bool {
        match &self.outcome {
            Outcome::Checked(r) => r.verdict(self.fenced, self.fault == "none").1,
            Outcome::NotAvailable(_) => false,
            Outcome::Broken(_) => true,
        }
    }
}

/// The results as a markdown table.
pub fn render_table(rows: &[Row]) -> String {
    let mut out = String::new();
    out.push_str(
        "| backend | fault | acquisitions | overlapping sections | stale writes accepted | \
         fences issued twice | fences backwards | refused by register | lost / errors | \
         longest unavailable after fault | result |\n",
    );
    out.push_str("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|\n");
    for row in rows {
        match &row.outcome {
            Outcome::Checked(r) => {
                let (verdict, _) = r.verdict(row.fenced, row.fault == "none");
                let _ = writeln!(
                    out,
                    "| {} | {} | {} | {} | {} | {} | {} | {} | {} / {} | {} | {} |",
                    row.backend,
                    row.fault,
                    r.acquisitions,
                    r.overlaps,
                    r.stale_writes,
                    r.duplicate_fences,
                    r.fences_backwards,
                    r.refused,
                    r.releases_lost,
                    r.errors,
                    r.unavailable_text(),
                    verdict
                );
            }
            Outcome::NotAvailable(why) => {
                let _ = writeln!(
                    out,
                    "| {} | {} | | | | | | | | | not available: {} |",
                    row.backend, row.fault, why
                );
            }
            Outcome::Broken(why) => {
                let _ = writeln!(
                    out,
                    "| {} | {} | | | | | | | | | **BROKEN**: {} |",
                    row.backend, row.fault, why
                );
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000;

    fn ev(t_ms: u64, holder: u32, seq: u64, kind: Kind, fence: Option<u64>) -> Event {
        Event::new(t_ms * MS, holder, seq, kind, fence)
    }

    /// One acquire → read → write → end → release cycle. `write`: (time, accepted).
    fn cycle(
        holder: u32,
        seq: u64,
        fence: u64,
        acquired: u64,
        write: Option<(u64, bool)>,
        end: u64,
        release: Kind,
    ) -> Vec<Event> {
        let f = Some(fence);
        let mut v = vec![
            ev(acquired, holder, seq, Kind::Acquired, f),
            ev(acquired + 1, holder, seq, Kind::ReadOk, f),
        ];
        if let Some((t, ok)) = write {
            let kind = if ok {
                Kind::WriteOk
            } else {
                Kind::WriteRefused
            };
            v.push(ev(t, holder, seq, kind, f));
        }
        v.push(ev(end, holder, seq, Kind::End, f));
        v.push(ev(end + 1, holder, seq, release, f));
        v
    }

    fn window(fault: Option<(u64, u64)>, stop_ms: u64) -> Window {
        Window {
            start_us: 0,
            fault: fault.map(|(a, b)| (a * MS, b * MS)),
            stop_us: stop_ms * MS,
            lease_us: None,
        }
    }

    #[test]
    fn a_clean_history_has_no_finding() {
        // Three holders take turns; fences grow; the fault at 1000 ms leaves the lock free for
        // 300 ms (from 1100 to 1400).
        let mut h = Vec::new();
        h.extend(cycle(1, 1, 1, 0, Some((200, true)), 300, Kind::Released));
        h.extend(cycle(2, 1, 2, 302, Some((500, true)), 600, Kind::Released));
        h.extend(cycle(3, 1, 3, 602, Some((800, true)), 1100, Kind::Released));
        h.extend(cycle(
            1,
            2,
            4,
            1400,
            Some((1500, true)),
            1600,
            Kind::Released,
        ));
        h.extend(cycle(
            2,
            2,
            7,
            1602,
            Some((1700, true)),
            1990,
            Kind::Released,
        ));
        h.push(ev(1050, 2, 0, Kind::Busy, None));
        let r = check(&h, &window(Some((1000, 1200)), 2000));
        assert_eq!(r.acquisitions, 5);
        assert_eq!(r.overlaps, 0, "{:?}", r.findings);
        assert_eq!(r.stale_writes, 0);
        assert_eq!(r.duplicate_fences, 0);
        assert_eq!(r.fences_backwards, 0);
        assert_eq!(r.writes_accepted, 5);
        assert_eq!(r.refused, 0);
        assert_eq!(r.longest_unavailable_us, 300 * MS);
        assert!(!r.unavailable_until_end);
        assert!(r.findings.is_empty());
        let (verdict, failed) = r.verdict(true, false);
        assert!(!failed);
        assert!(verdict.contains("did not bite"), "{verdict}");
        assert!(!r.verdict(true, true).1, "clean as a baseline too");
    }

    #[test]
    fn a_holder_paused_past_its_lease_overlaps_and_its_write_is_refused() {
        // Holder 1 (fence 1) is stopped from 100 to 2100 ms; its lease ran out at 1000, holder 2
        // took the lock (fence 2) at 1005 and read the register with it; holder 1's late write
        // is refused.
        let mut h = Vec::new();
        h.extend(cycle(
            1,
            1,
            1,
            0,
            Some((2100, false)),
            2101,
            Kind::ReleaseLost,
        ));
        h.extend(cycle(
            2,
            1,
            2,
            1005,
            Some((1200, true)),
            1300,
            Kind::Released,
        ));
        h.extend(cycle(
            3,
            1,
            3,
            1302,
            Some((1400, true)),
            1500,
            Kind::Released,
        ));
        let r = check(&h, &window(Some((100, 2100)), 3000));
        assert_eq!(r.overlaps, 2, "holder 1's section overlaps both others");
        assert_eq!(r.max_overlap_us, 295 * MS);
        assert_eq!(r.stale_writes, 0);
        assert_eq!(r.duplicate_fences, 0);
        assert_eq!(r.refused, 1);
        assert_eq!(r.releases_lost, 1);
        // Without a known lease the stopped holder counts as holding throughout; with a lease
        // of 1 s it holds nothing from 1000 ms, and the lock is free until 1005 ms.
        let short = window(Some((100, 2100)), 1500);
        assert_eq!(check(&h, &short).longest_unavailable_us, 0);
        let leased = Window {
            lease_us: Some(1000 * MS),
            ..short
        };
        let r2 = check(&h, &leased);
        assert_eq!(r2.longest_unavailable_us, 5 * MS);
        assert_eq!(
            r2.overlaps, r.overlaps,
            "the lease does not shorten overlaps"
        );
        let (verdict, failed) = r.verdict(true, false);
        assert!(!failed);
        assert!(verdict.starts_with("bit: 2 overlap"), "{verdict}");
        assert!(r.findings[0].contains("overlap"), "{:?}", r.findings);
        // The same history without a fault: an overlap then fails the run.
        assert!(r.verdict(true, true).1);
    }

    #[test]
    fn a_stale_write_is_found_and_fails_the_run() {
        // As above, but the register (wrongly) accepted holder 1's late write with fence 1 after
        // fence 2 had gone to holder 2.
        let mut h = Vec::new();
        h.extend(cycle(
            1,
            1,
            1,
            0,
            Some((2100, true)),
            2101,
            Kind::ReleaseLost,
        ));
        h.extend(cycle(
            2,
            1,
            2,
            1005,
            Some((1200, true)),
            1300,
            Kind::Released,
        ));
        let r = check(&h, &window(Some((100, 2100)), 3000));
        assert_eq!(r.stale_writes, 1);
        assert_eq!(r.overlaps, 1);
        let (verdict, failed) = r.verdict(true, false);
        assert!(failed);
        assert!(verdict.contains("1 stale write"), "{verdict}");
        assert!(
            r.findings.iter().any(|f| f.starts_with("stale write")),
            "{:?}",
            r.findings
        );
        // Not a failure where the backend gives no fences (nothing could have refused it).
        assert!(!r.verdict(false, false).1);
    }

    #[test]
    fn a_stale_write_without_overlap_is_found_too() {
        // Fence 5 went to holder 2 first; later holder 1 got fence 3 (the fence went backwards)
        // and the register accepted its write: stale, although the sections never overlapped.
        let mut h = Vec::new();
        h.extend(cycle(2, 1, 5, 0, Some((100, true)), 200, Kind::Released));
        h.extend(cycle(1, 1, 3, 300, Some((400, true)), 500, Kind::Released));
        let r = check(&h, &window(None, 1000));
        assert_eq!(r.overlaps, 0);
        assert_eq!(r.stale_writes, 1);
        assert_eq!(r.fences_backwards, 1);
        assert!(r.verdict(true, true).1);
    }

    #[test]
    fn a_fence_issued_twice_is_found() {
        // A server that forgot its counter: fence 1 again after a restart.
        let mut h = Vec::new();
        h.extend(cycle(1, 1, 1, 0, Some((100, true)), 200, Kind::Released));
        h.extend(cycle(2, 1, 2, 202, Some((300, true)), 400, Kind::Released));
        h.extend(cycle(3, 1, 1, 600, Some((700, false)), 800, Kind::Released));
        let r = check(&h, &window(Some((450, 500)), 850));
        assert_eq!(r.duplicate_fences, 1);
        assert_eq!(r.fences_backwards, 1);
        assert_eq!(r.stale_writes, 0);
        assert_eq!(r.overlaps, 0);
        assert_eq!(r.longest_unavailable_us, 150 * MS);
        let (verdict, failed) = r.verdict(true, false);
        assert!(failed);
        assert!(verdict.contains("issued twice"), "{verdict}");
    }

    #[test]
    fn a_section_without_end_runs_to_the_next_event_or_the_window_end() {
        // Holder 1's section has no `end` (its process died): it lasts until the window ends,
        // so holder 2's section overlaps it, and the lock is never free after the fault.
        let mut h = vec![ev(0, 1, 1, Kind::Acquired, Some(1))];
        h.extend(cycle(2, 1, 2, 500, None, 600, Kind::Released));
        let r = check(&h, &window(Some((100, 200)), 1000));
        assert_eq!(r.overlaps, 1);
        assert_eq!(r.longest_unavailable_us, 0);
        // No acquisition after the fault at all: unavailable until the end.
        let h = cycle(1, 1, 1, 0, None, 50, Kind::Released);
        let r = check(&h, &window(Some((100, 200)), 1000));
        assert_eq!(r.longest_unavailable_us, 900 * MS);
        assert!(r.unavailable_until_end);
        assert!(r.unavailable_text().starts_with('≥'));
    }

    #[test]
    fn the_table_has_a_row_per_scenario() {
        let h = cycle(1, 1, 1, 0, Some((100, true)), 200, Kind::Released);
        let rows = vec![
            Row {
                backend: "redis".into(),
                fault: "none".into(),
                fenced: true,
                outcome: Outcome::Checked(check(&h, &window(None, 300))),
            },
            Row {
                backend: "redis".into(),
                fault: "failover-replicas".into(),
                fenced: true,
                outcome: Outcome::NotAvailable("no ?replicas".into()),
            },
        ];
        let table = render_table(&rows);
        assert_eq!(table.lines().count(), 4);
        assert!(table.contains("| redis | none | 1 | 0 | 0 | 0 | 0 | 0 | 0 / 0 |"));
        assert!(table.contains("not available: no ?replicas"));
        assert!(!rows.iter().any(Row::failed));
    }
}
