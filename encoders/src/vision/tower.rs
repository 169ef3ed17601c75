//! The Gemma 4 vision tower (gemma-spec §4.2–4.4): patch embedding with a learned 2-D position
//! table, pre/post-norm ViT layers with clipped linears, q/k/v norms and 2-D axial RoPE,
//! bidirectional attention over the real patches only, 3×3 average pooling, `√hidden` scaling,
//! optional standardisation, then the `embed_vision` projection into the text hidden size.
//!
//! Padding patches are never computed: with their keys masked they cannot influence the real
//! patches, and the pooler zeroes them, so the result equals transformers' padded computation.

use super::PreprocessedImage;
use super::preprocess::preprocess_file;
use crate::EncoderError;
use crate::clipped::{ClippedLinear, matmul_blocked};
use crate::embed::embed_soft_tokens;
use cellm_engine::format::CellmFile;
use cellm_engine::kernels::cpu::{gelu_mul, matmul, rmsnorm, rope_inv_freq, softmax};
use cellm_engine::session::{MediaEmbedding, MediaKind};
use cellm_engine::tensor::{DType, TensorView};
use rayon::prelude::*;
use std::path::Path;

const TOWER: &str = "model.vision_tower";
pub(crate) const EMBEDDER: &str = "model.embed_vision";
/// Queries per attention block (bounds the score buffer to QUERY_BLOCK × patches).
const QUERY_BLOCK: usize = 64;

/// The numbers of `vision_config` the tower needs.
#[derive(Clone, Debug)]
pub struct VisionConfig {
    pub hidden: usize,
    pub intermediate: usize,
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub patch_size: usize,
    pub pooling_kernel: usize,
    pub position_embedding_size: usize,
    pub rope_theta: f32,
    pub eps: f32,
    pub standardize: bool,
}

impl VisionConfig {
    /// Reads `config["vision_config"]`; None when the model has no vision config.
    pub fn from_model_config(config: &serde_json::Value) -> Result<Option<Self>, EncoderError> {
        let Some(v) = config.get("vision_config").filter(|v| v.is_object()) else {
            return Ok(None);
        };
        let get = |k: &str, default: Option<usize>| -> Result<usize, EncoderError> {
            match v.get(k).and_then(|x| x.as_u64()) {
                Some(x) => Ok(x as usize),
                None => default.ok_or_else(|| {
                    EncoderError::Config(format!("vision_config has no integer '{k}'"))
                }),
            }
        };
        let hidden = get("hidden_size", None)?;
        let heads = get("num_attention_heads", None)?;
        let head_dim = get("head_dim", Some(hidden / heads.max(1)))?;
        let rope_theta = v
            .get("rope_parameters")
            .and_then(|r| r.get("rope_theta"))
            .and_then(|x| x.as_f64())
            .unwrap_or(100.0) as f32;
        let cfg = Self {
            hidden,
            intermediate: get("intermediate_size", None)?,
            layers: get("num_hidden_layers", None)?,
            heads,
            kv_heads: get("num_key_value_heads", Some(heads))?,
            head_dim,
            patch_size: get("patch_size", Some(16))?,
            pooling_kernel: get("pooling_kernel_size", Some(3))?,
            position_embedding_size: get("position_embedding_size", None)?,
            rope_theta,
            eps: v
                .get("rms_norm_eps")
                .and_then(|x| x.as_f64())
                .unwrap_or(1e-6) as f32,
            standardize: v
                .get("standardize")
                .and_then(|x| x.as_bool())
                .unwrap_or(false),
        };
        if cfg.heads == 0
            || cfg.kv_heads == 0
            || !cfg.heads.is_multiple_of(cfg.kv_heads)
            || !cfg.head_dim.is_multiple_of(4)
            || cfg.patch_size != super::preprocess::PATCH_SIZE
            || cfg.pooling_kernel != super::preprocess::POOLING_KERNEL
        {
            return Err(EncoderError::Config(format!(
                "unsupported vision_config: {cfg:?}"
            )));
        }
        Ok(Some(cfg))
    }
}

pub(crate) struct Layer<'a> {
    pub(crate) q: ClippedLinear<'a>,
    pub(crate) k: ClippedLinear<'a>,
    pub(crate) v: ClippedLinear<'a>,
    pub(crate) o: ClippedLinear<'a>,
    pub(crate) gate: ClippedLinear<'a>,
    pub(crate) up: ClippedLinear<'a>,
    pub(crate) down: ClippedLinear<'a>,
    pub(crate) input_ln: Vec<f32>,
    pub(crate) post_attn_ln: Vec<f32>,
    pub(crate) pre_ff_ln: Vec<f32>,
    pub(crate) post_ff_ln: Vec<f32>,
    pub(crate) q_norm: Vec<f32>,
    pub(crate) k_norm: Vec<f32>,
}

/// Intermediate results of one image (for parity tests).
#[derive(Clone, Debug)]
pub struct VisionActivations {
    /// `[real patches, hidden]`, in the order of the real patches in the input.
    pub patch_embeddings: Vec<f32>,
    /// Output of every encoder layer, `[real patches, hidden]` each.
    pub layer_out: Vec<Vec<f32>>,
    /// Pooled, scaled (and standardised) soft tokens `[soft tokens, hidden]`.
    pub soft_tokens: Vec<f32>,
    /// After `embed_vision`: `[soft tokens, text hidden]`.
    pub embedded: Vec<f32>,
}

/// The real (non-padding) patches of one image (see [`VisionTower::real_patches`]).
pub(crate) struct RealPatches {
    /// Indices of the real patches among the image's (padded) patches.
    pub real: Vec<usize>,
    /// `(x, y)` grid position of every real patch.
    pub pos: Vec<(usize, usize)>,
    /// `[real patches, patch_dim]`: `2 (p - 0.5)` of their pixels.
    pub pixels: Vec<f32>,
}

/// The vision tower of a `.cellm` Gemma 4 model, borrowing its weights from the file.
pub struct VisionTower<'a> {
    pub(crate) file: &'a CellmFile,
    pub config: VisionConfig,
    pub(crate) input_proj: TensorView<'a>,
    pub(crate) pos_table: TensorView<'a>,
    pub(crate) layers: Vec<Layer<'a>>,
    pub(crate) standardize: Option<(Vec<f32>, Vec<f32>)>,
    pub(crate) inv_freq: Vec<f32>,
    pub(crate) text_hidden: usize,
}

fn vec_of(file: &CellmFile, name: &str, len: usize) -> Result<Vec<f32>, EncoderError> {
    let v = file.tensor(name)?.to_f32_vec();
    if v.len() != len {
        return Err(EncoderError::Config(format!(
            "{name} has {} values, expected {len}",
            v.len()
        )));
    }
    Ok(v)
}

fn check_linear(
    l: &ClippedLinear<'_>,
    name: &str,
    out: usize,
    inp: usize,
) -> Result<(), EncoderError> {
    if l.out_dim() != out || l.in_dim() != inp {
        return Err(EncoderError::Config(format!(
            "{name} is [{}, {}], expected [{out}, {inp}]",
            l.out_dim(),
            l.in_dim()
        )));
    }
    Ok(())
}

impl<'a> VisionTower<'a> {
    /// Loads the tower; `Ok(None)` when the model has no vision tower.
    pub fn load(file: &'a CellmFile) -> Result<Option<Self>, EncoderError> {
        let Some(cfg) = VisionConfig::from_model_config(&file.header().config)? else {
            return Ok(None);
        };
        let input_name = format!("{TOWER}.patch_embedder.input_proj.weight");
        if !file.contains(&input_name) {
            return Ok(None);
        }
        let (h, hd) = (cfg.hidden, cfg.head_dim);
        let patch_dim = cfg.patch_size * cfg.patch_size * 3;
        let input_proj = file.tensor(&input_name)?;
        if input_proj.rows() != h || input_proj.cols() != patch_dim {
            return Err(EncoderError::Config(format!(
                "{input_name} is {:?}, expected [{h}, {patch_dim}]",
                input_proj.shape
            )));
        }
        let pos_name = format!("{TOWER}.patch_embedder.position_embedding_table");
        let pos_table = file.tensor(&pos_name)?;
        if pos_table.shape != [2, cfg.position_embedding_size, h] {
            return Err(EncoderError::Config(format!(
                "{pos_name} is {:?}, expected [2, {}, {h}]",
                pos_table.shape, cfg.position_embedding_size
            )));
        }
        let mut layers = Vec::with_capacity(cfg.layers);
        for l in 0..cfg.layers {
            let p = format!("{TOWER}.encoder.layers.{l}");
            let lin =
                |n: &str, out: usize, inp: usize| -> Result<ClippedLinear<'a>, EncoderError> {
                    let name = format!("{p}.{n}");
                    let c = ClippedLinear::load(file, &name)?;
                    check_linear(&c, &name, out, inp)?;
                    Ok(c)
                };
            let (qd, kvd) = (cfg.heads * hd, cfg.kv_heads * hd);
            layers.push(Layer {
                q: lin("self_attn.q_proj", qd, h)?,
                k: lin("self_attn.k_proj", kvd, h)?,
                v: lin("self_attn.v_proj", kvd, h)?,
                o: lin("self_attn.o_proj", h, qd)?,
                gate: lin("mlp.gate_proj", cfg.intermediate, h)?,
                up: lin("mlp.up_proj", cfg.intermediate, h)?,
                down: lin("mlp.down_proj", h, cfg.intermediate)?,
                input_ln: vec_of(file, &format!("{p}.input_layernorm.weight"), h)?,
                post_attn_ln: vec_of(file, &format!("{p}.post_attention_layernorm.weight"), h)?,
                pre_ff_ln: vec_of(file, &format!("{p}.pre_feedforward_layernorm.weight"), h)?,
                post_ff_ln: vec_of(file, &format!("{p}.post_feedforward_layernorm.weight"), h)?,
                q_norm: vec_of(file, &format!("{p}.self_attn.q_norm.weight"), hd)?,
                k_norm: vec_of(file, &format!("{p}.self_attn.k_norm.weight"), hd)?,
            });
        }
        let standardize = if cfg.standardize {
            Some((
                vec_of(file, &format!("{TOWER}.std_bias"), h)?,
                vec_of(file, &format!("{TOWER}.std_scale"), h)?,
            ))
        } else {
            None
        };
        let proj = file.tensor(&format!("{EMBEDDER}.embedding_projection.weight"))?;
        if proj.cols() != h {
            return Err(EncoderError::Config(format!(
                "{EMBEDDER}.embedding_projection.weight takes {} inputs, the tower gives {h}",
                proj.cols()
            )));
        }
        let text_hidden = proj.rows();
        // Each half of a head (x, then y) is rotated rotate-half style over hd/2 dims.
        let spatial = hd / 2;
        let inv_freq = rope_inv_freq(cfg.rope_theta, spatial, spatial / 2, spatial / 2);
        Ok(Some(Self {
            file,
            config: cfg,
            input_proj,
            pos_table,
            layers,
            standardize,
            inv_freq,
            text_hidden,
        }))
    }

    /// Width of the embedded soft tokens (the text hidden size).
    pub fn output_dim(&self) -> usize {
        self.text_hidden
    }

    /// Soft tokens `image` becomes.
    pub fn soft_tokens(&self, image: &PreprocessedImage) -> usize {
        pool_slots(image, self.config.pooling_kernel)
            .map(|(_, n)| n)
            .unwrap_or(0)
    }

    /// `[soft tokens, text hidden]` embeddings of one preprocessed image.
    pub fn encode(&self, image: &PreprocessedImage) -> Result<Vec<f32>, EncoderError> {
        Ok(self.forward(image, false)?.embedded)
    }

    /// Runs the tower keeping every intermediate result (when `keep_layers`, each layer output).
    pub fn forward(
        &self,
        image: &PreprocessedImage,
        keep_layers: bool,
    ) -> Result<VisionActivations, EncoderError> {
        let cfg = &self.config;
        let h = cfg.hidden;
        let RealPatches {
            real,
            pos,
            pixels: px,
        } = self.real_patches(image)?;
        let n = real.len();

        // Patch embedding: (2 (p - 0.5)) · W_inᵀ + T[0][x] + T[1][y].
        let mut x = vec![0f32; n * h];
        matmul_blocked(&px, n, &self.input_proj, &mut x);
        drop(px);
        let mut row = vec![0f32; h];
        for (t, &(px_, py)) in pos.iter().enumerate() {
            let xt = &mut x[t * h..(t + 1) * h];
            self.pos_table.row_to_f32(px_, &mut row);
            xt.iter_mut().zip(&row).for_each(|(a, b)| *a += b);
            self.pos_table
                .row_to_f32(cfg.position_embedding_size + py, &mut row);
            xt.iter_mut().zip(&row).for_each(|(a, b)| *a += b);
        }
        let patch_embeddings = x.clone();

        let rope = RopeTable::new(&pos, &self.inv_freq);
        let mut layer_out = Vec::new();
        for layer in &self.layers {
            self.layer(layer, &mut x, n, &rope);
            if keep_layers {
                layer_out.push(x.clone());
            }
        }

        let (slot_of, n_tokens) = pool_slots(image, cfg.pooling_kernel)
            .ok_or_else(|| EncoderError::Invalid("cannot pool the patch grid".into()))?;
        let k2 = (cfg.pooling_kernel * cfg.pooling_kernel) as f32;
        let mut pooled = vec![0f32; n_tokens * h];
        for (t, &i) in real.iter().enumerate() {
            let s = slot_of[i];
            let dst = &mut pooled[s * h..(s + 1) * h];
            for (d, v) in dst.iter_mut().zip(&x[t * h..(t + 1) * h]) {
                *d += v / k2;
            }
        }
        let root = (h as f32).sqrt();
        pooled.iter_mut().for_each(|v| *v *= root);
        if let Some((bias, scale)) = &self.standardize {
            for r in pooled.chunks_exact_mut(h) {
                for ((v, b), s) in r.iter_mut().zip(bias).zip(scale) {
                    *v = (*v - b) * s;
                }
            }
        }
        let embedded = embed_soft_tokens(self.file, EMBEDDER, &pooled, n_tokens, h)?;
        Ok(VisionActivations {
            patch_embeddings,
            layer_out,
            soft_tokens: pooled,
            embedded,
        })
    }

    /// The image's real (non-padding) patches, checked against the config, with their pixels
    /// mapped to the patch embedder's input range (shared by the CPU and GPU towers).
    pub(crate) fn real_patches(
        &self,
        image: &PreprocessedImage,
    ) -> Result<RealPatches, EncoderError> {
        let cfg = &self.config;
        let patch_dim = cfg.patch_size * cfg.patch_size * 3;
        if image.pixel_values.len() != image.positions.len() * patch_dim {
            return Err(EncoderError::Invalid(format!(
                "pixel_values has {} values for {} patches of {patch_dim}",
                image.pixel_values.len(),
                image.positions.len()
            )));
        }
        let real: Vec<usize> = (0..image.positions.len())
            .filter(|&i| image.positions[i] != (-1, -1))
            .collect();
        let n = real.len();
        if n == 0 {
            return Err(EncoderError::Invalid("the image has no patches".into()));
        }
        let mut pos = Vec::with_capacity(n);
        for &i in &real {
            let (x, y) = image.positions[i];
            if x < 0
                || y < 0
                || x as usize >= cfg.position_embedding_size
                || y as usize >= cfg.position_embedding_size
            {
                return Err(EncoderError::Invalid(format!(
                    "patch position ({x}, {y}) outside the position table (size {})",
                    cfg.position_embedding_size
                )));
            }
            pos.push((x as usize, y as usize));
        }

        // Patch embedding input: 2 (p - 0.5).
        let mut px = Vec::with_capacity(n * patch_dim);
        for &i in &real {
            px.extend(
                image.pixel_values[i * patch_dim..(i + 1) * patch_dim]
                    .iter()
                    .map(|&p| 2.0 * (p - 0.5)),
            );
        }
        Ok(RealPatches {
            real,
            pos,
            pixels: px,
        })
    }

    fn layer(&self, l: &Layer<'_>, x: &mut [f32], n: usize, rope: &RopeTable) {
        let cfg = &self.config;
        let (h, hd, nh, nkv) = (cfg.hidden, cfg.head_dim, cfg.heads, cfg.kv_heads);
        let eps = cfg.eps;

        let mut hs = x.to_vec();
        rmsnorm(&mut hs, h, Some(&l.input_ln), eps, false);
        let mut q = vec![0f32; n * nh * hd];
        let mut k = vec![0f32; n * nkv * hd];
        let mut v = vec![0f32; n * nkv * hd];
        l.q.forward(&hs, n, &mut q);
        l.k.forward(&hs, n, &mut k);
        l.v.forward(&hs, n, &mut v);
        rmsnorm(&mut q, hd, Some(&l.q_norm), eps, false);
        rmsnorm(&mut k, hd, Some(&l.k_norm), eps, false);
        rmsnorm(&mut v, hd, None, eps, false);
        rope.apply(&mut q, n, nh, hd);
        rope.apply(&mut k, n, nkv, hd);

        let attn = bidirectional_attention(&q, &k, &v, n, nh, nkv, hd);
        let mut o = vec![0f32; n * h];
        l.o.forward(&attn, n, &mut o);
        rmsnorm(&mut o, h, Some(&l.post_attn_ln), eps, false);
        x.iter_mut().zip(&o).for_each(|(a, b)| *a += b);

        hs.copy_from_slice(x);
        rmsnorm(&mut hs, h, Some(&l.pre_ff_ln), eps, false);
        let mut g = vec![0f32; n * cfg.intermediate];
        let mut u = vec![0f32; n * cfg.intermediate];
        l.gate.forward(&hs, n, &mut g);
        l.up.forward(&hs, n, &mut u);
        gelu_mul(&mut g, &u);
        drop(u);
        l.down.forward(&g, n, &mut o);
        rmsnorm(&mut o, h, Some(&l.post_ff_ln), eps, false);
        x.iter_mut().zip(&o).for_each(|(a, b)| *a += b);
    }
}

/// For every input patch its pooled slot (padding: usize::MAX), and the number of filled slots,
/// which come first in row-major order of the pooled grid (as transformers' pooler + mask).
pub(crate) fn pool_slots(image: &PreprocessedImage, k: usize) -> Option<(Vec<usize>, usize)> {
    let max_x = image
        .positions
        .iter()
        .filter(|p| **p != (-1, -1))
        .map(|p| p.0.max(0) as usize)
        .max()?;
    let per_row = (max_x + 1) / k;
    let length = image.positions.len() / (k * k);
    let mut raw = vec![usize::MAX; image.positions.len()];
    let mut filled = vec![false; length];
    for (i, &(x, y)) in image.positions.iter().enumerate() {
        if (x, y) == (-1, -1) {
            continue;
        }
        let s = x.max(0) as usize / k + per_row * (y.max(0) as usize / k);
        if s >= length {
            return None;
        }
        raw[i] = s;
        filled[s] = true;
    }
    // Compact the filled slots (transformers drops the empty ones, keeping the order).
    let mut remap = vec![usize::MAX; length];
    let mut m = 0;
    for (s, f) in filled.iter().enumerate() {
        if *f {
            remap[s] = m;
            m += 1;
        }
    }
    let slot_of = raw
        .into_iter()
        .map(|s| if s == usize::MAX { s } else { remap[s] })
        .collect();
    Some((slot_of, m))
}

/// cos/sin of the axial RoPE for every real patch, computed once per image (every layer uses
/// the same angles): `[patch][i]` for the x half and the y half, angle `pos · inv_freq[i]` in f32
/// as the engine's `rope` kernel and transformers compute it.
pub(crate) struct RopeTable {
    pub(crate) quarter: usize,
    pub(crate) cos_x: Vec<f32>,
    pub(crate) sin_x: Vec<f32>,
    pub(crate) cos_y: Vec<f32>,
    pub(crate) sin_y: Vec<f32>,
}

impl RopeTable {
    pub(crate) fn new(pos: &[(usize, usize)], inv_freq: &[f32]) -> Self {
        let quarter = inv_freq.len();
        let mut t = Self {
            quarter,
            cos_x: Vec::with_capacity(pos.len() * quarter),
            sin_x: Vec::with_capacity(pos.len() * quarter),
            cos_y: Vec::with_capacity(pos.len() * quarter),
            sin_y: Vec::with_capacity(pos.len() * quarter),
        };
        for &(x, y) in pos {
            for &f in inv_freq {
                let ax = x as f32 * f;
                let ay = y as f32 * f;
                t.cos_x.push(ax.cos());
                t.sin_x.push(ax.sin());
                t.cos_y.push(ay.cos());
                t.sin_y.push(ay.sin());
            }
        }
        t
    }

    /// Rotates `[n, heads, hd]` in place: dims `0..hd/2` with x, `hd/2..hd` with y, each half
    /// with the rotate-half pairing `(i, i + hd/4)`.
    fn apply(&self, q: &mut [f32], n: usize, heads: usize, hd: usize) {
        let qr = self.quarter;
        debug_assert_eq!(hd, 4 * qr);
        q.par_chunks_mut(heads * hd)
            .take(n)
            .enumerate()
            .for_each(|(t, row)| {
                let (cx, sx) = (&self.cos_x[t * qr..][..qr], &self.sin_x[t * qr..][..qr]);
                let (cy, sy) = (&self.cos_y[t * qr..][..qr], &self.sin_y[t * qr..][..qr]);
                for head in row.chunks_exact_mut(hd) {
                    let (hx, hy) = head.split_at_mut(2 * qr);
                    rotate_half(hx, cx, sx);
                    rotate_half(hy, cy, sy);
                }
            });
    }
}

#[inline]
fn rotate_half(v: &mut [f32], cos: &[f32], sin: &[f32]) {
    let (a, b) = v.split_at_mut(cos.len());
    for i in 0..cos.len() {
        let (x0, x1) = (a[i], b[i]);
        a[i] = x0 * cos[i] - x1 * sin[i];
        b[i] = x1 * cos[i] + x0 * sin[i];
    }
}

fn f32_view<'b>(data: &'b [f32], shape: &'b [usize]) -> TensorView<'b> {
    // SAFETY-free: a Vec<f32> is 4-byte aligned and its length matches the shape by construction.
    TensorView::new(DType::F32, shape, 0, bytemuck::cast_slice(data))
        .expect("f32 view of an owned buffer")
}

/// Full (unmasked) attention of `n` patches, scaling 1.0, softmax in f32: per head, scores by the
/// engine's matmul against the keys, row softmax, then matmul against the transposed values.
fn bidirectional_attention(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    n: usize,
    nh: usize,
    nkv: usize,
    hd: usize,
) -> Vec<f32> {
    let mut out = vec![0f32; n * nh * hd];
    let group = nh / nkv;
    let kv_shape = [n, hd];
    let vt_shape = [hd, n];
    let mut kh = vec![0f32; n * hd];
    let mut vt = vec![0f32; hd * n];
    let block = QUERY_BLOCK.min(n);
    let mut qh = vec![0f32; block * hd];
    let mut scores = vec![0f32; block * n];
    let mut oh = vec![0f32; block * hd];
    for kvh in 0..nkv {
        for t in 0..n {
            let src = &k[(t * nkv + kvh) * hd..][..hd];
            kh[t * hd..(t + 1) * hd].copy_from_slice(src);
            let src = &v[(t * nkv + kvh) * hd..][..hd];
            for (d, &val) in src.iter().enumerate() {
                vt[d * n + t] = val;
            }
        }
        let kview = f32_view(&kh, &kv_shape);
        let vview = f32_view(&vt, &vt_shape);
        for head in kvh * group..(kvh + 1) * group {
            for t0 in (0..n).step_by(block) {
                let b = block.min(n - t0);
                for i in 0..b {
                    qh[i * hd..(i + 1) * hd]
                        .copy_from_slice(&q[((t0 + i) * nh + head) * hd..][..hd]);
                }
                let sc = &mut scores[..b * n];
                matmul(&qh[..b * hd], b, &kview, sc);
                sc.par_chunks_mut(n).for_each(softmax);
                matmul(sc, b, &vview, &mut oh[..b * hd]);
                for i in 0..b {
                    out[((t0 + i) * nh + head) * hd..][..hd]
                        .copy_from_slice(&oh[i * hd..(i + 1) * hd]);
                }
            }
        }
    }
    out
}

/// Decodes, preprocesses and encodes an image file into the soft tokens that replace its
/// `<|image|>` placeholders (`max_soft_tokens`: one of 70, 140, 280 (the default, see
/// [`super::preprocess::DEFAULT_MAX_SOFT_TOKENS`]), 560, 1120).
pub fn encode_image_file(
    tower: &VisionTower<'_>,
    path: &Path,
    max_soft_tokens: usize,
) -> Result<MediaEmbedding, EncoderError> {
    encode_image_file_with(tower, path, max_soft_tokens, &|pre| tower.encode(pre))
}

/// [`encode_image_file`] with the tower run by `encode` (the CPU tower, or its GPU copy).
pub fn encode_image_file_with(
    tower: &VisionTower<'_>,
    path: &Path,
    max_soft_tokens: usize,
    encode: &dyn Fn(&PreprocessedImage) -> Result<Vec<f32>, EncoderError>,
) -> Result<MediaEmbedding, EncoderError> {
    let pre = preprocess_file(path, max_soft_tokens)?;
    let embeddings = encode(&pre)?;
    let tokens = embeddings.len() / tower.output_dim().max(1);
    Ok(MediaEmbedding {
        kind: MediaKind::Image,
        embeddings,
        tokens,
    })
}
