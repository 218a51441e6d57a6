//! The listening socket: a plain bind, or one shared with another gateway process (`--reuse-port`).

use std::net::SocketAddr;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::TcpListener;

/// How many connections may wait to be accepted.
const BACKLOG: i32 = 1024;

/// Binds `addr`; with `reuse_port`, other processes that set it too may bind the same address (the kernel spreads
/// new connections over them). Must run inside the tokio runtime.
pub fn bind(addr: SocketAddr, reuse_port: bool) -> anyhow::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    #[cfg(unix)]
    socket.set_reuse_address(true)?;
    if reuse_port {
        #[cfg(all(unix, not(any(target_os = "solaris", target_os = "illumos", target_os = "cygwin"))))]
        socket.set_reuse_port(true)?;
        #[cfg(not(all(unix, not(any(target_os = "solaris", target_os = "illumos", target_os = "cygwin")))))]
        anyhow::bail!("--reuse-port needs SO_REUSEPORT, which this platform lacks; give each gateway its own port");
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into()).map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))?;
    socket.listen(BACKLOG)?;
    Ok(TcpListener::from_std(socket.into())?)
}
