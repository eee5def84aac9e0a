//! Input mutation: a seeded xorshift generator and the classic byte-level mutations (bit
//! flips, interesting values, inserts, deletes, duplicated runs, splices with another input,
//! truncation), plus CBOR-aware ones that plant huge length headers, which is where decoders of
//! length-prefixed formats go wrong.

/// A small, fast, seeded generator: runs are reproducible from the seed the runner prints.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed` (zero is replaced: xorshift needs a non-zero state).
    pub fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A number below `n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next_u64() % n as u64) as usize
        }
    }
}

/// Byte values that often sit on boundaries (CBOR major types with long lengths, signed
/// limits, ASCII separators).
const INTERESTING: &[u8] = &[
    0x00, 0x01, 0x17, 0x18, 0x19, 0x1a, 0x1b, 0x1f, 0x3f, 0x40, 0x5f, 0x7f, 0x80, 0x9f, 0xa0, 0xbf,
    0xf4, 0xf5, 0xf6, 0xf7, 0xff, b'/', b'.', b':', b'@', b'&', b'*', b'\n',
];

/// CBOR heads announcing enormous strings, arrays and maps.
const HUGE_HEADS: &[&[u8]] = &[
    &[0x5b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
    &[0x7b, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
    &[0x9b, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00],
    &[0xbb, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00],
    &[0x9f, 0x9f, 0x9f, 0x9f, 0x9f, 0x9f, 0x9f, 0x9f],
    &[0xc6, 0xc6, 0xc6, 0xc6, 0xc6, 0xc6],
];

/// Most bytes a mutated input may have.
pub const MAX_INPUT: usize = 256 * 1024;

/// Returns a mutation of `input` (1-4 stacked mutations), sometimes spliced with `other`.
pub fn mutate(rng: &mut Rng, input: &[u8], other: &[u8]) -> Vec<u8> {
    let mut data = input.to_vec();
    for _ in 0..=rng.below(4) {
        mutate_once(rng, &mut data, other);
    }
    data.truncate(MAX_INPUT);
    data
}

fn mutate_once(rng: &mut Rng, data: &mut Vec<u8>, other: &[u8]) {
    let len = data.len();
    match rng.below(10) {
        0 if len > 0 => {
            let i = rng.below(len);
            data[i] ^= 1 << rng.below(8);
        }
        1 if len > 0 => {
            let i = rng.below(len);
            data[i] = INTERESTING[rng.below(INTERESTING.len())];
        }
        2 => {
            let at = rng.below(len + 1);
            let n = 1 + rng.below(8);
            let bytes: Vec<u8> = (0..n).map(|_| rng.next_u64() as u8).collect();
            data.splice(at..at, bytes);
        }
        3 if len > 1 => {
            let at = rng.below(len);
            let n = 1 + rng.below((len - at).min(32));
            data.drain(at..at + n);
        }
        4 if len > 0 => {
            // Duplicate a run, up to 64 times (nesting, repeated keys, long strings).
            let at = rng.below(len);
            let n = 1 + rng.below((len - at).min(64));
            let run = data[at..at + n].to_vec();
            let times = 1 + rng.below(64);
            let insert: Vec<u8> = run.iter().copied().cycle().take(n * times).collect();
            data.splice(at..at, insert);
        }
        5 if !other.is_empty() => {
            let at = rng.below(len + 1);
            let from = rng.below(other.len());
            let n = 1 + rng.below(other.len() - from);
            data.truncate(at);
            data.extend_from_slice(&other[from..from + n]);
        }
        6 if len > 0 => data.truncate(rng.below(len)),
        7 => {
            let at = rng.below(len + 1);
            let head = HUGE_HEADS[rng.below(HUGE_HEADS.len())];
            data.splice(at..at, head.iter().copied());
        }
        8 if len > 1 => {
            let (a, b) = (rng.below(len), rng.below(len));
            data.swap(a, b);
        }
        _ => {
            let at = rng.below(len + 1);
            data.insert(at, INTERESTING[rng.below(INTERESTING.len())]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mutations_are_reproducible_and_bounded() {
        let (mut a, mut b) = (Rng::new(7), Rng::new(7));
        let seed = b"hello cbor".to_vec();
        for _ in 0..1000 {
            let (x, y) = (
                mutate(&mut a, &seed, b"other"),
                mutate(&mut b, &seed, b"other"),
            );
            assert_eq!(x, y);
            assert!(x.len() <= MAX_INPUT);
        }
        assert!(
            (0..100).any(|_| mutate(&mut a, &seed, b"") != seed),
            "mutations change the input"
        );
    }
}
