//! Serving on a tokio runtime (feature `tokio`): [`serve`] drives a [`Server`]
//! through tokio's reactor with `AsyncFd` on the server's descriptor, so a
//! current-thread runtime runs it beside the host's other tasks. The server is
//! not `Send`: run the future on the thread that made the server (a
//! current-thread runtime's main task, or a `LocalSet`).

use std::os::fd::{AsRawFd, RawFd};

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

use super::Server;
use crate::error::Result;

/// The server's descriptor, borrowed for `AsyncFd` (which does not close it).
struct Descriptor(RawFd);

impl AsRawFd for Descriptor {
    fn as_raw_fd(&self) -> RawFd {
        self.0
    }
}

/// Serves until the server shuts down (a client's `shutdown`, or a
/// [`ServerHandle`](super::ServerHandle)'s): waits for its descriptor, its next
/// timer or — while [`Server::has_pending_work`] — only for other tasks to run
/// (`yield_now`), then does one bounded [`Server::process`] turn, and again.
///
/// # Errors
/// A failure of the reactor or of the descriptor's registration with tokio.
///
/// ```no_run
/// # async fn host() -> mgr::Result<()> {
/// use mgr::{Server, ServerConfig};
///
/// let mut server = Server::bind(ServerConfig::new("127.0.0.1:50000".parse()?, b"secret"))?;
/// server.register_builtins();
/// mgr::server::serve(&mut server).await // beside the host's other tasks
/// # }
/// ```
pub async fn serve(server: &mut Server) -> Result<()> {
    // SAFETY: the descriptor is the server's epoll fd, open until the server is
    // dropped; `server` is borrowed for as long as `fd` lives, so it stays open
    // and names the same file throughout.
    let fd =
        unsafe { AsyncFd::register_with_interest(Descriptor(server.fd()), Interest::READABLE) }
            .map_err(std::io::Error::from)?;
    while !server.is_shut_down() {
        match server.timeout() {
            Some(t) if t.is_zero() => tokio::task::yield_now().await,
            Some(t) => {
                if let Ok(ready) = tokio::time::timeout(t, fd.readable()).await {
                    ready?.clear_ready();
                }
            }
            None => fd.readable().await?.clear_ready(),
        }
        server.process()?;
    }
    Ok(())
}
