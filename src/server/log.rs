//! What a server tells its host's log: connections accepted, refused and
//! closed, failed handshakes, protocol errors, shutdown.
//!
//! Off by default: with no hook set ([`Server::set_log_hook`]) an event costs
//! one branch and builds nothing. An event names the peer (its connection id,
//! address and, on a Unix socket, pid and uid) and never carries a key, a
//! challenge or a request's contents.
//!
//! [`Server::set_log_hook`]: super::Server::set_log_hook

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use super::peer::Peer;

/// One thing worth a log line, handed to the hook set with
/// [`Server::set_log_hook`](super::Server::set_log_hook). Borrowed for the
/// call only. Its `Display` is a one-line description (no timestamp).
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub enum LogEvent<'a> {
    /// A connection was accepted (it starts authenticating).
    Accepted {
        /// Who connected.
        peer: &'a Peer,
    },
    /// A connection was refused or dropped for a limit: `why` names it.
    Refused {
        /// Who was refused.
        peer: &'a Peer,
        /// Which limit (`max_connections`, `max_preauth_connections`,
        /// `handshake_timeout`).
        why: &'static str,
    },
    /// A peer failed the handshake (a wrong key, or a malformed answer).
    AuthFailed {
        /// Who failed.
        peer: &'a Peer,
    },
    /// A frame the server could not get past, or a request it refused to
    /// decode; the connection is answered why and (for the first kind) closed.
    ProtocolError {
        /// Who sent it.
        peer: &'a Peer,
        /// What was wrong (never the request's contents).
        message: &'a str,
    },
    /// A connection closed (for any reason, after the events above too).
    Closed {
        /// Whose connection.
        peer: &'a Peer,
    },
    /// The server is shutting down: it stops listening and closes every
    /// connection.
    Shutdown,
}

impl fmt::Display for LogEvent<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LogEvent::Accepted { peer } => write!(f, "accepted {peer}"),
            LogEvent::Refused { peer, why } => write!(f, "refused {peer}: {why}"),
            LogEvent::AuthFailed { peer } => {
                write!(f, "authentication failed for {peer}")
            }
            LogEvent::ProtocolError { peer, message } => {
                write!(f, "protocol error from {peer}: ")?;
                write_clean(f, message, MAX_MESSAGE)
            }
            LogEvent::Closed { peer } => write!(f, "closed {peer}"),
            LogEvent::Shutdown => f.write_str("shutting down"),
        }
    }
}

/// Characters of a protocol error's message a log line carries at most (the
/// decoder's text can quote what the peer sent).
pub(crate) const MAX_MESSAGE: usize = 200;

/// Writes at most `max` characters of `text`, control characters escaped
/// (`\n` …), so what a peer chose can neither forge a line nor make one long.
pub(crate) fn write_clean(f: &mut fmt::Formatter<'_>, text: &str, max: usize) -> fmt::Result {
    for (i, c) in text.chars().enumerate() {
        if i == max {
            return f.write_str("…");
        }
        if c.is_control() {
            write!(f, "{}", c.escape_default())?;
        } else {
            write!(f, "{c}")?;
        }
    }
    Ok(())
}

/// A host's log hook: called on the server's thread, inside
/// [`Server::process`](super::Server::process) (or `shutdown`), with each
/// event. It must not call back into the server (it has none to call).
pub type LogHook = Box<dyn FnMut(&LogEvent<'_>)>;

/// Where the reactor keeps the hook.
#[derive(Default)]
pub(crate) struct Log(pub(crate) Option<LogHook>);

impl fmt::Debug for Log {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_some() {
            "Log(hook)"
        } else {
            "Log(off)"
        })
    }
}

impl Log {
    /// Hands `event` to the hook, if one is set; a panic in it is caught and
    /// ignored (a log line is not worth the server).
    pub(crate) fn emit(&mut self, event: LogEvent<'_>) {
        if let Some(hook) = &mut self.0 {
            let _ = super::guard::catch(|| hook(&event));
        }
    }
}

/// `time` as RFC 3339 in UTC with milliseconds: `2026-11-29T12:34:56.789Z`.
pub fn rfc3339_utc(time: SystemTime) -> String {
    let d = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, day) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        d.subsec_millis()
    )
}

/// The proleptic Gregorian date `days` after 1970-01-01 (Howard Hinnant's
/// `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timestamps_are_rfc3339_utc() {
        let at = |s: u64, ms: u64| {
            rfc3339_utc(UNIX_EPOCH + Duration::from_secs(s) + Duration::from_millis(ms))
        };
        assert_eq!(at(0, 0), "1970-01-01T00:00:00.000Z");
        assert_eq!(at(951_782_400, 5), "2000-02-29T00:00:00.005Z");
        assert_eq!(at(1_709_251_199, 999), "2024-02-29T23:59:59.999Z");
        assert_eq!(at(4_102_444_800, 0), "2100-01-01T00:00:00.000Z");
    }

    #[test]
    fn what_a_peer_chose_cannot_forge_or_stretch_a_line() {
        use super::super::context::ConnId;
        let peer = Peer {
            conn: ConnId::from_raw(1),
            addr: super::super::peer::PeerAddr::Unix(Some("/tmp/a\nforged".into())),
            pid: None,
            uid: None,
            gid: None,
        };
        let long = "x\n".repeat(1000);
        let line = LogEvent::ProtocolError {
            peer: &peer,
            message: &long,
        }
        .to_string();
        assert!(!line.contains('\n'), "{line}");
        assert!(line.contains("unix:/tmp/a\\nforged"), "{line}");
        assert!(line.chars().count() < 2 * MAX_MESSAGE + 100, "{line}");
        assert!(line.ends_with('…'));
    }
}
