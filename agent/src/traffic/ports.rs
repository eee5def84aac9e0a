//! Ports of a blue-green instance: each instance of an app whose traffic the agent switches
//! listens on its own loopback port per service port, learns it from its environment (`PORT`
//! for the first service port, `FLEET_PORT_<service port>` for each), and its health probe on a
//! service port is sent to that internal port instead.

use fleet_schema::app_spec::{HealthCheck, ProbeKind};
use std::collections::BTreeMap;

/// The environment that tells an instance where to listen.
pub fn port_env(ports: &BTreeMap<u16, u16>, service: &[u16]) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = ports
        .iter()
        .map(|(s, i)| (format!("FLEET_PORT_{s}"), i.to_string()))
        .collect();
    if let Some(first) = service.first().and_then(|s| ports.get(s)) {
        env.push(("PORT".into(), first.to_string()));
    }
    env
}

/// The health check with a probe on a service port redirected to the instance's own port.
pub fn remap_probe(mut check: HealthCheck, ports: &BTreeMap<u16, u16>) -> HealthCheck {
    match &mut check.probe {
        ProbeKind::Http { port, .. } | ProbeKind::Tcp { port } => {
            if let Some(internal) = ports.get(port) {
                *port = *internal;
            }
        }
        ProbeKind::Exec { .. } | ProbeKind::Unsupported => {}
    }
    check
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_reach_the_instance_and_its_probe() {
        let ports = BTreeMap::from([(8080, 40001), (9090, 40002)]);
        let env = port_env(&ports, &[8080, 9090]);
        assert!(env.contains(&("PORT".into(), "40001".into())));
        assert!(env.contains(&("FLEET_PORT_9090".into(), "40002".into())));
        let check = HealthCheck {
            probe: ProbeKind::Http {
                path: "/health".into(),
                port: 8080,
                expected_status: None,
            },
            interval_ms: 1000,
            timeout_ms: 500,
            retries: 1,
            start_period_ms: 0,
        };
        let remapped = remap_probe(check.clone(), &ports);
        assert!(matches!(
            remapped.probe,
            ProbeKind::Http { port: 40001, .. }
        ));
        assert_eq!(remap_probe(check.clone(), &BTreeMap::new()), check);
    }
}
