//! Decode steps recorded ahead of time. Recording a token's ~450 dispatches costs the host about
//! as long as the GPU needs to run them, and the next token cannot start before its input is
//! sampled; but nothing recorded depends on the token itself (its embedding is a buffer write
//! before the submit), only on its position. So after submitting token n, the model records the
//! one-token step at position n + 1 while the GPU works, and the next forward submits it at once.

use crate::models::Logits;

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
