//! The tied LM head on the GPU, shared by the Gemma 3 and Gemma 4 models: final RMSNorm, the
//! matmul over the embedding table in its stored dtype, the optional soft-cap, and the read-back
//! of the logits (the only read-back per token, copied to a host-readable buffer by the
//! recorded work itself).

use crate::kernels::gpu::{
    ElemType, Encoder, GpuBuffer, GpuContext, GpuError, GpuWeight, ReadBack, elementwise, matmul,
    norm,
};
use crate::models::ModelError;

pub(super) struct GpuHead {
    weight: GpuWeight,
    norm: GpuBuffer,
    /// Gemma 3 norms scale by (1 + w), Gemma 4 norms by w.
    plus_one: bool,
    eps: f32,
    softcap: Option<f32>,
    hidden: usize,
    vocab: usize,
    /// Final-norm input rows and their logits, `rows` rows at a time.
    x: GpuBuffer,
    logits: GpuBuffer,
    /// Host-readable copy of `logits`, filled by the recorded work.
    host: ReadBack,
    rows: usize,
    /// Most rows the buffers may grow to (several-row logits for `cellm compare`).
    max_rows: usize,
}

pub(super) struct HeadSpec {
    pub plus_one: bool,
    pub eps: f32,
    pub softcap: Option<f32>,
    pub hidden: usize,
    pub vocab: usize,
}

impl GpuHead {
    pub fn new(ctx: &GpuContext, weight: GpuWeight, norm: GpuBuffer, spec: HeadSpec) -> Self {
        Self {
            x: GpuBuffer::zeros(ctx, spec.hidden, ElemType::F32),
            logits: GpuBuffer::zeros(ctx, spec.vocab, ElemType::F32),
            host: ReadBack::new(ctx, spec.vocab),
            rows: 1,
            max_rows: 1,
            weight,
            norm,
            plus_one: spec.plus_one,
            eps: spec.eps,
            softcap: spec.softcap,
            hidden: spec.hidden,
            vocab: spec.vocab,
        }
    }

    /// Caps the rows per pass so one logits buffer stays well under the binding limit.
    pub fn set_max_rows(&mut self, ctx: &GpuContext, chunk: usize) {
        let cap = (ctx.max_binding_bytes() / 2).min(256 << 20) as usize;
        self.max_rows = (cap / (self.vocab * 4)).clamp(1, chunk.max(1));
    }

    /// Grows the buffers towards `rows` rows (capped); returns the rows one pass can take.
    pub fn ensure(&mut self, ctx: &GpuContext, rows: usize) -> usize {
        let want = rows.clamp(1, self.max_rows);
        if want > self.rows {
            self.x = GpuBuffer::zeros(ctx, want * self.hidden, ElemType::F32);
            self.logits = GpuBuffer::zeros(ctx, want * self.vocab, ElemType::F32);
            self.host = ReadBack::new(ctx, want * self.vocab);
            self.rows = want;
        }
        self.rows
    }

    /// Records final norm, head and soft-cap for `rows` rows of `x` starting at row `first`.
    pub fn record(
        &self,
        enc: &mut Encoder,
        x: &GpuBuffer,
        first: usize,
        rows: usize,
    ) -> Result<(), GpuError> {
        let h = self.hidden;
        let nw = norm::NormWeight {
            w: Some(&self.norm),
            eps: self.eps,
            plus_one: self.plus_one,
        };
        if first == 0 {
            // a decode step: norm straight from the residual stream, no copy
            norm::rmsnorm_to(enc, x, &self.x, rows, h, nw, norm::Into::Store)?;
        } else {
            enc.copy(x, first * h, &self.x, 0, rows * h)?;
            norm::rmsnorm(enc, &self.x, rows, h, nw.w, nw.eps, nw.plus_one)?;
        }
        self.record_logits(enc, rows)
    }

    /// Records the head of a decode step whose last residual add is still owed (the block output
    /// `a` with its post-norm and scale, see `blocks::Stream`): the add and the final norm in one
    /// dispatch, then the logits.
    pub fn record_step(
        &self,
        enc: &mut Encoder,
        x: &GpuBuffer,
        owed: Option<(&GpuBuffer, norm::NormWeight<'_>, f32)>,
    ) -> Result<(), GpuError> {
        let Some((a, post, scale)) = owed else {
            return self.record(enc, x, 0, 1);
        };
        let nw = norm::NormWeight {
            w: Some(&self.norm),
            eps: self.eps,
            plus_one: self.plus_one,
        };
        norm::rmsnorm_add_norm(enc, a, x, 1, self.hidden, post, scale, nw, &self.x)?;
        self.record_logits(enc, 1)
    }

    /// The head matmul of `rows` normed rows, the soft-cap and the copy for the host.
    fn record_logits(&self, enc: &mut Encoder, rows: usize) -> Result<(), GpuError> {
        matmul::matmul(enc, &self.x, rows, &self.weight, &self.logits)?;
        if let Some(cap) = self.softcap {
            elementwise::softcap(enc, &self.logits, rows * self.vocab, cap)?;
        }
        enc.copy_to_host(&self.logits, rows * self.vocab, &self.host)
    }

    /// Reads `out.len() / vocab` rows of logits back into `out`.
    pub fn read(&self, ctx: &GpuContext, out: &mut [f32]) -> Result<(), ModelError> {
        Ok(ctx.read_back(&self.host, out)?)
    }
}
