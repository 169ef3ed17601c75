//! The adapter's achievable device-memory read bandwidth, measured with a streaming read
//! kernel: the limit that a decode step (a pass over the weights) is held against by `cellm
//! bench` on the GPU, where the CPU's memory bandwidth would be the wrong yardstick.

use super::{ElemType, Encoder, GpuBuffer, GpuContext, GpuError};
use std::time::Instant;

const SHADER: &str = include_str!("bandwidth.wgsl");

/// Workgroups of the probe: enough 256-thread groups to keep every SM's loads in flight.
const GROUPS: u32 = 4096;

/// Reads of the buffer per timed submit.
const READS: usize = 8;

/// Measured read bandwidth in GB/s (1e9 bytes/s): the best of a few submits of [`READS`]
/// passes over a buffer of up to 1 GiB (16 MiB on CPU adapters such as lavapipe), after one
/// untimed submit.
pub fn measure_read_bandwidth(ctx: &GpuContext) -> Result<f64, GpuError> {
    let cap: u64 = if ctx.adapter().device_type == "Cpu" {
        16 << 20
    } else {
        1 << 30
    };
    let bytes = ctx.max_binding_bytes().min(cap) / 16 * 16;
    let src = GpuBuffer::zeros(ctx, (bytes / 4) as usize, ElemType::F32);
    let sink = GpuBuffer::zeros(ctx, 64, ElemType::F32);
    let pipeline = ctx.pipeline("bandwidth", SHADER, "read_all", &[]);
    let n = (bytes / 16) as u32;
    let run = || -> Result<f64, GpuError> {
        let mut enc = Encoder::new(ctx);
        for _ in 0..READS {
            enc.dispatch(pipeline.clone(), &[n], &[&src.buf, &sink.buf], GROUPS);
        }
        let t0 = Instant::now();
        enc.submit()?;
        ctx.wait()?;
        Ok(t0.elapsed().as_secs_f64())
    };
    run()?;
    let mut best = f64::MAX;
    for _ in 0..3 {
        best = best.min(run()?);
    }
    Ok((READS as u64 * bytes) as f64 / best.max(1e-9) / 1e9)
}

/// The assembled source (see `sources.rs`).
pub(super) fn shaders() -> Vec<super::AssembledShader> {
    vec![super::AssembledShader::new("bandwidth", SHADER)]
}

#[cfg(test)]
mod tests {
    use super::super::test_util::ctx;
    use super::*;

    #[test]
    fn gpu_read_bandwidth_is_positive_and_finite() {
        let Some(ctx) = ctx() else { return };
        let gbs = measure_read_bandwidth(ctx).unwrap();
        assert!(gbs.is_finite() && gbs > 0.0, "{gbs}");
    }
}
