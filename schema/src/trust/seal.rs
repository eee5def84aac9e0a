//! The sealed envelope every FleetD message travels in on the bus. The bus is not trusted: a
//! broker that lets anyone publish anywhere (the embedded rumqttd has no per-topic
//! authorization) must still not let anyone make a device act or speak for another. So every
//! payload is signed by its sender's ed25519 key, and a desired state is also encrypted to the
//! one device it is for (ChaCha20-Poly1305 under the [`BusKey`] of that device).
//!
//! What a signature covers (the "to be signed" bytes, built field by field so no CBOR
//! canonicalisation is needed): a domain string, the topic the message is published on, the
//! signer's key id, the recipient's key id, the sender's [`Stamp`] (connection epoch and
//! sequence number, for replay protection), the nonce, and the body (ciphertext when
//! encrypted). Moving a message to another topic, to another device, or replaying an older one
//! is therefore detectable by the receiver.
//!
//! The envelope is a CBOR map read leniently (unknown keys ignored), so a newer sender can add
//! fields; a version number above [`SEAL_VERSION`] is refused with a clear error.

use super::keys::{random_bytes, verify_signature, BusKey, SigningKey};
use crate::codec::{decode, encode, CodecError};
use crate::signing::TrustedKey;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305, NONCE_LEN};
use serde::{Deserialize, Serialize};

/// The envelope version this build writes and the highest it reads.
pub const SEAL_VERSION: u8 = 1;

/// Domain separation: these bytes start everything a sealed-message signature covers.
const DOMAIN: &[u8] = b"fleetd-seal-v1\0";

/// Where a message stands in its sender's sequence: `epoch` grows with every connection of the
/// sender (persisted, so it survives restarts), `seq` with every message in that connection.
/// Receivers accept a stamp only if it is newer than the last one they accepted from that
/// sender on that topic, so replayed messages are refused. A last will is stamped with
/// `seq = u64::MAX`: it is the final word of its connection.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Stamp {
    /// The sender's connection counter.
    pub epoch: u64,
    /// The message counter within the connection.
    pub seq: u64,
}

impl Stamp {
    /// The stamp of a last will for connection `epoch`.
    pub fn will(epoch: u64) -> Stamp {
        Stamp {
            epoch,
            seq: u64::MAX,
        }
    }
}

/// The envelope as it is encoded.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Wire {
    v: u8,
    kid: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    to: Option<String>,
    #[serde(default)]
    ep: u64,
    #[serde(default)]
    sq: u64,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "opt_bytes")]
    n: Option<Vec<u8>>,
    #[serde(with = "serde_bytes")]
    b: Vec<u8>,
    #[serde(with = "serde_bytes")]
    s: Vec<u8>,
}

/// serde_bytes for `Option<Vec<u8>>`.
mod opt_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(b) => s.serialize_bytes(b),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        Ok(Option::<serde_bytes::ByteBuf>::deserialize(d)?.map(|b| b.into_vec()))
    }
}

/// Why a sealed message was refused. The texts are what receivers log and report, so each says
/// which check failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    /// Not a sealed envelope at all (an unsigned message from an older or foreign sender, or
    /// garbage).
    #[error("not a signed FleetD message: {0}")]
    NotSealed(String),
    /// An envelope version this build does not know (0 is never valid).
    #[error("envelope version {0} is not one this build understands ({SEAL_VERSION})")]
    Version(u8),
    /// Signed by a key the receiver does not accept for this topic.
    #[error("signed by key {got}, not by the expected key {expected}")]
    WrongSigner {
        /// The key id in the envelope.
        got: String,
        /// The key id the receiver accepts.
        expected: String,
    },
    /// The signature does not verify (tampered, moved to another topic, or forged).
    #[error("signature by key {0} does not verify for this topic and content")]
    BadSignature(String),
    /// Addressed to another recipient key.
    #[error("addressed to key {got:?}, not to this receiver's key {expected}")]
    NotForUs {
        /// The recipient key id in the envelope.
        got: Option<String>,
        /// This receiver's key id.
        expected: String,
    },
    /// Encrypted, but the receiver has no key to decrypt it, or decryption failed.
    #[error("encrypted content cannot be decrypted with this device's key")]
    Undecryptable,
    /// The nonce has the wrong length.
    #[error("nonce has {0} bytes; {NONCE_LEN} expected")]
    BadNonce(usize),
    /// Sealing failed (random generator, encoding).
    #[error("cannot seal message: {0}")]
    Seal(String),
}

/// What [`open`] returns: the verified body (decrypted when it was encrypted) and its stamp.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    /// The verified plaintext body (itself a CBOR message).
    pub body: Vec<u8>,
    /// The sender's stamp.
    pub stamp: Stamp,
    /// Whether the body travelled encrypted.
    pub encrypted: bool,
}

/// The unverified head of an envelope: enough to pick the key to verify it with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    /// The signer's key id.
    pub signer: String,
    /// The recipient's key id, if addressed.
    pub to: Option<String>,
    /// The sender's stamp.
    pub stamp: Stamp,
}

/// The bytes a signature covers.
fn to_be_signed(
    topic: &str,
    kid: &str,
    to: Option<&str>,
    stamp: Stamp,
    nonce: Option<&[u8]>,
    body: &[u8],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(DOMAIN.len() + topic.len() + body.len() + 96);
    out.extend_from_slice(DOMAIN);
    for part in [
        topic.as_bytes(),
        kid.as_bytes(),
        to.unwrap_or("").as_bytes(),
    ] {
        out.extend_from_slice(&(part.len() as u32).to_be_bytes());
        out.extend_from_slice(part);
    }
    out.extend_from_slice(&stamp.epoch.to_be_bytes());
    out.extend_from_slice(&stamp.seq.to_be_bytes());
    match nonce {
        Some(n) => {
            out.push(1);
            out.extend_from_slice(n);
        }
        None => out.push(0),
    }
    out.extend_from_slice(body);
    out
}

fn aead_key(key: &BusKey) -> Result<LessSafeKey, SealError> {
    UnboundKey::new(&CHACHA20_POLY1305, &key.0)
        .map(LessSafeKey::new)
        .map_err(|_| SealError::Seal("bad bus key".into()))
}

/// Who signs a message, to whom, in which sequence position, and whether it is encrypted.
#[derive(Debug, Clone, Copy)]
pub struct SealParams<'a> {
    /// The topic the message will be published on (bound into the signature).
    pub topic: &'a str,
    /// The sender's key.
    pub signer: &'a SigningKey,
    /// The recipient's key id (a device's, for messages to one device).
    pub to: Option<&'a str>,
    /// The sender's stamp.
    pub stamp: Stamp,
    /// Encrypt the body under this key.
    pub encrypt: Option<&'a BusKey>,
}

/// Seals `body` (a CBOR-encoded message) for publishing.
pub fn seal(p: SealParams<'_>, body: &[u8]) -> Result<Vec<u8>, SealError> {
    let (nonce, payload) = match p.encrypt {
        Some(key) => {
            let nonce_bytes: [u8; NONCE_LEN] =
                random_bytes().map_err(|e| SealError::Seal(e.to_string()))?;
            let mut buf = body.to_vec();
            aead_key(key)?
                .seal_in_place_append_tag(
                    Nonce::assume_unique_for_key(nonce_bytes),
                    Aad::from(p.topic.as_bytes()),
                    &mut buf,
                )
                .map_err(|_| SealError::Seal("encryption failed".into()))?;
            (Some(nonce_bytes.to_vec()), buf)
        }
        None => (None, body.to_vec()),
    };
    let tbs = to_be_signed(
        p.topic,
        p.signer.id(),
        p.to,
        p.stamp,
        nonce.as_deref(),
        &payload,
    );
    let wire = Wire {
        v: SEAL_VERSION,
        kid: p.signer.id().to_string(),
        to: p.to.map(str::to_string),
        ep: p.stamp.epoch,
        sq: p.stamp.seq,
        n: nonce,
        b: payload,
        s: p.signer.sign(&tbs),
    };
    encode(&wire).map_err(|e| SealError::Seal(e.to_string()))
}

fn decode_wire(bytes: &[u8], max: usize) -> Result<Wire, SealError> {
    let wire: Wire = decode(bytes, max).map_err(|e: CodecError| match e {
        CodecError::Mistyped(m) => {
            SealError::NotSealed(format!("payload is not a sealed envelope ({m})"))
        }
        other => SealError::NotSealed(other.to_string()),
    })?;
    if wire.v == 0 || wire.v > SEAL_VERSION {
        return Err(SealError::Version(wire.v));
    }
    Ok(wire)
}

/// Seals a device's report (status, metrics, logs, last will): signed by the device, not
/// encrypted, for fleetd. One definition for the agent and for simulated devices, which must
/// speak exactly the same protocol.
pub fn seal_report(
    key: &SigningKey,
    topic: &str,
    stamp: Stamp,
    body: &[u8],
) -> Result<Vec<u8>, SealError> {
    seal(
        SealParams {
            topic,
            signer: key,
            to: None,
            stamp,
            encrypt: None,
        },
        body,
    )
}

/// Reads the head of an envelope without verifying it (to choose the key to verify with).
pub fn peek(bytes: &[u8], max: usize) -> Result<Head, SealError> {
    let w = decode_wire(bytes, max)?;
    Ok(Head {
        signer: w.kid,
        to: w.to,
        stamp: Stamp {
            epoch: w.ep,
            seq: w.sq,
        },
    })
}

/// What a receiver requires of an envelope.
#[derive(Debug, Clone, Copy)]
pub struct OpenParams<'a> {
    /// The topic the message arrived on.
    pub topic: &'a str,
    /// The only key whose signature is accepted.
    pub signer: &'a TrustedKey,
    /// The receiver's own key id: the envelope must be addressed to it (`None`: no check).
    pub me: Option<&'a str>,
    /// The key to decrypt with, when the body is encrypted.
    pub decrypt: Option<&'a BusKey>,
}

/// Verifies and opens an envelope of at most `max` bytes.
pub fn open(p: OpenParams<'_>, bytes: &[u8], max: usize) -> Result<Opened, SealError> {
    let w = decode_wire(bytes, max)?;
    if w.kid != p.signer.id {
        return Err(SealError::WrongSigner {
            got: w.kid,
            expected: p.signer.id.clone(),
        });
    }
    if let Some(me) = p.me {
        if w.to.as_deref() != Some(me) {
            return Err(SealError::NotForUs {
                got: w.to,
                expected: me.to_string(),
            });
        }
    }
    if let Some(n) = &w.n {
        if n.len() != NONCE_LEN {
            return Err(SealError::BadNonce(n.len()));
        }
    }
    let stamp = Stamp {
        epoch: w.ep,
        seq: w.sq,
    };
    let tbs = to_be_signed(
        p.topic,
        &w.kid,
        w.to.as_deref(),
        stamp,
        w.n.as_deref(),
        &w.b,
    );
    if !verify_signature(p.signer, &tbs, &w.s) {
        return Err(SealError::BadSignature(w.kid));
    }
    let (body, encrypted) = match w.n {
        None => (w.b, false),
        Some(n) => {
            let key = p.decrypt.ok_or(SealError::Undecryptable)?;
            let nonce: [u8; NONCE_LEN] = n
                .as_slice()
                .try_into()
                .map_err(|_| SealError::BadNonce(n.len()))?;
            let mut buf = w.b;
            let plain_len = aead_key(key)?
                .open_in_place(
                    Nonce::assume_unique_for_key(nonce),
                    Aad::from(p.topic.as_bytes()),
                    &mut buf,
                )
                .map_err(|_| SealError::Undecryptable)?
                .len();
            buf.truncate(plain_len);
            (buf, true)
        }
    };
    Ok(Opened {
        body,
        stamp,
        encrypted,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DEFAULT_MAX_PAYLOAD;

    struct Parties {
        ctl: SigningKey,
        dev: SigningKey,
        bus: BusKey,
    }

    fn parties() -> Parties {
        Parties {
            ctl: SigningKey::generate().expect("keygen").0,
            dev: SigningKey::generate().expect("keygen").0,
            bus: BusKey([9; 32]),
        }
    }

    fn sealed(p: &Parties, topic: &str, encrypt: bool) -> Vec<u8> {
        seal(
            SealParams {
                topic,
                signer: &p.ctl,
                to: Some(p.dev.id()),
                stamp: Stamp { epoch: 0, seq: 7 },
                encrypt: encrypt.then_some(&p.bus),
            },
            b"desired-state-bytes",
        )
        .expect("seals")
    }

    fn open_as_device(p: &Parties, topic: &str, bytes: &[u8]) -> Result<Opened, SealError> {
        open(
            OpenParams {
                topic,
                signer: &p.ctl.trusted(),
                me: Some(p.dev.id()),
                decrypt: Some(&p.bus),
            },
            bytes,
            DEFAULT_MAX_PAYLOAD,
        )
    }

    #[test]
    fn round_trip_plain_and_encrypted() {
        let p = parties();
        for encrypt in [false, true] {
            let bytes = sealed(&p, "fleet/d1/cmd", encrypt);
            let opened = open_as_device(&p, "fleet/d1/cmd", &bytes).expect("opens");
            assert_eq!(opened.body, b"desired-state-bytes");
            assert_eq!(opened.stamp, Stamp { epoch: 0, seq: 7 });
            assert_eq!(opened.encrypted, encrypt);
            let visible = bytes
                .windows(b"desired-state".len())
                .any(|w| w == b"desired-state");
            assert_eq!(visible, !encrypt, "ciphertext hides the body");
        }
    }

    #[test]
    fn forged_moved_tampered_and_misaddressed_messages_are_refused() {
        let p = parties();
        let bytes = sealed(&p, "fleet/d1/cmd", true);
        // Moved to another device's topic.
        assert!(matches!(
            open_as_device(&p, "fleet/d2/cmd", &bytes),
            Err(SealError::BadSignature(_))
        ));
        // Signed by someone else (a device key pretending to be the controller).
        let forged = seal(
            SealParams {
                topic: "fleet/d1/cmd",
                signer: &p.dev,
                to: Some(p.dev.id()),
                stamp: Stamp::default(),
                encrypt: Some(&p.bus),
            },
            b"x",
        )
        .expect("seals");
        assert!(matches!(
            open_as_device(&p, "fleet/d1/cmd", &forged),
            Err(SealError::WrongSigner { .. })
        ));
        // No flipped byte changes what the receiver gets: it is refused, or (a renamed key whose
        // value was the default) it opens to exactly the original.
        let original = open_as_device(&p, "fleet/d1/cmd", &bytes).expect("opens");
        let mut refused = 0;
        for i in 0..bytes.len() {
            let mut t = bytes.clone();
            t[i] ^= 0x01;
            match open_as_device(&p, "fleet/d1/cmd", &t) {
                Err(_) => refused += 1,
                Ok(o) => assert_eq!(o, original, "byte {i} changed the content"),
            }
        }
        assert!(refused > bytes.len() - 8, "{refused} of {}", bytes.len());
        // Addressed to another device key.
        let other = SigningKey::generate().expect("keygen").0;
        let r = open(
            OpenParams {
                topic: "fleet/d1/cmd",
                signer: &p.ctl.trusted(),
                me: Some(other.id()),
                decrypt: Some(&p.bus),
            },
            &bytes,
            DEFAULT_MAX_PAYLOAD,
        );
        assert!(matches!(r, Err(SealError::NotForUs { .. })));
        // Wrong bus key.
        let r = open(
            OpenParams {
                topic: "fleet/d1/cmd",
                signer: &p.ctl.trusted(),
                me: Some(p.dev.id()),
                decrypt: Some(&BusKey([1; 32])),
            },
            &bytes,
            DEFAULT_MAX_PAYLOAD,
        );
        assert_eq!(r, Err(SealError::Undecryptable));
    }

    #[test]
    fn unsigned_garbage_and_newer_versions_are_named() {
        let p = parties();
        let plain = crate::encode(&crate::DeviceStatus {
            device_id: "d1".into(),
            online: true,
            agent_version: String::new(),
            inventory: None,
            observed_generation: 0,
            apps: vec![],
            reported_at: 0,
            refused: None,
        })
        .expect("encodes");
        let e = open_as_device(&p, "fleet/d1/cmd", &plain).expect_err("unsigned");
        assert!(e.to_string().contains("not a signed FleetD message"), "{e}");
        assert!(matches!(
            open_as_device(&p, "fleet/d1/cmd", b"\xff\x00"),
            Err(SealError::NotSealed(_))
        ));
        assert!(matches!(
            open_as_device(&p, "fleet/d1/cmd", b""),
            Err(SealError::NotSealed(_))
        ));
        #[derive(Serialize)]
        struct Future<'a> {
            v: u8,
            kid: &'a str,
            #[serde(with = "serde_bytes")]
            b: &'a [u8],
            #[serde(with = "serde_bytes")]
            s: &'a [u8],
            pq: &'a str,
        }
        let future = encode(&Future {
            v: 2,
            kid: p.ctl.id(),
            b: b"x",
            s: b"y",
            pq: "kyber",
        })
        .expect("encodes");
        assert_eq!(
            open_as_device(&p, "fleet/d1/cmd", &future),
            Err(SealError::Version(2))
        );
        let head = peek(&sealed(&p, "t", false), DEFAULT_MAX_PAYLOAD).expect("peeks");
        assert_eq!(head.signer, p.ctl.id());
        assert_eq!(head.to.as_deref(), Some(p.dev.id()));
    }

    #[test]
    fn stamps_order_by_epoch_then_seq_and_wills_close_their_connection() {
        let a = Stamp { epoch: 3, seq: 900 };
        assert!(Stamp::will(3) > a);
        assert!(Stamp { epoch: 4, seq: 1 } > Stamp::will(3));
    }
}
