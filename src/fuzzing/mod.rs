//! Fuzz targets: one entry point per parser or translator that takes arbitrary bytes, runs
//! the code on them and asserts its invariants; a panic is a finding.
//!
//! An entry point's bytes are `[n][n seed bytes][input]`: the seed drives the choices a
//! target makes besides its input (how a stream is cut into chunks, which model name a
//! rewrite sends, which translator runs), so `cargo fuzz` mutates both. The property tests in
//! `tests.rs` call the same checks on structure-aware generated inputs (`gen.rs`: mutated
//! fixtures, generated JSON, SSE and YAML) in the normal test suite; the `cargo fuzz` crate in
//! `fuzz/` calls the entry points for long runs.
//!
//! Built only for tests and with the `fuzzing` feature: nothing here is part of the gateway.

mod rng;
mod targets;

#[cfg(test)]
mod gen;
#[cfg(test)]
mod tests;

pub use rng::XorShift;
pub use targets::*;

/// The seed and the input of an entry point's bytes (see the module docs).
pub fn split(data: &[u8]) -> (XorShift, &[u8]) {
    let Some((n, rest)) = data.split_first() else {
        return (XorShift(1), data);
    };
    let n = usize::from(*n % 9).min(rest.len());
    let (seed, input) = rest.split_at(n);
    let seed = seed.iter().fold(0xCBF2_9CE4_8422_2325_u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01B3)
    });
    (XorShift(seed | 1), input)
}

/// `input` cut into pieces: byte by byte, small or large pieces, sometimes with empty ones.
pub fn chunks<'a>(input: &'a [u8], rng: &mut XorShift) -> Vec<&'a [u8]> {
    let max = match rng.below(4) {
        // Byte by byte only for small inputs (a push costs microseconds in debug builds).
        0 if input.len() <= 256 => 1,
        0 => 4,
        1 => 3,
        2 => 16,
        _ => input.len() / 2 + 1,
    };
    let empty = rng.one_in(4);
    let mut out = Vec::new();
    let mut rest = input;
    while !rest.is_empty() {
        if empty && rng.one_in(5) {
            out.push(&rest[..0]);
        }
        let (piece, tail) = rest.split_at((1 + rng.below(max)).min(rest.len()));
        out.push(piece);
        rest = tail;
    }
    out
}
