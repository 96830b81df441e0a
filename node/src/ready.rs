//! Readiness notification for systemd (`Type=notify` units).
//!
//! A unit that starts FishChat services in order must know when one is really
//! listening, not just forked. The protocol is one datagram to the socket
//! systemd names in `NOTIFY_SOCKET`; outside systemd this does nothing.

use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

/// Tells systemd the service is ready to serve.
pub fn notify_ready() {
    notify("READY=1\n");
}

/// Tells systemd the service is stopping.
pub fn notify_stopping() {
    notify("STOPPING=1\n");
}

fn notify(state: &str) {
    let Some(socket) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    if let Err(err) = send(&socket.to_string_lossy(), state) {
        tracing::warn!(%err, state = state.trim(), "notifying systemd failed");
    }
}

/// Sends `state` to the notify socket at `path` (`@name` is an abstract socket).
fn send(path: &str, state: &str) -> io::Result<()> {
    let addr = match path.strip_prefix('@') {
        Some(name) => SocketAddr::from_abstract_name(name)?,
        None => SocketAddr::from_pathname(path)?,
    };
    UnixDatagram::unbound()?.send_to_addr(state.as_bytes(), &addr)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_state_reaches_a_path_socket_and_an_abstract_one() {
        let dir = std::env::temp_dir().join(format!("fishchat-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify.sock");
        let _ = std::fs::remove_file(&path);
        let socket = UnixDatagram::bind(&path).unwrap();
        send(path.to_str().unwrap(), "READY=1\n").unwrap();
        let mut buf = [0u8; 64];
        let n = socket.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1\n");
        std::fs::remove_dir_all(&dir).unwrap();

        let name = format!("fishchat-notify-{}", std::process::id());
        let abstract_socket =
            UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(&name).unwrap()).unwrap();
        send(&format!("@{name}"), "STOPPING=1\n").unwrap();
        let n = abstract_socket.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"STOPPING=1\n");
    }
}
