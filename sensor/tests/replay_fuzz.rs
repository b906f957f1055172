//! The replay fuzz target's property, on stable Rust and in every `cargo
//! test`: the seeds of fuzz/seeds/replay_pcap, then deterministic mutations of
//! them (bit flips, truncations, interesting lengths written at random
//! offsets, splices), through `parse_capture` — what `gatewatch replay` does
//! with a file before the kernel sees it. A panic fails the test; a broken file
//! must give an error or counted skips. The coverage-guided run is
//! integration-tests/fuzz-replay.sh (cargo fuzz, libFuzzer).

use std::path::PathBuf;

use gatewatch::capture::replay::parse_capture;

fn seeds() -> Vec<Vec<u8>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds/replay_pcap");
    let mut out: Vec<Vec<u8>> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .collect();
    // Regression inputs found by earlier runs also live beside the seeds.
    out.sort();
    out
}

/// xorshift64*: reproducible without a crate.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

const INTERESTING: [u32; 10] = [
    0,
    1,
    3,
    4,
    19,
    20,
    0x7fff_ffff,
    0x8000_0000,
    0xffff_fffe,
    0xffff_ffff,
];

fn mutate(rng: &mut Rng, seed: &[u8], other: &[u8]) -> Vec<u8> {
    let mut v = seed.to_vec();
    for _ in 0..=rng.below(4) {
        if v.is_empty() {
            v.push(0);
        }
        let at = rng.below(v.len());
        match rng.below(6) {
            0 => v[at] ^= 1 << rng.below(8),
            1 => v[at] = rng.next() as u8,
            2 => v.truncate(at),
            3 => {
                let x = INTERESTING[rng.below(INTERESTING.len())].to_le_bytes();
                let x = if rng.below(2) == 0 {
                    x
                } else {
                    u32::from_le_bytes(x).to_be_bytes()
                };
                for (i, b) in x.iter().enumerate() {
                    if let Some(slot) = v.get_mut(at + i) {
                        *slot = *b;
                    }
                }
            }
            4 => {
                let n = rng.below(64);
                v.splice(at..at, std::iter::repeat_n(rng.next() as u8, n));
            }
            _ => {
                let from = rng.below(other.len());
                let n = rng.below(other.len() - from + 1);
                v.splice(at..at, other[from..from + n].iter().copied());
            }
        }
    }
    v
}

#[test]
fn seeds_parse_and_mutations_never_panic() {
    let seeds = seeds();
    assert!(
        seeds.len() >= 4,
        "fuzz/seeds/replay_pcap holds {} files",
        seeds.len()
    );
    for s in &seeds {
        let (frames, stats) = parse_capture(s).expect("a seed is a valid capture");
        assert!(!frames.is_empty() && stats.packets > 0);
    }
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let (mut ok, mut err) = (0u32, 0u32);
    for i in 0..60_000 {
        let seed = &seeds[i % seeds.len()];
        let other = &seeds[rng.below(seeds.len())];
        let input = mutate(&mut rng, seed, other);
        match parse_capture(&input) {
            Ok((frames, _)) => {
                assert!(frames.iter().all(|f| f.len() <= 3000));
                ok += 1;
            }
            Err(_) => err += 1,
        }
    }
    eprintln!("60000 mutated captures: {ok} parsed, {err} refused with an error");
    assert!(
        ok > 1000 && err > 1000,
        "the mutations should reach both outcomes"
    );
}
