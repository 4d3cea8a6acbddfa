//! The shim's messages to the isolator on its report fd: one line each (`S<pid>` while it
//! waits, then a [`ShimReport`]: `OK <shim_pid> <init_pid>` or `ERR <failure as JSON>`, written with
//! the codec the isolator reads it with), and the container it
//! is sent there as one JSON line. Shared by the standby and the run.

use crate::error::ShimError;
use berth_proto::isolator::ShimReport;
use nix::unistd::{read, write};
use std::os::fd::{AsFd, OwnedFd};

/// The fd on which the shim reads its container (one JSON line of `RunArgs`) and answers
/// `OK <shim_pid> <init_pid>` or `ERR <message>`: a socket whose other end is the isolator's.
pub const REPORT_FD: i32 = 3;

pub fn report(fd: &OwnedFd, msg: &str) {
    let _ = write(fd, msg.as_bytes());
}

/// Report a started container: its shim's and its init's pids ([`ShimReport::Started`]).
pub fn report_started(fd: &OwnedFd, shim_pid: u32, init_pid: u32) {
    report(fd, &ShimReport::Started { shim_pid, init_pid }.encode());
}

/// Report a failed create ([`ShimReport::Failed`]: the failure as JSON), one line.
pub fn report_error(fd: &OwnedFd, e: &ShimError) {
    report(fd, &ShimReport::Failed(e.failure()).encode());
}

/// Read up to a newline (`None` at end of file before one); for a fd that carries one line
/// only, as what follows the line in the same read is dropped.
pub fn read_line(fd: &OwnedFd) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match read(fd.as_fd(), &mut buf) {
            Ok(0) => return None,
            Ok(n) => {
                out.extend_from_slice(&buf[..n]);
                if let Some(i) = out.iter().position(|&b| b == b'\n') {
                    out.truncate(i);
                    return Some(out);
                }
            }
            Err(nix::errno::Errno::EINTR) => {}
            Err(_) => return None,
        }
    }
}
