//! Just enough MQTT (3.1.1 and 5) to judge a packet by its head before it reaches rumqttd: the
//! fixed header (packet type, flags, remaining length), the topic name and retain flag of a
//! PUBLISH, and the will of a CONNECT. Pure functions over byte slices; nothing here reads a
//! socket.

/// Packet type of CONNECT.
pub(crate) const CONNECT: u8 = 1;
/// Packet type of PUBLISH.
pub(crate) const PUBLISH: u8 = 3;

/// The fixed header of one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FixedHeader {
    /// Packet type (upper nibble of the first byte).
    pub kind: u8,
    /// Flags (lower nibble of the first byte; for PUBLISH bit 0 is retain).
    pub flags: u8,
    /// Bytes after the fixed header.
    pub remaining: usize,
    /// Length of the fixed header itself (2 to 5 bytes).
    pub header_len: usize,
}

/// Why bytes are not a packet we can judge.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum PacketError {
    /// The remaining length uses more than four bytes.
    #[error("malformed remaining length")]
    BadLength,
    /// A string field runs past the packet or is not UTF-8.
    #[error("malformed {0}")]
    BadField(&'static str),
}

/// Parses a fixed header from the start of `buf`; `Ok(None)` means more bytes are needed.
pub(crate) fn fixed_header(buf: &[u8]) -> Result<Option<FixedHeader>, PacketError> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    let mut remaining = 0usize;
    for i in 0..4 {
        let Some(&b) = buf.get(1 + i) else {
            return Ok(None);
        };
        remaining |= usize::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok(Some(FixedHeader {
                kind: first >> 4,
                flags: first & 0x0f,
                remaining,
                header_len: 2 + i,
            }));
        }
    }
    Err(PacketError::BadLength)
}

/// Reads a two-byte length-prefixed field at `at`, returning it and the offset after it;
/// `Ok(None)` means `buf` ends before the field does.
fn field<'a>(
    buf: &'a [u8],
    at: usize,
    what: &'static str,
) -> Result<Option<(&'a [u8], usize)>, PacketError> {
    let Some(len) = buf.get(at..at + 2) else {
        return Ok(None);
    };
    let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
    match buf.get(at + 2..at + 2 + len) {
        Some(f) => Ok(Some((f, at + 2 + len))),
        None if buf.len() < at + 2 + len => Ok(None),
        None => Err(PacketError::BadField(what)),
    }
}

/// Bytes of a PUBLISH's variable header needed to read its topic: the topic's length prefix
/// (2 bytes), then the topic. `body` is what follows the fixed header.
pub(crate) fn publish_topic(body: &[u8]) -> Result<Option<String>, PacketError> {
    match field(body, 0, "topic name")? {
        None => Ok(None),
        Some((t, _)) => std::str::from_utf8(t)
            .map(|s| Some(s.to_string()))
            .map_err(|_| PacketError::BadField("topic name")),
    }
}

/// How many bytes of a PUBLISH body must be buffered to read its topic, once the length prefix
/// is known (`None` while it is not).
pub(crate) fn publish_topic_need(body: &[u8]) -> Option<usize> {
    body.get(0..2)
        .map(|l| 2 + usize::from(u16::from_be_bytes([l[0], l[1]])))
}

/// Reads an MQTT 5 variable byte integer at `at`: its value and the offset after it.
fn varint(buf: &[u8], at: usize) -> Result<(usize, usize), PacketError> {
    let mut value = 0usize;
    for i in 0..4 {
        let b = *buf.get(at + i).ok_or(PacketError::BadField("properties"))?;
        value |= usize::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok((value, at + i + 1));
        }
    }
    Err(PacketError::BadField("properties"))
}

/// The will of a CONNECT, when it has one: its topic and whether it is retained. `body` is the
/// whole packet after the fixed header.
pub(crate) fn connect_will(body: &[u8]) -> Result<Option<(String, bool)>, PacketError> {
    let missing = PacketError::BadField("CONNECT");
    let (_, at) = field(body, 0, "protocol name")?.ok_or(missing.clone())?;
    let level = *body.get(at).ok_or(missing.clone())?;
    let flags = *body.get(at + 1).ok_or(missing.clone())?;
    // Level byte, flags byte, keep-alive (2 bytes).
    let mut at = at + 4;
    if level == 5 {
        let (len, after) = varint(body, at)?;
        at = after + len;
    }
    let (_, after_id) = field(body, at, "client id")?.ok_or(missing.clone())?;
    if flags & 0x04 == 0 {
        return Ok(None);
    }
    let mut at = after_id;
    if level == 5 {
        let (len, after) = varint(body, at)?;
        at = after + len;
    }
    let (topic, _) = field(body, at, "will topic")?.ok_or(missing)?;
    let topic = std::str::from_utf8(topic).map_err(|_| PacketError::BadField("will topic"))?;
    Ok(Some((topic.to_string(), flags & 0x20 != 0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn publish(topic: &str, retain: bool, payload_len: usize) -> Vec<u8> {
        let mut body = (topic.len() as u16).to_be_bytes().to_vec();
        body.extend_from_slice(topic.as_bytes());
        body.extend(std::iter::repeat_n(0u8, payload_len));
        let mut p = vec![0x30 | u8::from(retain)];
        let mut n = body.len();
        loop {
            let mut b = (n % 128) as u8;
            n /= 128;
            if n > 0 {
                b |= 0x80;
            }
            p.push(b);
            if n == 0 {
                break;
            }
        }
        p.extend(body);
        p
    }

    #[test]
    fn reads_fixed_headers_of_every_length() {
        assert_eq!(fixed_header(&[]), Ok(None));
        assert_eq!(fixed_header(&[0x30]), Ok(None));
        assert_eq!(fixed_header(&[0x30, 0x80]), Ok(None));
        let p = publish("fleet/a/status", true, 2_000_000);
        let h = fixed_header(&p).expect("valid").expect("complete");
        assert_eq!((h.kind, h.flags & 1), (PUBLISH, 1));
        assert_eq!(h.header_len + h.remaining, p.len());
        assert_eq!(
            fixed_header(&[0x30, 0xff, 0xff, 0xff, 0xff, 0x01]),
            Err(PacketError::BadLength)
        );
    }

    #[test]
    fn reads_a_publish_topic_once_it_is_buffered() {
        let p = publish("junk/x", true, 10);
        let h = fixed_header(&p).expect("valid").expect("complete");
        let body = &p[h.header_len..];
        assert_eq!(publish_topic(&body[..3]), Ok(None));
        assert_eq!(publish_topic_need(body), Some(8));
        assert_eq!(publish_topic(body), Ok(Some("junk/x".into())));
    }

    #[test]
    fn reads_the_will_of_v4_and_v5_connects() {
        // 3.1.1: will flag and will retain, client id "c", will topic "w/t".
        let v4 = [
            0, 4, b'M', b'Q', b'T', b'T', 4, 0x24, 0, 60, 0, 1, b'c', 0, 3, b'w', b'/', b't', 0, 0,
        ];
        assert_eq!(connect_will(&v4), Ok(Some(("w/t".into(), true))));
        // 5: empty properties after the keep-alive and before the will topic.
        let v5 = [
            0, 4, b'M', b'Q', b'T', b'T', 5, 0x04, 0, 60, 0, 0, 1, b'c', 0, 0, 3, b'w', b'/', b't',
            0, 0,
        ];
        assert_eq!(connect_will(&v5), Ok(Some(("w/t".into(), false))));
        let no_will = [0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 60, 0, 1, b'c'];
        assert_eq!(connect_will(&no_will), Ok(None));
        assert!(connect_will(&v4[..9]).is_err());
    }
}
