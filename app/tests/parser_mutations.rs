//! Stable-toolchain property test of the four parsers fuzzed in fuzz/ (the .cellm container,
//! GGUF, the safetensors header, WAV): a seeded mutator makes 2000 inputs per parser from a
//! valid fixture (byte flips, splices of boundary values, truncations, duplicated ranges) and
//! every one must parse or fail with an error; a panic fails the test. The same mutations are
//! what scripts/fuzz.sh starts cargo-fuzz from, coverage-guided, on nightly.

mod parity;

use cellm_convert::Profile;

const PER_PARSER: usize = 2000;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// One mutated copy of `seed`, focused on its first `hot` bytes (headers and tables) most of
/// the time.
fn mutate(seed: &[u8], hot: usize, rng: &mut Rng) -> Vec<u8> {
    let mut b = seed.to_vec();
    let span = |rng: &mut Rng, len: usize| {
        if rng.below(4) == 0 { len } else { hot.min(len) }
    };
    for _ in 0..1 + rng.below(4) {
        if b.is_empty() {
            break;
        }
        let limit = span(rng, b.len());
        let at = rng.below(limit);
        match rng.below(6) {
            0 => b[at] = rng.next() as u8,
            1 => b[at] ^= 1 << rng.below(8),
            2 => {
                // A boundary value over 1, 2, 4 or 8 bytes.
                let values = [0u64, 1, 0x7f, 0xff, 0xffff, 0x7fff_ffff, u64::MAX, 1 << 40];
                let v = values[rng.below(values.len())].to_le_bytes();
                let w = [1, 2, 4, 8][rng.below(4)];
                for (i, x) in v.iter().take(w).enumerate() {
                    if let Some(slot) = b.get_mut(at + i) {
                        *slot = *x;
                    }
                }
            }
            3 => b.truncate(at),
            4 => {
                let len = rng.below(64).min(b.len() - at);
                let piece = b[at..at + len].to_vec();
                let to = rng.below(b.len());
                b.splice(to..to, piece);
            }
            _ => {
                let len = rng.below(64).min(b.len() - at);
                b.drain(at..at + len);
            }
        }
    }
    b
}

fn run(name: &str, seed: &[u8], hot: usize, parse: impl Fn(&[u8]) -> bool) {
    let mut rng = Rng(0x2545_f491_4f6c_dd1d ^ seed.len() as u64);
    assert!(parse(seed), "{name}: the seed itself must parse");
    let mut accepted = 0;
    for _ in 0..PER_PARSER {
        let input = mutate(seed, hot, &mut rng);
        if parse(&input) {
            accepted += 1;
        }
    }
    eprintln!("{name}: {PER_PARSER} mutated inputs, {accepted} still parsed, no panic");
}

#[test]
fn mutated_cellm_files() {
    let dir = tempfile::tempdir().unwrap();
    let model = parity::convert_to(&parity::testdata("tiny-gemma3"), Profile::Int8, dir.path());
    let bytes = std::fs::read(model).unwrap();
    let hot = u64::from_le_bytes(bytes[16..24].try_into().unwrap()) as usize + 32;
    run("cellm", &bytes, hot, |b| {
        cellm_engine::format::CellmFile::check_bytes(b).is_ok()
    });
}

#[test]
fn mutated_gguf_files() {
    let bytes = std::fs::read(parity::testdata("gguf/tiny-gemma3.gguf")).unwrap();
    run("gguf", &bytes, 64 << 10, |b| {
        cellm_convert::source::gguf::parse::parse_bytes(b).is_ok()
    });
}

#[test]
fn mutated_safetensors_headers() {
    let bytes = std::fs::read(parity::testdata("tiny-gemma3/model.safetensors")).unwrap();
    let hot = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize + 8;
    run("safetensors", &bytes, hot, |b| {
        cellm_convert::source::hf::check_safetensors_bytes(b).is_ok()
    });
}

#[test]
fn mutated_wav_files() {
    let bytes = std::fs::read(parity::testdata("tiny-gemma4/tiny_audio.wav")).unwrap();
    run("wav", &bytes, 64, |b| {
        cellm_encoders::audio::read_wav_bytes(b, "mutated.wav").is_ok()
    });
}
