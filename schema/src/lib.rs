//! FleetD's shared language: the MQTT topics, the CBOR wire messages that travel on them, the JSON
//! types of the HTTP API, and the validation of identifiers. Every component (controller, agent,
//! CLI, simulator) speaks through these types, so this crate does no I/O and has no runtime.
//!
//! Wire types are lenient (unknown fields and enum values from newer peers are accepted); API
//! request types are strict (unknown fields are an error naming the field).

pub mod api;
pub mod app_spec;
pub mod artifact;
pub mod backoff;
pub mod ci;
pub mod codec;
pub mod compat;
pub mod components;
pub mod deployment_state;
pub mod desired;
pub mod device_id;
pub mod image_ref;
pub mod manifest;
pub mod mqtt_url;
pub mod open_enum;
pub mod ready;
pub mod signing;
pub mod status;
pub mod telemetry;
pub mod topic;
pub mod trust;

pub use app_spec::AppSpec;
pub use artifact::{ArtifactMeta, ArtifactType};
pub use codec::{decode, encode, CodecError, DEFAULT_MAX_PAYLOAD};
pub use components::{ComponentStatus, DesiredComponent};
pub use desired::{ArtifactRef, BlueGreenHint, DesiredApp, DesiredState};
pub use device_id::{DeviceId, DeviceIdError};
pub use mqtt_url::{MqttUrl, MqttUrlError};
pub use ready::{ReadyLine, ReadyLineError};
pub use status::{
    AppPhase, AppStatus, ControllerStatus, DeviceStatus, HealthState, Inventory, Refusal,
};
pub use telemetry::{
    AgentRequest, AppMetrics, DeviceMetrics, LogBatch, LogEntry, LogLevel, MetricsBatch,
};
pub use topic::{Qos, Subscription, Topic, TopicError, TopicSpec, MAX_PACKET_SIZE};

/// Milliseconds since the Unix epoch: the one timestamp representation on the wire, so that
/// every peer compares times the same way regardless of its clock library.
pub type UnixMillis = u64;
