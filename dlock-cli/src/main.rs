//! `dlock`: see, free and watch the locks held on a dlock lock service.
//!
//! ```text
//! export DLOCK_URL=redis://127.0.0.1:6379      # or --url; the scheme picks the backend
//! dlock list order:                            # held locks whose key starts with `order:`
//! dlock list --json                            # every lock, one JSON array
//! dlock inspect order:42                       # owner, fence and time left of one lock
//! dlock release --force order:42               # free it whoever holds it (asks first)
//! dlock watch order: --interval 500ms          # a live table, like `top`; Ctrl-C ends it
//! ```
//!
//! Exit status: `0` done (the lock was found or released, the list was shown, even empty);
//! `1` nothing held (`inspect` or `release` of a free key, or a release that was declined);
//! `2` a usage error, a bad URL, or a server that could not be reached or failed.
//!
//! Every operation goes through the library's [`dlock::Locker::inspect`],
//! [`dlock::Locker::list`] and [`dlock::Locker::force_release`]; nothing here knows a backend.

mod cli;
mod output;
mod run;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("dlock: error: cannot start the async runtime: {e}");
            return ExitCode::from(run::EXIT_ERROR);
        }
    };
    let code = runtime.block_on(run::run(args));
    // Whatever a backend left running (a reconnect, a subscription) must not hold the exit up.
    runtime.shutdown_timeout(std::time::Duration::from_millis(200));
    ExitCode::from(code)
}
