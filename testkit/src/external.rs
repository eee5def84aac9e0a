//! The one rule for tests that need something from outside the workspace (Mosquitto, Docker,
//! systemd, a tmpfs, Prometheus, ...): when it is missing, the test says so loudly and skips;
//! with `FLEET_REQUIRE_EXTERNAL=1` (as `.ci/run` sets) it fails instead, so CI never passes a
//! test that did not run.

use std::path::PathBuf;

/// The variable that turns a skip into a failure.
pub const REQUIRE_EXTERNAL: &str = "FLEET_REQUIRE_EXTERNAL";

/// Whether missing external servers fail tests (`FLEET_REQUIRE_EXTERNAL=1`).
pub fn required() -> bool {
    std::env::var(REQUIRE_EXTERNAL).as_deref() == Ok("1")
}

/// Skips the calling test with a loud notice naming `why`, or panics with it under
/// `FLEET_REQUIRE_EXTERNAL=1`. The caller returns right after.
pub fn skip_or_fail(why: &str) {
    if required() {
        panic!("{why}; {REQUIRE_EXTERNAL}=1 makes this a failure");
    }
    eprintln!("\n!!!!! SKIPPED: {why} !!!!!\n");
}

/// The path of tool `name` (the first existing `candidates` path, else on `PATH`), or None
/// after [`skip_or_fail`].
pub fn require_tool(name: &str, candidates: &[&str]) -> Option<PathBuf> {
    let found = candidates
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .or_else(|| {
            let path = std::env::var_os("PATH")?;
            std::env::split_paths(&path)
                .map(|d| d.join(name))
                .find(|p| p.is_file())
        });
    if found.is_none() {
        skip_or_fail(&format!(
            "{name} is not installed: this test needs it (apt-get install {name})"
        ));
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_tools_on_the_path_and_refuses_missing_ones() {
        assert!(require_tool("sh", &[]).is_some());
        let missing = std::panic::catch_unwind(|| {
            require_tool("fleet-no-such-tool", &["/nonexistent/fleet-no-such-tool"])
        });
        // Under FLEET_REQUIRE_EXTERNAL=1 a missing tool fails the test; otherwise it is None.
        match missing {
            Ok(found) => assert!(!required() && found.is_none()),
            Err(_) => assert!(required()),
        }
    }
}
