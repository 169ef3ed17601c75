//! Process-level guards of the `cellm` binary: a memory-mapped model file that shrinks or is
//! replaced under the reader raises SIGBUS on the next page touched; that becomes one clear
//! error line and exit status 1 instead of a core dump (FORMAT.md, "Files that change while
//! mapped").

/// Installs the SIGBUS handler. Call once, first thing in `main`.
pub fn install_sigbus_handler() {
    #[cfg(unix)]
    // SAFETY: the handler only calls async-signal-safe functions (write, _exit) on static data.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_sigbus as extern "C" fn(libc::c_int) as libc::sighandler_t;
        action.sa_flags = 0;
        libc::sigemptyset(&mut action.sa_mask);
        libc::sigaction(libc::SIGBUS, &action, std::ptr::null_mut());
    }
}

#[cfg(unix)]
extern "C" fn on_sigbus(_signal: libc::c_int) {
    const MSG: &[u8] = b"error: the model file was truncated or replaced while in use \
(memory-mapped read failed); reopen it\n";
    // SAFETY: write(2) and _exit(2) are async-signal-safe.
    unsafe {
        libc::write(2, MSG.as_ptr().cast(), MSG.len());
        libc::_exit(1);
    }
}

/// True when `e` (or an error it wraps) is a closed pipe on our output, e.g. `cellm inspect
/// --json | head -1`: the reader has all it wants, so that is not a failure.
pub fn is_broken_pipe(e: &anyhow::Error) -> bool {
    use std::io::ErrorKind::BrokenPipe;
    let json_pipe = |j: &serde_json::Error| j.io_error_kind() == Some(BrokenPipe);
    e.chain().any(|c| {
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            // A JSON writer's failure arrives wrapped in an io::Error of kind Other.
            return io.kind() == BrokenPipe
                || io
                    .get_ref()
                    .and_then(|inner| inner.downcast_ref::<serde_json::Error>())
                    .is_some_and(json_pipe);
        }
        c.downcast_ref::<serde_json::Error>().is_some_and(json_pipe)
    })
}
