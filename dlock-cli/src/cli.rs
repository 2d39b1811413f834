//! The command line: what `dlock --help` shows, parsed by clap.

use std::time::Duration;

use clap::{CommandFactory, Parser, Subcommand};

const ABOUT: &str = "See, free and watch the locks held on a dlock lock service";

const LONG_ABOUT: &str = "\
See, free and watch the locks held on a dlock lock service: who holds what (the owner each \
holder recorded, its fence, the time left on its lease), free a lock whose holder is stuck, and \
watch locks come and go.

The service is named by --url or the environment variable DLOCK_URL; its scheme picks the backend:
  redis://HOST:PORT[/DB]          redis+cluster://HOST:PORT,...   redis+sentinel://HOST:PORT/NAME
  redlock://HOST:PORT,HOST:PORT,...                              mysql:// or mariadb://USER@HOST:PORT/DB
  postgres://USER@HOST:PORT/DB    zookeeper://HOST:PORT/ROOT      etcd://HOST:PORT/ROOT
  (with the `tls` feature also rediss://, redlocks://, etcds://, ?sslmode= / ?ssl-mode=)
Passwords in the URL never appear in a message.

Examples:
  export DLOCK_URL=redis://127.0.0.1:6379
  dlock list order:                  held locks whose key starts with `order:`
  dlock list --json                  every lock, one JSON array (key, owner, fence, expires_in_ms)
  dlock inspect order:42             owner, fence and time left of one lock
  dlock release --force order:42     free it whoever holds it (asks first; --yes does not)
  dlock watch order: --interval 500ms    a live table like `top`; Ctrl-C ends it

Exit status:
  0  done: the lock was found or released, or the list was shown (also when empty)
  1  nothing held: `inspect` or `release` of a free key, or a release that was declined
  2  usage error, bad URL, or the server could not be reached (3 s) or failed";

/// The parsed command line.
#[derive(Debug, Parser)]
#[command(name = "dlock", version, about = ABOUT, long_about = LONG_ABOUT)]
pub struct Cli {
    /// The lock service, e.g. redis://127.0.0.1:6379 (its scheme picks the backend)
    #[arg(
        long,
        env = "DLOCK_URL",
        global = true,
        value_name = "URL",
        hide_env_values = true
    )]
    pub url: Option<String>,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// List the held locks whose key starts with PREFIX (every lock without one)
    #[command(
        long_about = "List the held locks whose key starts with PREFIX (every lock of dlock on \
                      the service without one), sorted by key: KEY, OWNER, FENCE, EXPIRES IN. \
                      Exits 0 when the list was read, also when it is empty."
    )]
    List {
        /// Only keys starting with this (plain text, not a pattern)
        #[arg(default_value = "", hide_default_value = true)]
        prefix: String,
        /// One JSON array of {key, owner, fence, expires_in_ms} (null where unknown)
        #[arg(long)]
        json: bool,
    },

    /// Show who holds KEY: its owner, fence and the time left on its lease
    #[command(
        long_about = "Show who holds KEY: its owner, fence and the time left on its \
                            lease. Exits 0 when it is held, 1 when it is free."
    )]
    Inspect {
        /// The lock's key, exactly
        key: String,
        /// One JSON object {key, owner, fence, expires_in_ms}, or null when the key is free
        #[arg(long)]
        json: bool,
    },

    /// Free KEY whoever holds it (needs --force; asks first unless --yes)
    #[command(
        long_about = "Free KEY whoever holds it. This takes the lock away from another \
                            process, so it needs --force, and it asks on the terminal first \
                            (\"release lock `KEY` held by OWNER? [y/N]\") unless --yes is given. \
                            The old holder is not told at once: its next renewal or release \
                            finds the lock gone, and its lost() signal fires. Use it for a \
                            holder that is stuck; its fence keeps a resource that checks fences \
                            safe if it still writes. Exits 0 when a holder was removed, 1 when \
                            the key was free or the question was answered no."
    )]
    Release {
        /// The lock's key, exactly
        key: String,
        /// Confirm that you mean to free a lock another process holds
        #[arg(long)]
        force: bool,
        /// Do not ask before releasing (for scripts)
        #[arg(long, short = 'y')]
        yes: bool,
    },

    /// A live table of the held locks under PREFIX, refreshed until Ctrl-C
    #[command(
        long_about = "A live table of the held locks under PREFIX, refreshed in place \
                            every --interval like `top` until Ctrl-C. When standard output is \
                            not a terminal, each refresh prints the table again after a blank \
                            line."
    )]
    Watch {
        /// Only keys starting with this (plain text, not a pattern)
        #[arg(default_value = "", hide_default_value = true)]
        prefix: String,
        /// Time between refreshes: 500ms, 1s, 2.5s, 1m (a bare number is seconds)
        #[arg(long, default_value = "1s", value_parser = parse_interval, value_name = "DURATION")]
        interval: Duration,
        /// Stop after N refreshes
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
        count: Option<u64>,
    },
}

/// `200ms`, `1s`, `1.5s`, `2m`, `1h` or a bare number of seconds; at least 10 ms.
fn parse_interval(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let scale = match unit.trim() {
        "ms" => 0.001,
        "" | "s" | "sec" | "secs" => 1.0,
        "m" | "min" | "mins" => 60.0,
        "h" => 3600.0,
        other => {
            return Err(format!(
                "unknown unit `{other}`; write e.g. 500ms, 1s, 2.5s or 1m"
            ))
        }
    };
    let number: f64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration; write e.g. 500ms, 1s, 2.5s or 1m"))?;
    let interval = Duration::try_from_secs_f64(number * scale)
        .map_err(|_| format!("`{text}` is out of range"))?;
    if interval < Duration::from_millis(10) {
        return Err("the interval must be at least 10ms".into());
    }
    Ok(interval)
}

/// Exits with clap's usage-error status (2) and `message`, showing the usage of `subcommand`
/// (or of `dlock` itself).
pub fn usage_error(subcommand: Option<&str>, kind: clap::error::ErrorKind, message: &str) -> ! {
    let mut command = Cli::command();
    command.build();
    match subcommand.and_then(|name| command.find_subcommand_mut(name)) {
        Some(sub) => sub.error(kind, message).exit(),
        None => command.error(kind, message).exit(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn intervals() {
        assert_eq!(parse_interval("200ms"), Ok(Duration::from_millis(200)));
        assert_eq!(parse_interval("1s"), Ok(Duration::from_secs(1)));
        assert_eq!(parse_interval("2"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_interval("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_interval("1m"), Ok(Duration::from_secs(60)));
        assert!(parse_interval("0s").is_err());
        assert!(parse_interval("1ms").is_err());
        assert!(parse_interval("fast").is_err());
        assert!(parse_interval("1x").is_err());
        assert!(parse_interval("").is_err());
        assert!(parse_interval("1e400").is_err());
    }
}
