//! A simulated device for end-to-end tests that need a device without running an agent: it
//! enrolls over HTTP exactly as the agent does (its own key, a signed request, the key
//! exchange), connects with the credentials it got, and seals what it publishes with its key.
//! Forgery tests use its parts to build messages an attacker could make.

use super::{Access, MqttClient};
use fleet_schema::trust::device::DeviceEnd;
use fleet_schema::trust::enroll::{complete, EnrollRequest, EnrollResponse};
use fleet_schema::trust::tokens::agent_client_id;
use fleet_schema::trust::SigningKey;
use fleet_schema::{DesiredState, DeviceId, DeviceStatus, Inventory, MqttUrl, Topic};
use std::time::Duration;

/// An enrolled, connected simulated device.
pub struct SimDevice {
    /// Its id.
    pub id: String,
    end: DeviceEnd,
    /// Its MQTT connection (client id `fleet-agent-<id>`, its own credentials, no last will).
    pub mqtt: MqttClient,
    port: u16,
}

/// The answer to an enrollment request: HTTP status and body.
pub fn enroll_request(access: &Access, token: Option<&str>, req: &EnrollRequest) -> (u16, String) {
    super::post_as(
        &format!("{}/api/v1/enroll", access.server),
        token,
        "application/json",
        serde_json::to_vec(req).expect("request JSON").as_slice(),
    )
}

/// A fresh key and a signed enrollment request for `id`.
pub fn new_request(
    id: &str,
    at: u64,
) -> (
    SigningKey,
    EnrollRequest,
    fleet_schema::trust::enroll::Exchange,
) {
    let key = SigningKey::generate().expect("keygen").0;
    let (req, ex) = EnrollRequest::new_signed(
        &DeviceId::parse(id).expect("valid device id"),
        &key,
        Inventory::default(),
        "sim",
        at,
    )
    .expect("request");
    (key, req, ex)
}

/// The broker port of an access.
pub fn port_of(access: &Access) -> u16 {
    access.mqtt_url.parse::<MqttUrl>().expect("broker URL").port
}

impl SimDevice {
    /// Enrolls `id` with the access's enrollment token and connects.
    pub fn enroll(access: &Access, id: &str) -> SimDevice {
        let (key, req, exchange) = new_request(id, super::procs::now_ms());
        let (status, body) = enroll_request(access, Some(&access.enroll_token), &req);
        assert_eq!(status, 200, "enroll {id}: {body}");
        let resp: EnrollResponse = serde_json::from_str(&body).expect("enrollment answer");
        let enrolled = complete(&req, exchange, &resp, None).expect("answer verifies");
        Self::connect(
            access,
            id,
            DeviceEnd::new(key, enrolled, super::procs::now_ms()),
        )
    }

    /// Connects an enrolled device.
    pub fn connect(access: &Access, id: &str, end: DeviceEnd) -> SimDevice {
        let port = port_of(access);
        let creds = (
            end.enrolled().mqtt_username.clone(),
            end.enrolled().mqtt_password.clone(),
        );
        // An external broker learns of a new device when fleetd rewrites its password file and
        // reloads it: retry for a while.
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        let mqtt = loop {
            match MqttClient::connect_over(
                port,
                access.ca.as_deref(),
                &agent_client_id(id),
                Some((&creds.0, &creds.1)),
            ) {
                Ok(c) => break c,
                Err(e) if std::time::Instant::now() > deadline => {
                    panic!("device {id} cannot connect: {e}")
                }
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        };
        SimDevice {
            id: id.to_string(),
            end,
            mqtt,
            port,
        }
    }

    /// The device's end of the protocol (key, enrollment, stamps).
    pub fn end(&mut self) -> &mut DeviceEnd {
        &mut self.end
    }

    /// The device's end of the protocol, read only.
    pub fn end_ref(&self) -> &DeviceEnd {
        &self.end
    }

    /// The broker port it is connected to.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Seals `body` for `topic` as this device.
    pub fn seal(&mut self, topic: &str, body: &[u8]) -> Vec<u8> {
        self.end.seal(topic, body).expect("seals")
    }

    /// Publishes a status, sealed, retained, and waits for the broker's PubAck.
    pub fn publish_status(&mut self, status: &DeviceStatus) {
        let topic = Topic::Status(DeviceId::parse(&self.id).expect("valid id")).to_string();
        let body = fleet_schema::encode(status).expect("encode status");
        let sealed = self.seal(&topic, &body);
        self.mqtt.publish(&topic, sealed, true);
    }

    /// Subscribes to its own `cmd` topic.
    pub fn subscribe_cmd(&mut self) {
        let topic = format!("fleet/{}/cmd", self.id);
        self.mqtt.subscribe(&topic);
    }

    /// Opens a payload of its `cmd` topic as a desired state sealed for it by the controller.
    pub fn open_desired(&self, payload: &[u8]) -> Result<DesiredState, String> {
        let topic = format!("fleet/{}/cmd", self.id);
        let opened = self
            .end
            .open(&topic, payload, true)
            .map_err(|e| e.to_string())?;
        fleet_schema::decode(&opened.body, fleet_schema::DEFAULT_MAX_PAYLOAD)
            .map_err(|e| e.to_string())
    }

    /// Waits for a desired state it can open (signed by the controller, for it), within
    /// `timeout`.
    pub fn next_desired(&mut self, timeout: Duration) -> Option<DesiredState> {
        let topic = format!("fleet/{}/cmd", self.id);
        let mut found = None;
        let end = &self.end;
        self.mqtt.wait_for(&topic, timeout, |p| {
            if let Ok(o) = end.open(&topic, &p.payload, true) {
                found = fleet_schema::decode(&o.body, fleet_schema::DEFAULT_MAX_PAYLOAD).ok();
            }
            found.is_some()
        });
        found
    }
}
