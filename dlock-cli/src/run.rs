//! What each subcommand does, and how it ends (the exit status).

use std::future::Future;
use std::io::{IsTerminal, Write};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::error::ErrorKind;
use dlock::{LockInfo, Locker};

use crate::cli::{usage_error, Cli, Command};
use crate::output::{human, json_array, json_object, mask_password, none_held, printable, table};

/// Done: the lock was found or released, the list was shown (also when empty).
pub const EXIT_DONE: u8 = 0;
/// Nothing held: `inspect` or `release` of a free key, or a declined release.
pub const EXIT_NOT_HELD: u8 = 1;
/// A usage error (clap's status too), a bad URL, an unreachable or failing server.
pub const EXIT_ERROR: u8 = 2;

/// How long `connect` may take: an unreachable server fails well within 5 s (3 s leaves room
/// for a loaded machine to start the process and print).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long one request (inspect, list, force-release) may take once connected.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long closing the connections may take at the end.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// Why a command stopped early.
enum Stop {
    /// Print this (after `dlock: error: `) and exit 2.
    Failed(String),
    /// Standard output was closed (`dlock list | head -1`): stop quietly.
    StdoutClosed,
}

fn fail(message: impl Into<String>) -> Stop {
    Stop::Failed(message.into())
}

/// Runs the command line; returns the exit status.
pub async fn run(cli: Cli) -> u8 {
    // What needs no server is checked before connecting.
    if let Command::Release {
        force: false, key, ..
    } = &cli.command
    {
        usage_error(
            Some("release"),
            ErrorKind::MissingRequiredArgument,
            &format!(
                "releasing lock `{}` from here takes it from whoever holds it, which is someone \
                 else's lock: pass --force to mean it (dlock release --force KEY)",
                printable(key)
            ),
        );
    }
    let Some(url) = cli.url.filter(|url| !url.trim().is_empty()) else {
        usage_error(
            None,
            ErrorKind::MissingRequiredArgument,
            "no lock service given: pass --url URL or set DLOCK_URL, e.g. \
             --url redis://127.0.0.1:6379",
        );
    };

    let result = match Service::connect(&url).await {
        Ok(service) => {
            let result = match cli.command {
                Command::List { prefix, json } => list(&service, &prefix, json).await,
                Command::Inspect { key, json } => inspect(&service, &key, json).await,
                Command::Release { key, yes, .. } => release(&service, &key, yes).await,
                Command::Watch {
                    prefix,
                    interval,
                    count,
                } => watch(&service, &prefix, interval, count).await,
            };
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, service.locker.close()).await;
            result
        }
        Err(stop) => Err(stop),
    };
    match result {
        Ok(code) => code,
        Err(Stop::StdoutClosed) => EXIT_DONE,
        Err(Stop::Failed(message)) => {
            eprintln!("dlock: error: {message}");
            EXIT_ERROR
        }
    }
}

/// A connected lock service and its URL as messages show it (password masked).
struct Service {
    locker: Locker,
    url: String,
}

impl Service {
    /// Connects within [`CONNECT_TIMEOUT`], or says what to check.
    async fn connect(url: &str) -> Result<Service, Stop> {
        let shown = mask_password(url);
        match tokio::time::timeout(CONNECT_TIMEOUT, Locker::connect(url)).await {
            Ok(Ok(locker)) => Ok(Service { locker, url: shown }),
            // The library's message names the URL (masked) and the accepted schemes.
            Ok(Err(e @ dlock::Error::InvalidUrl { .. }))
                if e.to_string().contains("not compiled") =>
            {
                Err(fail(format!(
                    "{e}\nthis `dlock` was built without that backend: build dlock-cli with its \
                     default features (every backend) or name the backend's feature"
                )))
            }
            Ok(Err(e @ dlock::Error::InvalidUrl { .. })) => {
                Err(fail(format!("{e}\ncheck --url / DLOCK_URL")))
            }
            // Backends name the URL themselves, with what they found (refused, credentials).
            Ok(Err(e)) if e.to_string().contains(&shown) => {
                Err(fail(format!("{e}\ncheck --url / DLOCK_URL")))
            }
            Ok(Err(e)) => Err(fail(format!(
                "cannot connect to {shown}: {e}\nis the server running there, and are the URL and \
                 its credentials right? check --url / DLOCK_URL"
            ))),
            Err(_) => Err(fail(format!(
                "no answer from {shown} within {}s: is the server running? check --url / DLOCK_URL",
                CONNECT_TIMEOUT.as_secs()
            ))),
        }
    }

    /// Runs one request within [`REQUEST_TIMEOUT`]; `what` names it in errors.
    async fn ask<T>(
        &self,
        what: &str,
        request: impl Future<Output = dlock::Result<T>>,
    ) -> Result<T, Stop> {
        match tokio::time::timeout(REQUEST_TIMEOUT, request).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(fail(format!("{what} at {}: {e}", self.url))),
            Err(_) => Err(fail(format!(
                "no answer from {} within {}s to {what}: is the server still running? check \
                 --url / DLOCK_URL",
                self.url,
                REQUEST_TIMEOUT.as_secs()
            ))),
        }
    }
}

/// Writes `text` to standard output at once.
fn emit(text: &str) -> Result<(), Stop> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Err(Stop::StdoutClosed),
        Err(e) => Err(fail(format!("cannot write to standard output: {e}"))),
    }
}

async fn list(service: &Service, prefix: &str, json: bool) -> Result<u8, Stop> {
    let held = service.ask("list", service.locker.list(prefix)).await?;
    emit(&if json {
        json_array(&held)
    } else if held.is_empty() {
        none_held(prefix)
    } else {
        table(&held)
    })?;
    Ok(EXIT_DONE)
}

async fn inspect(service: &Service, key: &str, json: bool) -> Result<u8, Stop> {
    match service.ask("inspect", service.locker.inspect(key)).await? {
        Some(info) if json => emit(&format!("{}\n", json_object(&info))).map(|()| EXIT_DONE),
        Some(info) => emit(&table(std::slice::from_ref(&info))).map(|()| EXIT_DONE),
        None if json => emit("null\n").map(|()| EXIT_NOT_HELD),
        None => emit(&format!(
            "lock `{}` is free: nobody holds it\n",
            printable(key)
        ))
        .map(|()| EXIT_NOT_HELD),
    }
}

/// The holder as messages name it.
fn holder(info: &LockInfo) -> String {
    info.owner
        .as_deref()
        .map_or_else(|| "an unknown owner".into(), printable)
}

async fn release(service: &Service, key: &str, yes: bool) -> Result<u8, Stop> {
    let shown_key = printable(key);
    let Some(info) = service.ask("inspect", service.locker.inspect(key)).await? else {
        emit(&format!("lock `{shown_key}` is free: nothing to release\n"))?;
        return Ok(EXIT_NOT_HELD);
    };
    if !yes {
        let question = format!(
            "release lock `{shown_key}` held by {}? [y/N] ",
            holder(&info)
        );
        if !confirm(question).await? {
            emit(&format!("lock `{shown_key}` not released\n"))?;
            return Ok(EXIT_NOT_HELD);
        }
        // Answering may have taken a while: free only the holder the question named.
        match service.ask("inspect", service.locker.inspect(key)).await? {
            None => {
                emit(&format!(
                    "lock `{shown_key}` was released meanwhile: nothing to release\n"
                ))?;
                return Ok(EXIT_NOT_HELD);
            }
            Some(now) if now.owner != info.owner || now.fence != info.fence => {
                emit(&format!(
                    "lock `{shown_key}` changed hands while you answered (now held by {}): \
                     nothing released; run the command again\n",
                    holder(&now)
                ))?;
                return Ok(EXIT_NOT_HELD);
            }
            Some(_) => {}
        }
    }
    if service
        .ask("force-release", service.locker.force_release(key))
        .await?
    {
        let fence = info
            .fence
            .map_or_else(String::new, |f| format!(", fence {f}"));
        emit(&format!(
            "released lock `{shown_key}` (held by {}{fence}); its holder finds the lock gone at \
             its next renewal or release\n",
            holder(&info)
        ))?;
        Ok(EXIT_DONE)
    } else {
        emit(&format!(
            "lock `{shown_key}` was released meanwhile: nothing to release\n"
        ))?;
        Ok(EXIT_NOT_HELD)
    }
}

/// Asks `question` on standard error and reads the answer from standard input: `y` or `yes`
/// (any case) is yes; anything else, or no input at all, is no.
async fn confirm(question: String) -> Result<bool, Stop> {
    let answer = tokio::task::spawn_blocking(move || {
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "{question}");
        let _ = err.flush();
        let mut answer = String::new();
        match std::io::stdin().read_line(&mut answer) {
            Ok(0) => {
                let _ = writeln!(
                    err,
                    "\nno answer (standard input is closed); pass --yes to release without asking"
                );
                Ok(false)
            }
            Ok(_) => Ok(matches!(
                answer.trim().to_ascii_lowercase().as_str(),
                "y" | "yes"
            )),
            Err(e) => Err(format!(
                "cannot read the answer from standard input: {e}; pass --yes to release without \
                 asking"
            )),
        }
    })
    .await;
    match answer {
        Ok(answer) => answer.map_err(fail),
        Err(e) => Err(fail(format!("cannot ask for confirmation: {e}"))),
    }
}

/// Clear to the end of the line (ANSI).
const CLEAR_LINE: &str = "\x1b[K";
/// Cursor to the top left corner (ANSI).
const HOME: &str = "\x1b[H";
/// Clear from the cursor to the end of the screen (ANSI).
const CLEAR_BELOW: &str = "\x1b[J";

async fn watch(
    service: &Service,
    prefix: &str,
    interval: Duration,
    count: Option<u64>,
) -> Result<u8, Stop> {
    let terminal = std::io::stdout().is_terminal();
    // Ctrl-C ends the watch; if its handler cannot be installed, Ctrl-C ends the process.
    let stop = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    tokio::pin!(stop);
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let under = if prefix.is_empty() {
        String::new()
    } else {
        format!(" under `{}`", printable(prefix))
    };
    let mut shown = 0u64;
    loop {
        tokio::select! {
            biased;
            () = &mut stop => break,
            _ = ticks.tick() => {}
        }
        let listed = tokio::select! {
            biased;
            () = &mut stop => break,
            listed = tokio::time::timeout(REQUEST_TIMEOUT, service.locker.list(prefix)) => listed,
        };
        let (summary, body) = match listed {
            Ok(Ok(held)) if held.is_empty() => ("0 locks".to_owned(), none_held(prefix)),
            Ok(Ok(held)) => (
                format!(
                    "{} lock{}",
                    held.len(),
                    if held.len() == 1 { "" } else { "s" }
                ),
                table(&held),
            ),
            // A server that fails or stops answering may come back: say so and keep watching.
            Ok(Err(e @ dlock::Error::Backend { .. })) => (
                "error".to_owned(),
                format!("list at {}: {e}\n", service.url),
            ),
            Ok(Err(e)) => return Err(fail(format!("list at {}: {e}", service.url))),
            Err(_) => (
                "error".to_owned(),
                format!(
                    "no answer from {} within {}s; still trying\n",
                    service.url,
                    REQUEST_TIMEOUT.as_secs()
                ),
            ),
        };
        let title = format!(
            "{summary}{under} at {} - {} UTC, every {}{}\n",
            service.url,
            clock(),
            human(interval),
            if count.is_none() {
                "; Ctrl-C stops"
            } else {
                ""
            }
        );
        let frame = format!("{title}\n{body}");
        if terminal {
            // Redraw in place: home, each line over the old one, clear what is left below.
            let mut screen = String::from(HOME);
            for line in frame.lines() {
                screen.push_str(line);
                screen.push_str(CLEAR_LINE);
                screen.push('\n');
            }
            screen.push_str(CLEAR_BELOW);
            emit(&screen)?;
        } else if shown == 0 {
            emit(&frame)?;
        } else {
            emit(&format!("\n{frame}"))?;
        }
        shown += 1;
        if count.is_some_and(|count| shown >= count) {
            break;
        }
    }
    Ok(EXIT_DONE)
}

/// The time of day in UTC, `HH:MM:SS`.
fn clock() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    format!(
        "{:02}:{:02}:{:02}",
        secs % 86_400 / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}
