//! Opening TCP sockets for the control plane's fallback, shared by the
//! runtimes: a listener that gets its port back after a restart, and a
//! connection started without blocking.

use std::io;
use std::net::SocketAddr;

use socket2::{Domain, Protocol, Socket, Type};

/// EINPROGRESS on Linux: a non-blocking connect under way.
const EINPROGRESS: i32 = 115;

/// A non-blocking listener on `local` (address reuse on, so a restarted
/// coordinator gets its port back despite connections in TIME_WAIT).
///
/// # Errors
/// The operating system's error when it cannot bind or listen.
pub fn listen(local: SocketAddr) -> io::Result<std::net::TcpListener> {
    let socket = Socket::new(
        Domain::for_address(local),
        Type::STREAM,
        Some(Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&local.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

/// A non-blocking connection to `remote`, started but usually not finished:
/// the socket turns writable when it is (check `take_error` then).
///
/// # Errors
/// The operating system's error when the connection cannot even start.
pub fn connect(remote: SocketAddr) -> io::Result<std::net::TcpStream> {
    let socket = Socket::new(
        Domain::for_address(remote),
        Type::STREAM,
        Some(Protocol::TCP),
    )?;
    socket.set_nonblocking(true)?;
    socket.set_tcp_nodelay(true)?;
    match socket.connect(&remote.into()) {
        Ok(()) => {}
        Err(err)
            if err.kind() == io::ErrorKind::WouldBlock
                || err.raw_os_error() == Some(EINPROGRESS) => {}
        Err(err) => return Err(err),
    }
    Ok(socket.into())
}
