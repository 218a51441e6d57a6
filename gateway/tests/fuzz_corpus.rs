//! The fuzz targets on stable Rust: every input kept in `fuzz/corpus/<target>/`, and for each a few hundred
//! deterministic mutations of it (byte flips, insertions, deletions, truncations, splices with other inputs),
//! through the same entry points the cargo-fuzz targets call. A panic or a broken invariant fails the test and
//! names the input. `cargo +nightly fuzz run <target>` explores further and adds what it finds to the corpus.

use std::path::{Path, PathBuf};

use flowork_gateway::fuzzing::TARGETS;

/// Mutations per kept input.
const MUTATIONS: usize = 2_000;

/// xorshift64*: deterministic, so a failure reproduces.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 { 0 } else { (self.next() % n as u64) as usize }
    }
}

/// Bytes that matter to the parsers: JSON and message syntax.
const INTERESTING: &[u8] = b"{}[]\":,\\-.0123456789eE+ \n\r\tnulltruefalse\xff\x00";

fn mutate(input: &[u8], others: &[Vec<u8>], rng: &mut Rng) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..1 + rng.below(4) {
        match rng.below(6) {
            0 if !out.is_empty() => {
                let at = rng.below(out.len());
                out[at] ^= 1 << rng.below(8);
            }
            1 => {
                let at = rng.below(out.len() + 1);
                out.insert(at, INTERESTING[rng.below(INTERESTING.len())]);
            }
            2 if !out.is_empty() => {
                let at = rng.below(out.len());
                let len = 1 + rng.below((out.len() - at).min(8));
                out.drain(at..at + len);
            }
            3 => out.truncate(rng.below(out.len() + 1)),
            4 if !others.is_empty() => {
                let other = &others[rng.below(others.len())];
                let at = rng.below(out.len() + 1);
                let from = rng.below(other.len() + 1);
                out.splice(at..at, other[from..].iter().copied().take(32));
            }
            _ if !out.is_empty() => {
                let at = rng.below(out.len());
                out[at] = INTERESTING[rng.below(INTERESTING.len())];
            }
            _ => {}
        }
    }
    out
}

fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus").join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    files.sort();
    files.into_iter().map(|p| (p.clone(), std::fs::read(&p).expect("readable corpus file"))).collect()
}

#[test]
fn every_target_survives_its_corpus_and_mutations_of_it() {
    let mut runs = 0;
    for (name, target) in TARGETS {
        let inputs = corpus(name);
        assert!(!inputs.is_empty(), "fuzz/corpus/{name} is empty");
        let all: Vec<Vec<u8>> = inputs.iter().map(|(_, bytes)| bytes.clone()).collect();
        for (index, (path, bytes)) in inputs.iter().enumerate() {
            let run = |data: &[u8], what: &str| {
                if std::panic::catch_unwind(|| target(data)).is_err() {
                    panic!("{name} failed on {what} of {}: {:?}", path.display(), String::from_utf8_lossy(data));
                }
            };
            run(bytes, "the kept input");
            let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ ((index as u64 + 1) << 32) ^ name.len() as u64);
            for n in 0..MUTATIONS {
                run(&mutate(bytes, &all, &mut rng), &format!("mutation {n}"));
            }
            runs += 1 + MUTATIONS;
        }
    }
    println!("fuzz targets on stable: {runs} inputs over {} targets", TARGETS.len());
}
