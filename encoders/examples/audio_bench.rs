//! CPU vs GPU audio tower on a real model file and WAV: encodes every 30 s clip of the WAV with
//! the CPU tower and with [`AudioGpu`] (one warm-up, then 3 timed runs each), and prints the
//! times and the largest difference between the two.
//!
//! `cargo run --release -p cellm-encoders --example audio_bench -- MODEL.cellm WAV`
//! (a synthetic E2B-shaped model: `cellm convert synthetic:gemma4-e2b-media -o m.cellm`).

use cellm_encoders::audio::tower::gpu::AudioGpu;
use cellm_encoders::audio::{AudioTower, LogMelExtractor, LogMelFeatures, load_wav_16k};
use cellm_engine::format::CellmFile;
use cellm_engine::kernels::gpu::GpuContext;
use std::sync::Arc;
use std::time::Instant;

const RUNS: usize = 3;

/// Soft tokens of every clip, and the best and mean of `RUNS` timed runs after a warm-up (ms).
fn time(
    clips: &[LogMelFeatures],
    encode: impl Fn(&LogMelFeatures) -> Result<Vec<f32>, cellm_encoders::EncoderError>,
) -> Result<(Vec<Vec<f32>>, f64, f64), cellm_encoders::EncoderError> {
    let out = clips.iter().map(&encode).collect::<Result<Vec<_>, _>>()?;
    let mut times = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        let t = Instant::now();
        for c in clips {
            encode(c)?;
        }
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let best = times.iter().copied().fold(f64::INFINITY, f64::min);
    Ok((out, best, times.iter().sum::<f64>() / RUNS as f64))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [model, wav] = args.as_slice() else {
        return Err("usage: audio_bench MODEL.cellm WAV".into());
    };
    let file = CellmFile::open(model)?;
    let tower = AudioTower::load(&file)?.ok_or("the model has no audio tower")?;
    let samples = load_wav_16k(std::path::Path::new(wav))?;
    let t = Instant::now();
    let clips = LogMelExtractor::new().extract_clips(&samples);
    let features_ms = t.elapsed().as_secs_f64() * 1e3;
    let frames: usize = clips.iter().map(|c| c.frames).sum();
    println!(
        "{wav}: {:.2} s of audio, {} clip(s), {frames} feature frames (features {features_ms:.1} ms, CPU)",
        samples.len() as f64 / 16_000.0,
        clips.len()
    );

    let ctx = Arc::new(GpuContext::new()?);
    println!("GPU: {}", ctx.adapter());
    let t = Instant::now();
    let gpu = AudioGpu::new(ctx, &tower)?;
    println!("GPU upload {:.0} ms", t.elapsed().as_secs_f64() * 1e3);

    let threads = rayon::current_num_threads();
    let (cpu_out, cpu_best, cpu_mean) = time(&clips, |c| tower.encode(c))?;
    println!("CPU tower+embed ({threads} threads): best {cpu_best:.1} ms, mean {cpu_mean:.1} ms");
    let (gpu_out, gpu_best, gpu_mean) = time(&clips, |c| gpu.encode(c))?;
    println!("GPU tower+embed: best {gpu_best:.1} ms, mean {gpu_mean:.1} ms");

    let (mut max_abs, mut max_ref, mut tokens) = (0f32, 0f32, 0);
    let (mut diff2, mut ref2) = (0f64, 0f64);
    for (c, g) in cpu_out.iter().zip(&gpu_out) {
        if c.len() != g.len() {
            return Err(format!("CPU gave {} values, GPU {}", c.len(), g.len()).into());
        }
        tokens += c.len() / gpu.text_hidden();
        for (a, b) in c.iter().zip(g) {
            max_abs = max_abs.max((a - b).abs());
            max_ref = max_ref.max(a.abs());
            diff2 += ((a - b) as f64).powi(2);
            ref2 += (*a as f64).powi(2);
        }
    }
    println!(
        "{tokens} soft tokens; max |CPU - GPU| = {max_abs:.3e} (max |CPU| {max_ref:.3e}), \
         relative L2 {:.2e}; speed-up {:.1}x",
        (diff2 / ref2.max(1e-30)).sqrt(),
        cpu_best / gpu_best
    );
    Ok(())
}
