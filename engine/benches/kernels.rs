//! Kernel benchmark: `cargo bench -p cellm-engine --bench kernels [-- --threads N] [--quick]
//! [--isa scalar|avx2|avx512vnni] [--dtype q4,q8,f16,bf16,f32,lut4,lut6]`.
//!
//! Prints, per dtype and weight shape [n x k]: the t = 1 matvec as GB/s of weight bytes read
//! (decode is memory-bound: compare with the read-bandwidth probe on the first line), and the
//! t = 128 matmul (prefill) as GFLOP/s (2*n*k*t per call). Weights are random bytes in the
//! layout of each dtype (valid values, never NaN), built directly so setup stays fast.

use cellm_engine::kernels::cpu::{
    gelu_mul, matmul_at_level, measure_read_bandwidth, softcap, softmax,
};
use cellm_engine::tensor::{DType, TensorView};
use half::f16;
use std::time::Instant;

const SHAPES: [(usize, usize); 3] = [(2048, 640), (262144, 640), (6144, 1536)];
const GS: usize = 32;

/// Group size of `dtype` in the benchmark: q8/q4 columns per scale, lut rows per palette (the
/// converter's default 8).
fn group(dtype: DType) -> usize {
    if dtype.is_lut() { 8 } else { GS }
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 32
    }
    fn f32(&mut self) -> f32 {
        (self.next() as f32 / (1u64 << 32) as f32) * 2.0 - 1.0
    }
}

/// Random but valid bytes of `dtype` for an [n, k] weight.
fn weight_bytes(dtype: DType, n: usize, k: usize, rng: &mut Rng) -> Vec<u8> {
    let len = dtype
        .byte_len(&[n, k], group(dtype))
        .expect("bench shapes are valid");
    let mut b = vec![0u8; len];
    let (payload, scale_bytes) = match dtype {
        DType::Q8 => (n * k, len - n * k),
        DType::Q4 => (n * k / 2, len - n * k / 2),
        DType::Lut4 | DType::Lut6 => {
            let p = n * cellm_engine::tensor::lut::row_bytes(dtype, k);
            (p, len - p)
        }
        _ => (len, 0),
    };
    match dtype {
        DType::F32 => {
            for c in b.chunks_exact_mut(4) {
                c.copy_from_slice(&(rng.f32() * 0.05).to_le_bytes());
            }
        }
        DType::F16 | DType::BF16 => {
            for c in b.chunks_exact_mut(2) {
                let v = rng.f32() * 0.05;
                let bits = if dtype == DType::F16 {
                    f16::from_f32(v).to_bits()
                } else {
                    half::bf16::from_f32(v).to_bits()
                };
                c.copy_from_slice(&bits.to_le_bytes());
            }
        }
        // (any byte is a valid lut index pattern; palettes get the scales' small values)
        DType::Q8 | DType::Q4 | DType::Lut4 | DType::Lut6 => {
            for c in b[..payload].chunks_mut(8) {
                let r = rng.next() ^ (rng.next() << 32);
                for (i, v) in c.iter_mut().enumerate() {
                    *v = (r >> (8 * i)) as u8;
                }
            }
            for c in b[payload..payload + scale_bytes].chunks_exact_mut(2) {
                c.copy_from_slice(&f16::from_f32(0.001 + rng.f32().abs() * 0.01).to_le_bytes());
            }
        }
    }
    b
}

/// Seconds per call: one warm-up, then repeats until `min_s` has passed (at least 3).
fn time(min_s: f64, mut f: impl FnMut()) -> f64 {
    f();
    let start = Instant::now();
    let mut n = 0;
    while n < 3 || start.elapsed().as_secs_f64() < min_s {
        f();
        n += 1;
    }
    start.elapsed().as_secs_f64() / n as f64
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let threads = args
        .iter()
        .position(|a| a == "--threads")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    let quick = args.iter().any(|a| a == "--quick");
    let opt = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let level = opt("--isa").unwrap_or_else(|| "best".into());
    let dtypes: Vec<DType> = opt("--dtype")
        .unwrap_or_else(|| "q4,q8,f16,bf16".into())
        .split(',')
        .filter_map(|d| d.parse().ok())
        .collect();
    let min_s = if quick { 0.1 } else { 0.5 };
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .expect("rayon pool");
    pool.install(|| {
        println!("threads: {threads}, isa: {level}");
        println!("read bandwidth probe: {:.1} GB/s", measure_read_bandwidth());
        println!(
            "{:<6} {:>14} {:>10} {:>12} {:>14} {:>14}",
            "dtype", "shape n x k", "MB", "t=1 ms", "t=1 GB/s", "t=128 GFLOP/s"
        );
        let mut rng = Rng(42);
        // element-wise ops at their per-token sizes (single thread, in cache)
        let mut logits: Vec<f32> = (0..262144).map(|_| rng.f32() * 40.0).collect();
        let s = time(min_s, || softcap(&mut logits, 30.0));
        println!("softcap 262144 logits: {:.1} us", s * 1e6);
        let up: Vec<f32> = (0..12288).map(|_| rng.f32()).collect();
        let mut gate: Vec<f32> = (0..12288).map(|_| rng.f32() * 3.0).collect();
        let s = time(min_s, || gelu_mul(&mut gate, &up));
        println!("gelu_mul 12288: {:.1} us", s * 1e6);
        let mut scores: Vec<f32> = (0..4096).map(|_| rng.f32() * 10.0).collect();
        let s = time(min_s, || softmax(&mut scores));
        println!("softmax 4096: {:.2} us", s * 1e6);
        for &dtype in &dtypes {
            for &(n, k) in &SHAPES {
                let bytes = weight_bytes(dtype, n, k, &mut rng);
                let shape = [n, k];
                let w = TensorView::new(dtype, &shape, group(dtype), &bytes).expect("valid layout");
                let x1: Vec<f32> = (0..k).map(|_| rng.f32()).collect();
                let mut o1 = vec![0f32; n];
                let s1 = time(min_s, || matmul_at_level(&level, &x1, 1, &w, &mut o1));
                let t = 128;
                let xt: Vec<f32> = (0..t * k).map(|_| rng.f32()).collect();
                let mut ot = vec![0f32; t * n];
                let st = time(min_s, || matmul_at_level(&level, &xt, t, &w, &mut ot));
                println!(
                    "{:<6} {:>14} {:>10.1} {:>12.3} {:>14.1} {:>14.1}",
                    dtype.name(),
                    format!("{n}x{k}"),
                    bytes.len() as f64 / 1e6,
                    s1 * 1e3,
                    bytes.len() as f64 / s1 / 1e9,
                    2.0 * (n * k * t) as f64 / st / 1e9
                );
            }
        }
    });
}
