//! Ports for test servers.

use std::net::TcpListener;

/// A TCP port free on every address when returned, for an app or container to listen on soon
/// after. It is taken below the kernel's ephemeral range: a port the kernel hands out for
/// `bind(0)` can meanwhile become the source port of some outgoing connection (the agent's, the
/// broker's), and a listener on it then fails for as long as that connection lives (seen as a
/// container engine's "port is already allocated", exit status 125, under CI load).
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let ephemeral_low: u32 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(32768);
    let base = 20_000u32;
    let span = ephemeral_low.saturating_sub(base).max(1_000);
    let start = std::process::id().wrapping_mul(7919) % span;
    for _ in 0..span {
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let port = u16::try_from(base + (start + n) % span).expect("below 65536");
        if TcpListener::bind(("0.0.0.0", port)).is_ok()
            && TcpListener::bind(("127.0.0.1", port)).is_ok()
        {
            return port;
        }
    }
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free local port")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_distinct_and_bindable() {
        let (a, b) = (free_port(), free_port());
        assert_ne!(a, b);
        TcpListener::bind(("127.0.0.1", a)).expect("free");
    }
}
