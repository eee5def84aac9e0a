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

/// Descriptors kept for everything but MQTT clients (database, artifact files, HTTP callers,
/// fleetd's own broker connection, log files).
pub const FD_RESERVE: u64 = 4096;

/// Descriptors one MQTT client of the embedded broker may hold: its socket to the front, and
/// the front's loopback connection to rumqttd (both ends in this process).
pub const FDS_PER_MQTT_CONNECTION: u64 = 3;

/// How many MQTT connections fit in an open-file limit of `nofile`: `wanted` when they do,
/// else as many as the limit allows after [`FD_RESERVE`] (at least one).
pub fn fit_mqtt_connections(nofile: u64, wanted: usize) -> usize {
    let room = nofile.saturating_sub(FD_RESERVE) / FDS_PER_MQTT_CONNECTION;
    let fitted = usize::try_from(room).unwrap_or(usize::MAX).max(1);
    wanted.min(fitted)
}

/// How often [`release_free_memory`] runs.
pub const TRIM_INTERVAL: std::time::Duration = std::time::Duration::from_secs(30);

/// Hands memory that was freed back to the operating system. glibc keeps freed memory in its
/// per-thread arenas; with a dozen threads allocating and freeing message buffers, fleetd's
/// resident memory grew by hundreds of megabytes in an hour of `fleet-sim --soak` while its live
/// heap stayed under 10 MiB (heaptrack), and one `malloc_trim(0)` took it from 412 MiB to
/// 172 MiB. A no-op where the C library is not glibc.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    trim();
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn trim() {
    // SAFETY: malloc_trim takes no pointers; it only walks the allocator's own free lists
    // under the allocator's locks, and may be called from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Calls [`release_free_memory`] every [`TRIM_INTERVAL`] until `shutdown`.
pub async fn release_free_memory_periodically(shutdown: tokio_util::sync::CancellationToken) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(TRIM_INTERVAL) => {}
        }
        if let Err(e) = tokio::task::spawn_blocking(release_free_memory).await {
            tracing::warn!(error = %e, "releasing free memory failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fits_connections_under_the_descriptor_budget() {
        assert_eq!(fit_mqtt_connections(1_048_576, 20_000), 20_000);
        assert_eq!(fit_mqtt_connections(20_000, 20_000), 5_301);
        assert_eq!(fit_mqtt_connections(1024, 20_000), 1);
    }
}
