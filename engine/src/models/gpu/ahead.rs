//! Decode steps recorded ahead of time. Recording a token's ~450 dispatches costs the host about
//! as long as the GPU needs to run them, and the next token cannot start before its input is
//! sampled; but nothing recorded depends on the token itself (its embedding is a buffer write
//! before the submit), only on its position. So after submitting token n, the model records the
//! one-token step at position n + 1 while the GPU works, and the next forward submits it at once.

use crate::kernels::gpu::{Encoder, GpuContext, GpuError};
use crate::kv_cache::KvCache;
use crate::models::{Logits, ModelError};

/// A recorded one-token step: its position and the device-state generation it was recorded
/// against (buffers made again since make it stale).
pub(super) struct Ahead {
    pos: usize,
    generation: u64,
    commands: wgpu::CommandBuffer,
}

/// At most one step recorded ahead.
#[derive(Default)]
pub(super) struct AheadSlot(Option<Ahead>);

impl AheadSlot {
    /// Keeps `commands`, the step at `pos` recorded against `generation`.
    pub fn put(&mut self, pos: usize, generation: u64, commands: wgpu::CommandBuffer) {
        self.0 = Some(Ahead {
            pos,
            generation,
            commands,
        });
    }

    /// Takes the recorded step when this forward is exactly it (one token, last logits, no
    /// media, at its position, state unchanged); any other forward drops it.
    pub fn take_for(
        &mut self,
        tokens: usize,
        media: bool,
        want: Logits,
        pos: usize,
        generation: u64,
    ) -> Option<wgpu::CommandBuffer> {
        let a = self.0.take()?;
        let fits = tokens == 1 && !media && want == Logits::Last;
        (fits && a.pos == pos && a.generation == generation).then_some(a.commands)
    }

    /// Drops what is recorded (the next forward may not be the step it was made for).
    pub fn clear(&mut self) {
        self.0 = None;
    }

    /// Whether a step is recorded for position `pos`.
    pub fn holds(&self, pos: usize) -> bool {
        self.0.as_ref().is_some_and(|a| a.pos == pos)
    }
}

/// Whether steps should be recorded ahead: not while kernels are being timed one submit at a
/// time (`CELLM_GPU_PROFILE=2|3` measure the normal path), nor when `CELLM_GPU_NO_AHEAD` is set.
pub(super) fn enabled(ctx: &crate::kernels::gpu::GpuContext) -> bool {
    !ctx.timing() && std::env::var_os("CELLM_GPU_NO_AHEAD").is_none()
}

/// What a GPU decoder provides so that [`RecordsAhead`] can record its steps ahead.
pub(super) trait RecordsAhead {
    fn ctx(&self) -> &GpuContext;
    fn slot(&mut self) -> &mut AheadSlot;
    /// Makes (or keeps) the activation and device-state buffers a one-token step ending at
    /// position `end` needs; returns the state's generation.
    fn prepare_step(&mut self, cache: &KvCache, end: usize) -> Result<u64, ModelError>;
    /// Records the one-token decode step at position `p`, head included.
    fn record_token(&self, enc: &mut Encoder<'_>, p: usize) -> Result<(), GpuError>;
    /// Uploads the step's input (its embedding row and whatever goes with it).
    fn embed_token(&mut self, token: &[u32]) -> Result<(), ModelError>;

    /// Records the step at position `p` ahead, unless turned off or past the context.
    fn record_ahead(&mut self, cache: &KvCache, p: usize) -> Result<(), ModelError> {
        if !enabled(self.ctx()) || p + 1 > cache.limit() {
            return Ok(());
        }
        let generation = self.prepare_step(cache, p + 1)?;
        let mut enc = Encoder::deferred(self.ctx());
        self.record_token(&mut enc, p)?;
        let commands = enc.finish()?;
        self.slot().put(p, generation, commands);
        Ok(())
    }

    /// When this forward is the step recorded ahead: uploads its token, submits it, records the
    /// next one, and returns true (the caller then reads the logits). False otherwise, with the
    /// recorded step dropped.
    fn run_ahead(
        &mut self,
        tokens: &[u32],
        media: bool,
        want: Logits,
        pos0: usize,
        cache: &mut KvCache,
    ) -> Result<bool, ModelError> {
        if !self.slot().holds(pos0) {
            self.slot().clear();
            return Ok(false);
        }
        let generation = self.prepare_step(cache, pos0 + 1)?;
        let Some(step) = self
            .slot()
            .take_for(tokens.len(), media, want, pos0, generation)
        else {
            return Ok(false);
        };
        self.embed_token(tokens)?;
        self.ctx().submit_recorded(step)?;
        cache.set_len(pos0 + 1);
        let t = self.ctx().clock();
        self.record_ahead(cache, pos0 + 1)?;
        self.ctx().note_time("host: record the next step ahead", t);
        Ok(true)
    }
}
