//! Process-level setup that must happen before serving.

/// Raises the soft limit on open files to the hard limit: the embedded broker holds one socket
/// per device, and a 10,000-device fleet exceeds the usual soft limit of 1024. Returns the new
/// soft limit.
pub fn raise_nofile_limit() -> Result<u64, nix::Error> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
    }
    Ok(hard.max(soft))
}

/// The current soft limit on open files, if it can be read (the HTTP server keeps its
/// connections within half of it).
pub fn nofile_limit() -> Option<u64> {
    nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .ok()
        .map(|(soft, _)| soft)
}
