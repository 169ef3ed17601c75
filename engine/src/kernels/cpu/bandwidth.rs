//! Memory read-bandwidth probe: the ceiling for memory-bound decode (`cellm bench` prints it).

use rayon::prelude::*;
use std::time::Instant;

/// Reads a 256 MB buffer with all threads of the current rayon pool and returns the best of a
/// few passes in GB/s (1e9 bytes per second). Allocates and touches the buffer first (about
/// 0.5 s in all).
pub fn measure_read_bandwidth() -> f64 {
    const BYTES: usize = 256 << 20;
    let words = BYTES / 8;
    let mut buf = vec![0u64; words];
    // touch every page from the threads that will read it (first-touch placement)
    let chunk = words.div_ceil(rayon::current_num_threads().max(1) * 8);
    buf.par_chunks_mut(chunk).enumerate().for_each(|(i, c)| {
        for (j, v) in c.iter_mut().enumerate() {
            *v = (i * 131 + j) as u64;
        }
    });
    let mut best = f64::INFINITY;
    let mut sink = 0u64;
    for _ in 0..4 {
        let start = Instant::now();
        sink ^= buf
            .par_chunks(chunk)
            .map(xor_sum)
            .reduce(|| 0, |a, b| a ^ b);
        best = best.min(start.elapsed().as_secs_f64());
    }
    std::hint::black_box(sink);
    BYTES as f64 / best / 1e9
}

/// XOR of all words, read as 4 interleaved streams (as a matvec over several rows does, which
/// keeps more prefetchers busy) with 8 independent lanes so the compiler vectorizes it.
fn xor_sum(c: &[u64]) -> u64 {
    let q = c.len() / 4 / 8 * 8;
    let (s0, rest) = c.split_at(q);
    let (s1, rest) = rest.split_at(q);
    let (s2, rest) = rest.split_at(q);
    let (s3, rest) = rest.split_at(q);
    let mut acc = [0u64; 8];
    for (((a, b), c), d) in s0
        .chunks_exact(8)
        .zip(s1.chunks_exact(8))
        .zip(s2.chunks_exact(8))
        .zip(s3.chunks_exact(8))
    {
        for i in 0..8 {
            acc[i] ^= a[i] ^ b[i] ^ c[i] ^ d[i];
        }
    }
    rest.iter()
        .fold(acc.iter().fold(0, |a, b| a ^ b), |a, b| a ^ b)
}
