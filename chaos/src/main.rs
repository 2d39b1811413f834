//! `dlock-chaos`: the chaos suite of DESIGN.md section 6 — what fences are for, shown on real
//! servers.
//!
//! A lock service can only promise mutual exclusion while its assumptions hold: a holder that is
//! paused past its lease, a server that is paused, killed, restarted empty or failed over, or
//! connections that are cut, can all leave two processes believing they hold the same lock. The
//! fence is what keeps the protected resource safe anyway: a resource that refuses a fence lower
//! than one it has seen turns a late, stale holder into a refused write. This binary shows both
//! halves: faults that make critical sections overlap (if a fault causes no overlap, the table
//! says it did not bite), and a fenced register that accepted no stale write, with no fence
//! issued twice.
//!
//! ```sh
//! cargo run --release -p dlock-chaos                   # everything, about 5 minutes
//! cargo run --release -p dlock-chaos -- --quick redis  # shorter phases, no baseline, Redis only
//! cargo run --release -p dlock-chaos -- mysql holder-stop server-kill
//! cargo run --release -p dlock-chaos -- --report chaos/LAST_RUN.md
//! ```
//!
//! Backends: `redis`, `mysql`, `zookeeper`. Faults: `none` (baseline), `holder-stop`,
//! `server-stop`, `server-kill`, `client-kill`; Redis only: `server-kill-no-delay`, `failover`,
//! `failover-replicas`.
//! Names given narrow the run to them; none given means all.
//!
//! Every server is private (started by this binary on free loopback ports, stopped by pid);
//! the machine's shared servers are never touched. Holders are this same binary re-executed as
//! `dlock-chaos holder ...` ([`holder`]). The histories stay in a directory printed at the end.
//!
//! Exit code: 0 when every fenced backend accepted no stale write and issued no fence twice
//! (and no baseline overlapped); 1 otherwise; 2 for bad usage.

#![warn(missing_docs)]
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]

pub mod checker;
pub mod history;
pub mod holder;
pub mod proxy;
pub mod register;
pub mod scenario;
pub mod servers;

use std::fmt::Write as _;
use std::process::ExitCode;
use std::time::Instant;

use scenario::{Backend, Fault, Timing};

/// What the command line asked for.
#[derive(Debug, PartialEq)]
struct Options {
    quick: bool,
    report: Option<std::path::PathBuf>,
    backends: Vec<Backend>,
    faults: Vec<Fault>,
}

const USAGE: &str = "usage: dlock-chaos [--quick] [--report FILE] [redis|mysql|postgres|zookeeper|etcd ...] \
                     [none|holder-stop|server-stop|server-kill|server-kill-no-delay|client-kill|failover|failover-replicas ...]";

fn parse_options(args: &[String]) -> Result<Options, String> {
    let mut opts = Options {
        quick: false,
        report: None,
        backends: Vec::new(),
        faults: Vec::new(),
    };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--quick" => opts.quick = true,
            "--report" => {
                let file = it.next().ok_or("--report needs a file")?;
                opts.report = Some(file.into());
            }
            "-h" | "--help" => return Err(String::new()),
            name => {
                if let Some(b) = Backend::ALL.into_iter().find(|b| b.name() == name) {
                    opts.backends.push(b);
                } else if let Some(f) = Fault::ALL.into_iter().find(|f| f.name() == name) {
                    opts.faults.push(f);
                } else {
                    return Err(format!("unknown argument {name:?}"));
                }
            }
        }
    }
    if opts.backends.is_empty() {
        opts.backends = Backend::ALL.to_vec();
    }
    if opts.faults.is_empty() {
        opts.faults = Fault::ALL
            .into_iter()
            .filter(|f| !(opts.quick && *f == Fault::None))
            .collect();
    }
    Ok(opts)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().is_some_and(|a| a == "holder") {
        return match holder::HolderConfig::parse(&args[1..]).and_then(|c| holder::run(&c)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("dlock-chaos holder: {e}");
                ExitCode::from(2)
            }
        };
    }
    let opts = match parse_options(&args) {
        Ok(opts) => opts,
        Err(e) if e.is_empty() => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("{e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    suite(&opts)
}

fn suite(opts: &Options) -> ExitCode {
    let timing = if opts.quick {
        Timing::quick()
    } else {
        Timing::full()
    };
    let base = std::env::temp_dir().join(format!("dlock-chaos-{}", std::process::id()));
    let plan: Vec<(Backend, Fault)> = opts
        .backends
        .iter()
        .flat_map(|&b| {
            opts.faults
                .iter()
                .filter(move |f| f.applies_to(b))
                .map(move |&f| (b, f))
        })
        .collect();
    let started = Instant::now();
    let mut results = Vec::new();
    for (i, &(backend, fault)) in plan.iter().enumerate() {
        eprint!(
            "[{}/{}] {} {} ... ",
            i + 1,
            plan.len(),
            backend.name(),
            fault.name()
        );
        let result = scenario::run(backend, fault, &timing, &base);
        let summary = match &result.row.outcome {
            checker::Outcome::Checked(r) => r.verdict(true, fault == Fault::None).0,
            checker::Outcome::NotAvailable(why) => format!("not available: {why}"),
            checker::Outcome::Broken(why) => format!("BROKEN: {why}"),
        };
        eprintln!("{summary} ({:.1} s)", result.elapsed.as_secs_f64());
        results.push(result);
    }
    let elapsed = started.elapsed();

    let rows: Vec<checker::Row> = results.iter().map(|r| r.row.clone()).collect();
    let failed = rows.iter().any(checker::Row::failed);
    let mut md = String::new();
    let command = std::iter::once("cargo run --release -p dlock-chaos".to_owned())
        .chain((std::env::args().len() > 1).then(|| "--".to_owned()))
        .chain(std::env::args().skip(1))
        .collect::<Vec<_>>()
        .join(" ");
    let _ = writeln!(md, "# dlock chaos suite: last run\n");
    let _ = writeln!(md, "- command: `{command}`");
    let _ = writeln!(md, "- date: {} (UTC)", utc_now());
    if let Some(rev) = dlock_revision() {
        let _ = writeln!(md, "- dlock: {rev}");
    }
    let _ = writeln!(
        md,
        "- {} holder processes, lease (fixed ttl) {:.1} s, pause in the critical section {} ms, \
         ZooKeeper session {:.1} s, stops of {:.1} s; wall time {:.0} s",
        timing.holders,
        timing.ttl.as_secs_f64(),
        timing.pause.as_millis(),
        timing.zk_session.as_secs_f64(),
        timing.stopped_for.as_secs_f64(),
        elapsed.as_secs_f64()
    );
    let _ = writeln!(
        md,
        "- result: {}\n",
        if failed {
            "**FAIL** (exit code 1)"
        } else {
            "pass (exit code 0)"
        }
    );
    md.push_str(&checker::render_table(&rows));
    md.push_str(LEGEND);
    md.push_str("\n## What each fault did\n\n");
    for r in &results {
        let _ = writeln!(
            md,
            "- **{} / {}** ({:.1} s)",
            r.row.backend,
            r.row.fault,
            r.elapsed.as_secs_f64()
        );
        md.push_str(&scenario::notes_markdown(r));
    }
    let _ = writeln!(md, "\nHistories: `{}`", base.display());
    println!("{md}");
    if let Some(path) = &opts.report {
        if let Err(e) = std::fs::write(path, &md) {
            eprintln!("cannot write {}: {e}", path.display());
        }
    }
    if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

/// What the columns mean (printed under the table).
const LEGEND: &str = "
Columns (from the holders' histories; times are CLOCK_MONOTONIC, comparable across processes):
*overlapping sections*: pairs of critical sections (acquire to release) of two holders that
overlapped in time — a fault that bites produces them; *stale writes accepted*: writes the fenced
register accepted after a higher fence had been granted to another holder (must be 0);
*fences issued twice*: acquisitions that got a fence another acquisition already had (must be 0);
*fences backwards*: acquisitions whose fence was lower than one granted before (the register then
refuses them); *refused by register*: reads and writes refused for a lower fence; *lost / errors*:
releases that found the lease gone / client errors recorded (acquire, release); *longest
unavailable*: the longest time without a holder holding the lock within its lease, from the fault's
start to the end of the run (for `none`: from the first acquisition).
";

/// `git log -1` of the workspace the suite was built from, to tie a report to a revision.
fn dlock_revision() -> Option<String> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent()?;
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(root)
        .args(["log", "-1", "--format=%h %s"])
        .output()
        .ok()?;
    let head = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let dirty = std::process::Command::new("git")
        .arg("-C")
        .arg(root)
        .args(["status", "--porcelain", "--", "dlock/src"])
        .output()
        .ok()
        .is_some_and(|o| !o.stdout.is_empty());
    (!head.is_empty()).then(|| {
        let head: String = head.chars().take(90).collect();
        if dirty {
            format!("`{head}` plus uncommitted changes in dlock/src")
        } else {
            format!("`{head}`")
        }
    })
}

/// The current UTC date and time, `YYYY-MM-DD HH:MM`.
fn utc_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Days since 1970-01-01 to a civil date (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_narrow_the_run() {
        let args = |s: &str| s.split_whitespace().map(str::to_owned).collect::<Vec<_>>();
        let all = parse_options(&[]).expect("no args");
        assert_eq!(all.backends, Backend::ALL.to_vec());
        assert_eq!(all.faults.len(), Fault::ALL.len());
        let some = parse_options(&args("--quick redis server-kill")).expect("args");
        assert!(some.quick);
        assert_eq!(some.backends, vec![Backend::Redis]);
        assert_eq!(some.faults, vec![Fault::ServerKill]);
        let quick = parse_options(&args("--quick")).expect("args");
        assert!(!quick.faults.contains(&Fault::None));
        assert!(parse_options(&args("bogus")).is_err());
        assert!(parse_options(&args("--report")).is_err());
    }

    #[test]
    fn the_date_is_a_date() {
        let d = utc_now();
        assert_eq!(d.len(), 16, "{d}");
        assert!(d.starts_with("20"), "{d}");
    }
}
