//! Decode matvec bandwidth of the GPU kernels (`engine::kernels::gpu::matmul`, t = 1).
//!
//! `cargo run --release -p cellm-engine --example gpu_bench -- [--gb N] [--warm S] [--sweep] [--chain]
//! [--peak GBps] [--e2b] [--q4 | --q4q8]`
//!
//! For each weight dtype (q4, q8, f16) and shape, uploads random weights (several copies, so
//! repeated dispatches read from memory rather than from the GPU's L2 cache), records many
//! matvecs into one command buffer, and times submit -> device idle (after `--warm` seconds of
//! untimed runs; best of three). Reports the effective
//! weight bandwidth (weight bytes incl. scales / time), also as a share of the adapter's read
//! bandwidth measured with a streaming read kernel (`kernels::gpu::bandwidth`) and of `--peak`
//! (the card's data-sheet figure, e.g. 3350 for an H100 SXM). `--sweep` also tries
//! many tilings (workgroup size, lanes per row, rows per lane group) and prints the best.

use cellm_engine::kernels::gpu::{
    ElemType, Encoder, GpuBuffer, GpuContext, GpuWeight, bandwidth,
    matmul::{Tiling, matmul_tiled},
};
use cellm_engine::tensor::{DType, TensorView};
use half::f16;
use std::time::Instant;

const SHAPES: [(usize, usize); 3] = [(262144, 640), (6144, 1536), (1536, 6144)];
/// `--e2b`: the decode matvecs of Gemma 4 E2B (q, o, MLP single and double width, PLE, head).
const E2B_SHAPES: [(usize, usize); 8] = [
    (2048, 1536),
    (1536, 2048),
    (6144, 1536),
    (1536, 6144),
    (12288, 1536),
    (1536, 12288),
    (256, 1536),
    (1536, 256),
];
const GROUP: usize = 32;

fn random_weight(dtype: DType, rows: usize, cols: usize, seed: u64) -> Vec<u8> {
    let len = dtype.byte_len(&[rows, cols], GROUP).expect("layout");
    let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut out = vec![0u8; len];
    for c in out.chunks_exact_mut(8) {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        c.copy_from_slice(&s.to_le_bytes());
    }
    // finite f16 values where the layout holds f16 (scales, or the whole f16 tensor)
    let halves_from = match dtype {
        DType::Q4 => rows * cols / 2,
        DType::Q8 => rows * cols,
        _ => 0,
    };
    if dtype != DType::F32 {
        for (i, h) in out[halves_from..].chunks_exact_mut(2).enumerate() {
            let v = f16::from_f32(((i * 7919) % 1000) as f32 * 1e-3 - 0.5);
            h.copy_from_slice(&v.to_le_bytes());
        }
    }
    out
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse::<f64>().ok())
    };
    let sweep = args.iter().any(|a| a == "--sweep");
    let chain = args.iter().any(|a| a == "--chain");
    let shapes: &[(usize, usize)] = if args.iter().any(|a| a == "--e2b") {
        &E2B_SHAPES
    } else {
        &SHAPES
    };
    let only_q4 = args.iter().any(|a| a == "--q4");
    let q4q8 = args.iter().any(|a| a == "--q4q8");
    let ctx = match GpuContext::new() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("gpu_bench: {e}");
            std::process::exit(1);
        }
    };
    let cpu_adapter = ctx.adapter().device_type == "Cpu";
    let gb_per_run = arg("--gb").unwrap_or(if cpu_adapter { 0.4 } else { 8.0 });
    let peak = arg("--peak");
    // untimed work before each measurement, seconds (GPU clocks ramp up under load)
    let warm_s = arg("--warm").unwrap_or(if cpu_adapter { 0.0 } else { 0.5 });
    println!(
        "adapter: {}  shader-f16: {}  max binding: {} MiB",
        ctx.adapter(),
        ctx.adapter().shader_f16,
        ctx.max_binding_bytes() >> 20
    );
    let measured = match bandwidth::measure_read_bandwidth(&ctx) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("gpu_bench: bandwidth probe: {e}");
            std::process::exit(1);
        }
    };
    println!("measured read bandwidth (streaming read kernel): {measured:.0} GB/s");
    println!(
        "dtype  shape           MB/matrix  parts copies  iters  wg/lanes/rows   ms/matvec    GB/s  of measured"
    );
    let mut summary = Vec::new();
    let dtypes: &[DType] = if only_q4 {
        &[DType::Q4]
    } else if q4q8 {
        &[DType::Q4, DType::Q8]
    } else {
        &[DType::Q4, DType::Q8, DType::F16]
    };
    for &dtype in dtypes {
        for &(rows, cols) in shapes {
            let shape = [rows, cols];
            let bytes = dtype.byte_len(&shape, GROUP).expect("layout");
            // ~10x the H100's 50 MB L2 in total
            let copies = (512usize << 20).div_ceil(bytes).clamp(1, 64);
            let copies = if cpu_adapter { 1 } else { copies };
            let mut weights = Vec::new();
            for c in 0..copies {
                let data = random_weight(dtype, rows, cols, c as u64 + 1);
                let view = TensorView::new(dtype, &shape, GROUP, &data).expect("view");
                match GpuWeight::upload(&ctx, &view) {
                    Ok(w) => weights.push(w),
                    Err(e) => {
                        eprintln!("upload {dtype} {rows}x{cols}: {e}");
                        std::process::exit(1);
                    }
                }
            }
            let x = GpuBuffer::from_f32(&ctx, &vec![0.01f32; cols]);
            // one output per copy: consecutive dispatches are independent, so no barrier sits
            // between them; `--chain` writes one output (a barrier per dispatch, as in a model)
            let ys: Vec<GpuBuffer> = (0..if chain { 1 } else { copies })
                .map(|_| GpuBuffer::zeros(&ctx, rows, ElemType::F32))
                .collect();
            let iters = ((gb_per_run * 1e9 / bytes as f64) as usize).clamp(copies.max(4), 4000);
            let mut tilings: Vec<Option<Tiling>> = vec![None];
            if sweep {
                for wg in [128u32, 256] {
                    for lanes in [4u32, 8, 16, 32, 64] {
                        for rows in [1u32, 2] {
                            tilings.push(Some(Tiling { wg, lanes, rows }));
                        }
                    }
                }
            }
            let mut best = (0f64, None);
            let mut default_gbs = 0f64;
            for tiling in tilings {
                let record = |n: usize| {
                    let mut enc = Encoder::new(&ctx);
                    for i in 0..n {
                        matmul_tiled(
                            &mut enc,
                            &x,
                            1,
                            &weights[i % copies],
                            &ys[i % ys.len()],
                            tiling,
                        )
                        .expect("matmul");
                    }
                    enc.finish().expect("encode")
                };
                // warm-up: pipelines, first touches, and long enough for the GPU to leave
                // its idle clocks (the weights were just generated on the CPU)
                let warm = Instant::now();
                while warm.elapsed().as_secs_f64() < warm_s {
                    ctx.queue().submit([record(iters)]);
                    ctx.wait().expect("wait");
                }
                // best of three timed runs
                let mut dt = f64::MAX;
                for _ in 0..3 {
                    let cb = record(iters);
                    let t0 = Instant::now();
                    ctx.queue().submit([cb]);
                    let (tx, rx) = std::sync::mpsc::channel();
                    ctx.queue().on_submitted_work_done(move || {
                        let _ = tx.send(());
                    });
                    ctx.wait().expect("wait");
                    let _ = rx.recv();
                    dt = dt.min(t0.elapsed().as_secs_f64());
                }
                let gbs = bytes as f64 * iters as f64 / dt / 1e9;
                let frac = peak.map_or(String::new(), |p| {
                    format!("  {:.0}% of {p} GB/s", 100.0 * gbs / p)
                });
                let of_measured = 100.0 * gbs / measured;
                println!(
                    "{:<6} {:>7}x{:<7} {:>9.1}  {:>5} {:>6} {:>6}  {:>13}  {:>12.4} {:>8.1} {of_measured:>10.0}%{frac}",
                    dtype.name(),
                    rows,
                    cols,
                    bytes as f64 / 1e6,
                    weights[0].n_parts(),
                    copies,
                    iters,
                    label(tiling, rows, cols, dtype),
                    dt * 1e3 / iters as f64,
                    gbs
                );
                if gbs > best.0 {
                    best = (gbs, tiling);
                }
                if tiling.is_none() {
                    default_gbs = gbs;
                }
            }
            summary.push(format!(
                "{:<4} {:>7}x{:<5}  default {:<12} {:>7.1} GB/s   best {:<12} {:>7.1} GB/s",
                dtype.name(),
                rows,
                cols,
                label(None, rows, cols, dtype),
                default_gbs,
                label(best.1, rows, cols, dtype),
                best.0
            ));
        }
    }
    if sweep {
        println!("summary (t = 1 matvec, effective weight bandwidth):");
        for l in summary {
            println!("{l}");
        }
    }
}

/// "wg/lanes/rows", marked `*` for the default tiling.
fn label(t: Option<Tiling>, rows: usize, cols: usize, dtype: DType) -> String {
    let units = match dtype {
        DType::Q4 => cols / 32,
        DType::Q8 => cols / 16,
        DType::F16 => cols / 8,
        _ => cols / 4,
    };
    let (t, mark) = match t {
        Some(t) => (t, ""),
        None => (Tiling::for_shape(rows, units), "*"),
    };
    format!("{}/{}/{}{mark}", t.wg, t.lanes, t.rows)
}
