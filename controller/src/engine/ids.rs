//! Deployment ids: short, unique and sortable by creation, e.g. `d-1712345678901-000042`.
//! Uniqueness comes from the database counter (committed with the deployment), so two
//! deployments in the same millisecond, or after a restart, never collide.

use fleet_schema::UnixMillis;

/// Builds the id of the `seq`-th deployment created at `now`.
pub fn deployment_id(now: UnixMillis, seq: u64) -> String {
    format!("d-{now:013}-{seq:06}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_sort_by_creation() {
        let a = deployment_id(1_700_000_000_000, 9);
        let b = deployment_id(1_700_000_000_000, 10);
        let c = deployment_id(1_700_000_000_001, 11);
        assert!(a < b && b < c, "{a} {b} {c}");
        assert_eq!(a, "d-1700000000000-000009");
    }
}
