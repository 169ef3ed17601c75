//! RMSNorm in both Gemma flavours (the CPU `rmsnorm`), one workgroup per row: in place, or from
//! one buffer into another (stored, or added to a residual stream).

use super::{Encoder, GpuBuffer, GpuError, buffer::ElemType, shape_err};

static SHADER: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| super::with_block_reduce(include_str!("norm.wgsl")));

/// The weight of an RMSNorm: scales by `w`, by `1 + w` when `plus_one` (Gemma 3), or not at all.
#[derive(Clone, Copy)]
pub struct NormWeight<'w> {
    pub w: Option<&'w GpuBuffer>,
    pub eps: f32,
    pub plus_one: bool,
}

impl NormWeight<'_> {
    /// The shaders' weight mode: 0 none, 1 `w`, 2 `1 + w`.
    pub(crate) fn mode(&self) -> u32 {
        match (self.w, self.plus_one) {
            (None, _) => 0,
            (Some(_), false) => 1,
            (Some(_), true) => 2,
        }
    }
}

/// Where [`rmsnorm_to`] puts its rows.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Into {
    /// `dst = norm(src)`.
    Store,
    /// `dst = (dst + norm(src)) * s`: a residual add (Gemma 4 scales layer outputs).
    AddScaled(f32),
}

fn checked<'c>(
    enc: &Encoder<'c>,
    x: &GpuBuffer,
    rows: usize,
    dim: usize,
    nw: NormWeight<'_>,
) -> Result<(u32, &'c wgpu::Buffer), GpuError> {
    if x.elem != ElemType::F32 || dim == 0 || x.len < rows * dim {
        return Err(shape_err(
            "rmsnorm",
            format!("x[{}] for {rows}x{dim}", x.len),
        ));
    }
    if let Some(w) = nw.w
        && (w.elem != ElemType::F32 || w.len < dim)
    {
        return Err(shape_err(
            "rmsnorm",
            format!("weight[{}] for dim {dim}", w.len),
        ));
    }
    Ok((nw.mode(), &enc.ctx().dummy))
}

/// The register-held variant of `entry` for rows of `dim` (`dim % 4 == 0`, at most 4096 wide:
/// every Gemma width), else the general loop.
fn pipeline_for(enc: &Encoder<'_>, entry: &'static str, dim: usize) -> wgpu::ComputePipeline {
    const VEC: [&str; 3] = ["rmsnorm_v", "rmsnorm_to_v", "rmsnorm_add_norm_v"];
    const GENERAL: [&str; 3] = ["rmsnorm", "rmsnorm_to", "rmsnorm_add_norm"];
    let k = GENERAL.iter().position(|e| *e == entry).unwrap_or(0);
    if dim.is_multiple_of(4) && dim <= 4096 {
        let v4 = dim.div_ceil(1024) as f64;
        enc.ctx().pipeline("norm", &SHADER, VEC[k], &[("V4", v4)])
    } else {
        enc.ctx().pipeline("norm", &SHADER, GENERAL[k], &[])
    }
}

/// Records an in-place RMSNorm of each row of `dim` in the first `rows * dim` values of `x`;
/// `w` (f32, `dim` values) scales by `w`, or by `1 + w` when `plus_one` (Gemma 3).
pub fn rmsnorm(
    enc: &mut Encoder<'_>,
    x: &GpuBuffer,
    rows: usize,
    dim: usize,
    w: Option<&GpuBuffer>,
    eps: f32,
    plus_one: bool,
) -> Result<(), GpuError> {
    let nw = NormWeight { w, eps, plus_one };
    let (mode, dummy) = checked(enc, x, rows, dim, nw)?;
    let pipeline = pipeline_for(enc, "rmsnorm", dim);
    let wbuf = w.map_or(dummy, |w| &w.buf);
    let params = [dim as u32, rows as u32, eps.to_bits(), mode, 0, 0, 0];
    enc.dispatch(pipeline, &params, &[&x.buf, wbuf], rows as u32);
    Ok(())
}

/// Records the RMSNorm of `rows` rows of `dim` of `src` into `dst` (`src` is not changed), as
/// [`Into`] says. Saves the copy (before a pre-norm) or the add (after a post-norm) that the
/// in-place norm would need.
pub fn rmsnorm_to(
    enc: &mut Encoder<'_>,
    src: &GpuBuffer,
    dst: &GpuBuffer,
    rows: usize,
    dim: usize,
    nw: NormWeight<'_>,
    into: Into,
) -> Result<(), GpuError> {
    let (mode, dummy) = checked(enc, src, rows, dim, nw)?;
    if dst.elem != ElemType::F32 || dst.len < rows * dim || dst.buf == src.buf {
        return Err(shape_err(
            "rmsnorm_to",
            format!("dst[{}] for {rows}x{dim} (must differ from src)", dst.len),
        ));
    }
    let pipeline = pipeline_for(enc, "rmsnorm_to", dim);
    let wbuf = nw.w.map_or(dummy, |w| &w.buf);
    let (add, scale) = match into {
        Into::Store => (0u32, 1f32),
        Into::AddScaled(s) => (1, s),
    };
    let params = [
        dim as u32,
        rows as u32,
        nw.eps.to_bits(),
        mode,
        add,
        scale.to_bits(),
        0,
    ];
    enc.dispatch(pipeline, &params, &[&src.buf, wbuf, &dst.buf], rows as u32);
    Ok(())
}

/// Records `resid = (resid + norm(src)) * scale` and then `out = next(resid)`: a block's
/// post-norm and residual add followed by the next block's pre-norm, in one dispatch (rows up to
/// 4096 wide, or 2048 when not a multiple of 4; wider rows take two [`rmsnorm_to`] dispatches).
#[allow(clippy::too_many_arguments)]
pub fn rmsnorm_add_norm(
    enc: &mut Encoder<'_>,
    src: &GpuBuffer,
    resid: &GpuBuffer,
    rows: usize,
    dim: usize,
    post: NormWeight<'_>,
    scale: f32,
    next: NormWeight<'_>,
    out: &GpuBuffer,
) -> Result<(), GpuError> {
    let fits = dim <= 2048 || dim.is_multiple_of(4) && dim <= 4096;
    if !fits || post.eps != next.eps {
        rmsnorm_to(enc, src, resid, rows, dim, post, Into::AddScaled(scale))?;
        return rmsnorm_to(enc, resid, out, rows, dim, next, Into::Store);
    }
    let (mode, dummy) = checked(enc, src, rows, dim, post)?;
    let (mode2, _) = checked(enc, resid, rows, dim, next)?;
    let distinct = src.buf != resid.buf && src.buf != out.buf && resid.buf != out.buf;
    if out.elem != ElemType::F32 || out.len < rows * dim || !distinct {
        return Err(shape_err(
            "rmsnorm_add_norm",
            format!(
                "out[{}] for {rows}x{dim} (src, resid and out must differ)",
                out.len
            ),
        ));
    }
    let pipeline = pipeline_for(enc, "rmsnorm_add_norm", dim);
    let params = [
        dim as u32,
        rows as u32,
        post.eps.to_bits(),
        mode,
        1,
        scale.to_bits(),
        mode2,
    ];
    let w1 = post.w.map_or(dummy, |w| &w.buf);
    let w2 = next.w.map_or(dummy, |w| &w.buf);
    enc.dispatch(
        pipeline,
        &params,
        &[&src.buf, w1, &resid.buf, w2, &out.buf],
        rows as u32,
    );
    Ok(())
}

/// Records Gemma 4's per-layer-input combination in place over `rows` rows of `dim`:
/// `x = (norm(x * in_scale) * w + tok) * out_scale` (one dispatch for a scale, a norm, an add
/// and a scale, with the same f32 operations in the same order).
#[allow(clippy::too_many_arguments)]
pub fn ple_combine(
    enc: &mut Encoder<'_>,
    x: &GpuBuffer,
    tok: &GpuBuffer,
    rows: usize,
    dim: usize,
    w: &GpuBuffer,
    eps: f32,
    (in_scale, out_scale): (f32, f32),
) -> Result<(), GpuError> {
    let nw = NormWeight {
        w: Some(w),
        eps,
        plus_one: false,
    };
    let (mode, _) = checked(enc, x, rows, dim, nw)?;
    if tok.elem != ElemType::F32 || tok.len < rows * dim || tok.buf == x.buf {
        return Err(shape_err(
            "ple_combine",
            format!("tok[{}] for {rows}x{dim} (must differ from x)", tok.len),
        ));
    }
    let pipeline = enc.ctx().pipeline("norm", &SHADER, "ple_combine", &[]);
    let params = [
        dim as u32,
        rows as u32,
        eps.to_bits(),
        mode,
        0,
        out_scale.to_bits(),
        0,
        in_scale.to_bits(),
    ];
    enc.dispatch(pipeline, &params, &[&x.buf, &w.buf, &tok.buf], rows as u32);
    Ok(())
}

/// The assembled source with every register width [`pipeline_for`] picks (see `sources.rs`).
pub(super) fn shaders() -> Vec<super::AssembledShader> {
    let sets = (1..=4).map(|v4| vec![("V4", v4 as f64)]).collect();
    vec![super::AssembledShader::new("norm", SHADER.as_str()).with(sets)]
}

#[cfg(test)]
mod tests {
    use super::super::test_util::{ctx, max_abs_diff, random};
    use super::*;
    use crate::kernels::cpu;

    #[test]
    fn gpu_ple_combine_matches_separate_ops() {
        let Some(ctx) = ctx() else { return };
        let (rows, dim) = (7, 256);
        let x = random(rows * dim, 81);
        let tok = random(rows * dim, 82);
        let w = GpuBuffer::from_f32(ctx, &random(dim, 83));
        let (c, s) = (0.037f32, std::f32::consts::FRAC_1_SQRT_2);
        let (got, want) = (GpuBuffer::from_f32(ctx, &x), GpuBuffer::from_f32(ctx, &x));
        let tb = GpuBuffer::from_f32(ctx, &tok);
        let mut enc = Encoder::new(ctx);
        ple_combine(&mut enc, &got, &tb, rows, dim, &w, 1e-6, (c, s)).unwrap();
        let n = rows * dim;
        crate::kernels::gpu::elementwise::scale(&mut enc, &want, n, c).unwrap();
        rmsnorm(&mut enc, &want, rows, dim, Some(&w), 1e-6, false).unwrap();
        crate::kernels::gpu::elementwise::add(&mut enc, &want, &tb, n).unwrap();
        crate::kernels::gpu::elementwise::scale(&mut enc, &want, n, s).unwrap();
        enc.submit().unwrap();
        let (g, wv) = (ctx.read_f32(&got).unwrap(), ctx.read_f32(&want).unwrap());
        assert!(max_abs_diff(&g, &wv) <= 1e-6, "{}", max_abs_diff(&g, &wv));
    }

    #[test]
    fn gpu_rmsnorm_matches_cpu() {
        let Some(ctx) = ctx() else { return };
        for (rows, dim) in [(3, 640), (8, 37), (1, 1536), (2, 3000)] {
            let x: Vec<f32> = random(rows * dim, 3).iter().map(|v| v * 4.0).collect();
            let w = random(dim, 5);
            for (use_w, plus_one) in [(false, false), (true, false), (true, true)] {
                let xb = GpuBuffer::from_f32(ctx, &x);
                let wb = GpuBuffer::from_f32(ctx, &w);
                let mut enc = Encoder::new(ctx);
                rmsnorm(
                    &mut enc,
                    &xb,
                    rows,
                    dim,
                    use_w.then_some(&wb),
                    1e-6,
                    plus_one,
                )
                .unwrap();
                enc.submit().unwrap();
                let got = ctx.read_f32(&xb).unwrap();
                let mut want = x.clone();
                cpu::rmsnorm(&mut want, dim, use_w.then_some(&w[..]), 1e-6, plus_one);
                let err = max_abs_diff(&got, &want);
                assert!(
                    err < 1e-5,
                    "{rows}x{dim} w={use_w} plus_one={plus_one}: {err}"
                );
            }
        }
    }

    #[test]
    fn gpu_rmsnorm_to_stores_and_adds() {
        let Some(ctx) = ctx() else { return };
        for (rows, dim) in [(3, 300), (2, 2600)] {
            let x = random(rows * dim, 8);
            let res = random(rows * dim, 9);
            let w = random(dim, 10);
            fn nw(wb: &GpuBuffer) -> NormWeight<'_> {
                NormWeight {
                    w: Some(wb),
                    eps: 1e-6,
                    plus_one: true,
                }
            }
            let mut normed = x.clone();
            cpu::rmsnorm(&mut normed, dim, Some(&w[..]), 1e-6, true);
            for into in [Into::Store, Into::AddScaled(0.5)] {
                let (xb, wb) = (GpuBuffer::from_f32(ctx, &x), GpuBuffer::from_f32(ctx, &w));
                let db = GpuBuffer::from_f32(ctx, &res);
                let mut enc = Encoder::new(ctx);
                rmsnorm_to(&mut enc, &xb, &db, rows, dim, nw(&wb), into).unwrap();
                enc.submit().unwrap();
                let want: Vec<f32> = match into {
                    Into::Store => normed.clone(),
                    Into::AddScaled(s) => {
                        res.iter().zip(&normed).map(|(r, n)| (r + n) * s).collect()
                    }
                };
                assert!(
                    max_abs_diff(&ctx.read_f32(&db).unwrap(), &want) < 1e-5,
                    "{into:?}"
                );
                assert_eq!(ctx.read_f32(&xb).unwrap(), x, "src unchanged");
            }
        }
        let xb = GpuBuffer::from_f32(ctx, &random(64, 1));
        let mut enc = Encoder::new(ctx);
        let wb = GpuBuffer::from_f32(ctx, &random(64, 2));
        let nw = NormWeight {
            w: Some(&wb),
            eps: 1e-6,
            plus_one: false,
        };
        assert!(rmsnorm_to(&mut enc, &xb, &xb, 1, 64, nw, Into::Store).is_err());
    }

    #[test]
    fn gpu_rmsnorm_add_norm_matches_two_norms() {
        let Some(ctx) = ctx() else { return };
        for (rows, dim) in [(2, 640), (1, 2048), (2, 2600)] {
            let (a, x) = (random(rows * dim, 11), random(rows * dim, 12));
            let (w1, w2) = (random(dim, 13), random(dim, 14));
            let bufs: Vec<GpuBuffer> = [&a, &x, &w1, &w2]
                .iter()
                .map(|v| GpuBuffer::from_f32(ctx, v))
                .collect();
            let out = GpuBuffer::zeros(ctx, rows * dim, ElemType::F32);
            let nw = |w| NormWeight {
                w: Some(w),
                eps: 1e-6,
                plus_one: true,
            };
            let mut enc = Encoder::new(ctx);
            let (post, next) = (nw(&bufs[2]), nw(&bufs[3]));
            rmsnorm_add_norm(
                &mut enc, &bufs[0], &bufs[1], rows, dim, post, 0.7, next, &out,
            )
            .unwrap();
            enc.submit().unwrap();
            let mut normed = a.clone();
            cpu::rmsnorm(&mut normed, dim, Some(&w1[..]), 1e-6, true);
            let resid: Vec<f32> = x.iter().zip(&normed).map(|(x, n)| (x + n) * 0.7).collect();
            let mut want = resid.clone();
            cpu::rmsnorm(&mut want, dim, Some(&w2[..]), 1e-6, true);
            assert!(max_abs_diff(&ctx.read_f32(&bufs[1]).unwrap(), &resid) < 1e-5);
            assert!(
                max_abs_diff(&ctx.read_f32(&out).unwrap(), &want) < 1e-5,
                "{rows}x{dim}"
            );
        }
    }
}
