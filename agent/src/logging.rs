//! The agent's log filter: `RUST_LOG` read as a list of `target=level` directives and bare
//! levels (`info`, `warn,fleet_agent::bus=debug`), without the span and field matching of
//! tracing-subscriber's `EnvFilter`. That filter compiles its directives with the `regex`
//! crate, about 0.2 MB of the binary a small board carries for a feature an agent does not use.

use tracing_subscriber::filter::{LevelFilter, Targets};

/// The level when `RUST_LOG` is unset or empty.
pub const DEFAULT_LEVEL: LevelFilter = LevelFilter::INFO;

/// The filter for a `RUST_LOG` value (`None` when unset). An unusable value is an error naming
/// it and what is accepted, so the caller can say so and fall back to [`DEFAULT_LEVEL`].
pub fn filter(spec: Option<&str>) -> Result<Targets, String> {
    let spec = spec.map(str::trim).unwrap_or_default();
    if spec.is_empty() {
        return Ok(Targets::new().with_default(DEFAULT_LEVEL));
    }
    spec.parse::<Targets>().map_err(|e| {
        format!(
            "invalid RUST_LOG {spec:?} ({e}): expected levels and target=level directives \
             separated by commas, e.g. `info` or `warn,fleet_agent=debug`"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing::Level;

    #[test]
    fn unset_or_empty_logs_info_and_above() {
        for spec in [None, Some(""), Some("  ")] {
            let f = filter(spec).expect("valid");
            assert!(f.would_enable("fleet_agent::bus", &Level::INFO), "{spec:?}");
            assert!(
                !f.would_enable("fleet_agent::bus", &Level::DEBUG),
                "{spec:?}"
            );
        }
    }

    #[test]
    fn a_bare_level_sets_every_target() {
        let f = filter(Some("error")).expect("valid");
        assert!(f.would_enable("rumqttc", &Level::ERROR));
        assert!(!f.would_enable("fleet_agent", &Level::WARN));
    }

    #[test]
    fn target_directives_refine_the_default() {
        let f = filter(Some("warn,fleet_agent::bus=debug")).expect("valid");
        assert!(f.would_enable("fleet_agent::bus", &Level::DEBUG));
        assert!(!f.would_enable("fleet_agent::daemon", &Level::INFO));
        assert!(f.would_enable("fleet_agent::daemon", &Level::WARN));
    }

    #[test]
    fn unusable_values_are_named() {
        let e = filter(Some("fleet_agent=loud")).expect_err("not a level");
        assert!(e.contains("fleet_agent=loud"), "{e}");
    }
}
