//! The password and ACL files that make an external Mosquitto enforce FleetD's topic rules: a
//! device (its user name is its device id) may publish only `fleet/<its id>/status|metrics|logs`
//! and read only `fleet/<its id>/cmd|req` and `fleet/_controller/status`; API tokens (user
//! `_token-<id>`, the token as password) may read statuses, logs and presence; the controller
//! (`_fleetd`) is the only user with access to everything. Passwords are in Mosquitto's own
//! PBKDF2-SHA512 form (`$7$`), so Mosquitto never sees a plaintext password and fleetd never
//! stores one for devices or tokens.

use fleet_schema::trust::keys::{random_bytes, KeyError};
use fleet_schema::trust::tokens::CONTROLLER_USERNAME;
use std::fmt::Write as _;
use std::num::NonZeroU32;

/// PBKDF2 iterations Mosquitto's `mosquitto_passwd` uses by default.
pub const ITERATIONS: u32 = 101;

const SALT_LEN: usize = 12;

/// Standard base64 with padding (Mosquitto's encoding of salt and hash).
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn derive(password: &str, salt: &[u8], iterations: NonZeroU32) -> [u8; 64] {
    let mut out = [0u8; 64];
    ring::pbkdf2::derive(
        ring::pbkdf2::PBKDF2_HMAC_SHA512,
        iterations,
        salt,
        password.as_bytes(),
        &mut out,
    );
    out
}

/// `password` in Mosquitto's password-file form, `$7$101$<salt>$<hash>`, with a fresh salt.
pub fn hash_password(password: &str) -> Result<String, KeyError> {
    let salt: [u8; SALT_LEN] = random_bytes()?;
    Ok(hash_with_salt(password, &salt))
}

fn hash_with_salt(password: &str, salt: &[u8]) -> String {
    let iterations = NonZeroU32::new(ITERATIONS).expect("ITERATIONS is not zero");
    format!(
        "$7${ITERATIONS}${}${}",
        base64(salt),
        base64(&derive(password, salt, iterations))
    )
}

/// A user of the password file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// User name (a device id, `_token-<id>` or `_fleetd`).
    pub name: String,
    /// Its `$7$` hash.
    pub hash: String,
}

/// The two files, ready to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Files {
    /// `password_file` content.
    pub passwd: String,
    /// `acl_file` content.
    pub acl: String,
}

/// Renders both files: the controller first, then API tokens, then devices.
pub fn render(controller: &User, tokens: &[User], devices: &[User]) -> Files {
    let mut passwd = String::new();
    for u in std::iter::once(controller).chain(tokens).chain(devices) {
        let _ = writeln!(passwd, "{}:{}", u.name, u.hash);
    }
    let mut acl = String::from(
        "# Written by fleetd on every enrollment and token change; edits are overwritten.\n\
         # The controller reads and writes every FleetD topic.\n",
    );
    let _ = writeln!(acl, "user {CONTROLLER_USERNAME}\ntopic readwrite fleet/#\n");
    acl.push_str(
        "# API tokens (fleetctl, CI, dashboards): statuses, logs and presence, read only; CI\n\
         # requests, plain or signed with the token's own id (fleetd checks the token's scope),\n\
         # and the token's own CI replies.\n",
    );
    for t in tokens {
        let id = t.name.strip_prefix("_token-").unwrap_or(&t.name);
        let _ = writeln!(
            acl,
            "user {}\ntopic read fleet/+/status\ntopic read fleet/+/logs\ntopic read fleet/_controller/status\n\
             topic write fleet/_ci/requests\ntopic write fleet/_ci/requests/{id}/+\n\
             topic read fleet/_ci/replies/{}/#\n",
            t.name, t.name
        );
    }
    acl.push_str(
        "# Every device: its user name is its device id (%u). Rules for all users follow.\n\
         pattern write fleet/%u/status\n\
         pattern write fleet/%u/metrics\n\
         pattern write fleet/%u/logs\n\
         pattern read fleet/%u/cmd\n\
         pattern read fleet/%u/req\n\
         pattern read fleet/_controller/status\n",
    );
    Files { passwd, acl }
}

/// Largest packet Mosquitto should accept: what the embedded broker's front admits (FleetD's
/// payload cap plus the envelope and headers), with room for the fixed header.
pub const MOSQUITTO_MAX_PACKET: usize = fleet_broker::limits::DEFAULT_MAX_PACKET + 5;

/// The `mosquitto.conf` lines that put the files in force.
pub fn conf_snippet(dir: &str) -> String {
    format!(
        "# FleetD: only enrolled devices, API tokens and fleetd may connect; topics per ACL.\n\
         allow_anonymous false\n\
         password_file {dir}/fleet.passwd\n\
         acl_file {dir}/fleet.acl\n\
         # Every device's status reaches fleetd over its one connection: queue well above the fleet size.\n\
         max_queued_messages 1000000\n\
         # Refuse oversized packets before they are queued (a retained or queued one above the\n\
         # clients' limit would disconnect fleetd and agents on every reconnect).\n\
         max_packet_size {max_packet}\n\
         # fleetd reloads these files with SIGHUP (fleetd --mosquitto-reload 'kill -HUP <pid>').\n",
        max_packet = MOSQUITTO_MAX_PACKET
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_the_standard() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
        assert_eq!(base64(&[0xfb, 0xff]), "+/8=");
    }

    #[test]
    fn hashes_have_mosquittos_shape_and_fresh_salts() {
        let a = hash_password("pw").expect("hash");
        let b = hash_password("pw").expect("hash");
        assert_ne!(a, b, "fresh salt");
        let parts: Vec<&str> = a.split('$').collect();
        assert_eq!(parts[..3], ["", "7", "101"]);
        assert_eq!(parts[3].len(), 16, "12-byte salt");
        assert_eq!(parts[4].len(), 88, "64-byte hash");
        // The line `mosquitto_passwd -b pw.txt alice s3cret` wrote (Mosquitto 2.0.11), rebuilt
        // from its salt.
        let salt = hex::decode("46bfd4897f75ef993a652ca5").expect("hex");
        assert_eq!(
            hash_with_salt("s3cret", &salt),
            "$7$101$Rr/UiX9175k6ZSyl$JPYeZzXwG9Y7+aGbcwwgQHQLa1c5tkY/xiRNJaB6mbzHs9i2wEZj7bP/6tiX+GZppi864nFOXOZpI0KD3PxjWg=="
        );
    }

    #[test]
    fn files_list_every_user_and_scope_devices_to_their_own_topics() {
        let user = |n: &str| User {
            name: n.into(),
            hash: "$7$h".into(),
        };
        let f = render(
            &user("_fleetd"),
            &[user("_token-0123abcd")],
            &[user("rpi-1")],
        );
        assert_eq!(f.passwd, "_fleetd:$7$h\n_token-0123abcd:$7$h\nrpi-1:$7$h\n");
        assert!(f.acl.contains("user _fleetd\ntopic readwrite fleet/#"));
        assert!(f
            .acl
            .contains("user _token-0123abcd\ntopic read fleet/+/status"));
        assert!(f.acl.contains("pattern write fleet/%u/status"));
        assert!(!f.acl.contains("pattern write fleet/%u/cmd"));
    }
}
