//! systemd's readiness protocol (`Type=notify`, `NotifyAccess=all`): a process that starts
//! serving sends `READY=1` and `MAINPID=<its pid>`, so after a binary upgrade systemd follows
//! the new process instead of stopping the service when the old one exits. Without
//! `$NOTIFY_SOCKET` (not under systemd) nothing is sent.

use std::os::unix::net::UnixDatagram;

/// Send `message` to systemd, if it asked for notifications. Failures are logged only.
pub fn notify(message: &str) {
    let Some(socket) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    if let Err(e) = send(&socket, message) {
        log::warn!("cannot notify systemd ({}): {e}", socket.to_string_lossy());
    }
}

fn send(socket: &std::ffi::OsStr, message: &str) -> std::io::Result<()> {
    let datagram = UnixDatagram::unbound()?;
    let bytes = socket.as_encoded_bytes();
    if let Some(name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
        datagram.send_to_addr(message.as_bytes(), &addr)?;
    } else {
        datagram.send_to(message.as_bytes(), socket)?;
    }
    Ok(())
}

/// This process serves now (after taking the listeners over, when upgrading).
pub fn ready() {
    notify(&format!("READY=1\nMAINPID={}", std::process::id()));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_reaches_a_path_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let listener = UnixDatagram::bind(&path).unwrap();
        send(path.as_os_str(), "READY=1\nMAINPID=7").unwrap();
        let mut buf = [0u8; 64];
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1\nMAINPID=7");
    }
}
