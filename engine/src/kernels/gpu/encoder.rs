//! Records a sequence of op dispatches (one token's forward, say) into one command buffer.

use super::{GpuBuffer, GpuContext, GpuError};

enum Cmd {
    Dispatch(Dispatch),
    Copy(Copy),
}

struct Dispatch {
    key: BindKey,
    groups: [u32; 3],
}

impl Dispatch {
    fn record(
        self,
        pass: &mut wgpu::ComputePass<'_>,
        cache: &mut BindCache,
        dev: &wgpu::Device,
        ubuf: &wgpu::Buffer,
    ) {
        pass.set_pipeline(&self.key.pipeline);
        let bg = cache.bind_group(dev, ubuf, self.key);
        pass.set_bind_group(0, &bg, &[]);
        pass.dispatch_workgroups(self.groups[0], self.groups[1], self.groups[2]);
    }
}

struct Copy {
    src: wgpu::Buffer,
    src_off: u64,
    dst: wgpu::Buffer,
    dst_off: u64,
    size: u64,
}

impl Copy {
    fn record(self, enc: &mut wgpu::CommandEncoder) {
        enc.copy_buffer_to_buffer(&self.src, self.src_off, &self.dst, self.dst_off, self.size);
    }
}

/// Collects dispatches; [`submit`](Self::submit) sends them all in one command buffer.
///
/// Every op's parameters go into one uniform buffer (each block at the device's uniform offset
/// alignment), made at submit time, so recording allocates nothing on the device.
pub struct Encoder<'c> {
    ctx: &'c GpuContext,
    params: Vec<u8>,
    /// Bytes of `params` already written to the device by an earlier [`Encoder::flush`].
    written: usize,
    cmds: Vec<Cmd>,
    /// Recording ahead for [`finish`](Self::finish): [`flush`](Self::flush) keeps everything.
    deferred: bool,
}

impl<'c> Encoder<'c> {
    pub fn new(ctx: &'c GpuContext) -> Self {
        Encoder {
            ctx,
            params: Vec::new(),
            written: 0,
            cmds: Vec::new(),
            deferred: false,
        }
    }

    /// An encoder whose [`flush`](Self::flush) submits nothing: everything goes into the one
    /// command buffer that [`finish`](Self::finish) returns (work recorded ahead of time).
    pub fn deferred(ctx: &'c GpuContext) -> Self {
        Encoder {
            deferred: true,
            ..Encoder::new(ctx)
        }
    }

    pub fn ctx(&self) -> &'c GpuContext {
        self.ctx
    }

    /// Number of recorded commands.
    pub fn len(&self) -> usize {
        self.cmds.len()
    }

    pub fn is_empty(&self) -> bool {
        self.cmds.is_empty()
    }

    /// Records one dispatch: binding 0 is the uniform `params`, bindings 1.. are `buffers` in
    /// order. `groups` is the total workgroup count, folded into a 2-D grid past 65535.
    pub(crate) fn dispatch(
        &mut self,
        pipeline: wgpu::ComputePipeline,
        params: &[u32],
        buffers: &[&wgpu::Buffer],
        groups: u32,
    ) {
        self.dispatch_at(pipeline, params, (1..).zip(buffers.iter().copied()), groups);
    }

    /// [`dispatch`](Self::dispatch) with explicit binding numbers, for entry points that use
    /// some of a shader's bindings but not the ones before them.
    pub(crate) fn dispatch_at<'b>(
        &mut self,
        pipeline: wgpu::ComputePipeline,
        params: &[u32],
        buffers: impl IntoIterator<Item = (u32, &'b wgpu::Buffer)>,
        groups: u32,
    ) {
        let align = self.ctx.limits.min_uniform_buffer_offset_alignment.max(16) as usize;
        let off = self.params.len().div_ceil(align) * align;
        self.params.resize(off, 0);
        self.params.extend_from_slice(bytemuck::cast_slice(params));
        // uniform blocks are a multiple of 16 bytes, and at least 128 so a shader's Params may
        // have more fields than one of its ops passes (the rest read as zero)
        let len = (params.len() * 4).div_ceil(16).max(8) * 16;
        self.params.resize(off + len, 0);
        let max = self.ctx.limits.max_compute_workgroups_per_dimension.max(1);
        let groups = groups.max(1);
        let gx = groups.min(max);
        let gy = groups.div_ceil(gx);
        self.cmds.push(Cmd::Dispatch(Dispatch {
            key: BindKey {
                pipeline,
                buffers: buffers.into_iter().map(|(i, b)| (i, b.clone())).collect(),
                param_off: off as u64,
                param_len: len as u64,
            },
            groups: [gx, gy, 1],
        }));
    }

    /// Records a copy of `n` elements from `src[src_at..]` to `dst[dst_at..]` (same element type).
    pub fn copy(
        &mut self,
        src: &GpuBuffer,
        src_at: usize,
        dst: &GpuBuffer,
        dst_at: usize,
        n: usize,
    ) -> Result<(), GpuError> {
        if src.elem != dst.elem || src_at + n > src.len || dst_at + n > dst.len {
            return Err(super::shape_err("copy", "ranges or element types differ"));
        }
        let es = match src.elem {
            super::buffer::ElemType::F32 => 4,
            super::buffer::ElemType::F16 => 2,
        };
        let (so, d_o, size) = ((src_at * es) as u64, (dst_at * es) as u64, (n * es) as u64);
        if so % 4 != 0 || d_o % 4 != 0 || size % 4 != 0 {
            return Err(super::shape_err(
                "copy",
                "f16 copies must cover whole pairs",
            ));
        }
        self.cmds.push(Cmd::Copy(Copy {
            src: src.buf.clone(),
            src_off: so,
            dst: dst.buf.clone(),
            dst_off: d_o,
            size,
        }));
        Ok(())
    }

    /// Records a copy of the first `n` values of the f32 buffer `src` into `dst`, to be read
    /// with [`GpuContext::read_back`] once the work is submitted.
    pub fn copy_to_host(
        &mut self,
        src: &GpuBuffer,
        n: usize,
        dst: &super::ReadBack,
    ) -> Result<(), GpuError> {
        if src.elem != super::ElemType::F32 || n > src.len || n > dst.len {
            return Err(super::shape_err("copy_to_host", "range or element type"));
        }
        self.cmds.push(Cmd::Copy(Copy {
            src: src.buf.clone(),
            src_off: 0,
            dst: dst.buf.clone(),
            dst_off: 0,
            size: (n * 4) as u64,
        }));
        Ok(())
    }

    /// Writes the parameters, builds (or reuses) the bind groups and the command buffer, and
    /// submits it. Runs under the context's bind-group cache lock, so the shared parameter
    /// buffer is written and consumed by one submit at a time (queue writes are ordered with
    /// submits, so an earlier submit still sees its own parameters).
    pub fn submit(mut self) -> Result<(), GpuError> {
        self.flush()
    }

    /// Submits what is recorded so far and goes on recording: the GPU starts on the first
    /// layers of a token while the host records the rest.
    pub fn flush(&mut self) -> Result<(), GpuError> {
        let ctx = self.ctx;
        if self.cmds.is_empty() || self.deferred {
            return Ok(());
        }
        let t0 = ctx.clock();
        ctx.add(|p| &p.dispatches, self.cmds.len() as u64);
        let mut cache = ctx
            .binds
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if ctx.timing() {
            return self.timed_submit(cache);
        }
        let cb = self.encode(&mut cache)?;
        ctx.queue.submit([cb]);
        drop(cache);
        ctx.count(|p| &p.encode_ns, t0);
        ctx.add(|p| &p.submits, 1);
        ctx.take_error()
    }

    /// The command buffer without submitting it (benchmarks and work recorded ahead submit it
    /// with [`GpuContext::submit_recorded`]). Its parameters are already written: submit it
    /// before recording the next encoder's.
    pub fn finish(mut self) -> Result<wgpu::CommandBuffer, GpuError> {
        let ctx = self.ctx;
        let mut cache = ctx
            .binds
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        self.encode(&mut cache)
    }

    /// Writes the parameters recorded since the last flush (all of them when the buffer is
    /// new) and returns the parameter buffer.
    fn write_params(&mut self, cache: &mut BindCache) -> wgpu::Buffer {
        let (ubuf, fresh) = cache.params_buffer(&self.ctx.device, self.params.len() as u64);
        let from = if fresh { 0 } else { self.written };
        self.params.resize(self.params.len().div_ceil(16) * 16, 0);
        if self.params.len() > from {
            self.ctx
                .queue
                .write_buffer(&ubuf, from as u64, &self.params[from..]);
        }
        self.written = self.params.len();
        ubuf
    }

    fn encode(&mut self, cache: &mut BindCache) -> Result<wgpu::CommandBuffer, GpuError> {
        let ctx = self.ctx;
        let dev = &ctx.device;
        let ubuf = self.write_params(cache);
        let mut enc = dev.create_command_encoder(&Default::default());
        let mut cmds = std::mem::take(&mut self.cmds).into_iter().peekable();
        while let Some(cmd) = cmds.next() {
            match cmd {
                Cmd::Copy(c) => c.record(&mut enc),
                Cmd::Dispatch(d) => {
                    // one compute pass per run of dispatches
                    let mut pass = enc.begin_compute_pass(&Default::default());
                    d.record(&mut pass, cache, dev, &ubuf);
                    while let Some(Cmd::Dispatch(_)) = cmds.peek() {
                        if let Some(Cmd::Dispatch(d)) = cmds.next() {
                            d.record(&mut pass, cache, dev, &ubuf);
                        }
                    }
                }
            }
        }
        cache.end_submit();
        ctx.take_error()?;
        Ok(enc.finish())
    }

    /// Diagnostics (`CELLM_GPU_PROFILE=2`): [`submit`](Self::submit) with every dispatch in
    /// its own pass between two timestamps; waits and adds the times to the per-kernel table.
    fn timed_submit(
        &mut self,
        mut cache: std::sync::MutexGuard<'_, BindCache>,
    ) -> Result<(), GpuError> {
        let ubuf = self.write_params(&mut cache);
        let enc = self.ctx.device.create_command_encoder(&Default::default());
        timed_submit(self.ctx, &ubuf, enc, std::mem::take(&mut self.cmds), cache)
    }
}

/// Diagnostics (`CELLM_GPU_PROFILE=2`): every dispatch in its own pass between two timestamps;
/// waits for the results and adds them to the context's per-kernel table.
fn timed_submit(
    ctx: &GpuContext,
    ubuf: &wgpu::Buffer,
    mut enc: wgpu::CommandEncoder,
    cmds: Vec<Cmd>,
    mut cache: std::sync::MutexGuard<'_, BindCache>,
) -> Result<(), GpuError> {
    let dev = &ctx.device;
    let n = cmds
        .iter()
        .filter(|c| matches!(c, Cmd::Dispatch(_)))
        .count();
    let per_set = 2048usize;
    let sets: Vec<wgpu::QuerySet> = (0..n.div_ceil(per_set))
        .map(|_| {
            dev.create_query_set(&wgpu::QuerySetDescriptor {
                label: None,
                ty: wgpu::QueryType::Timestamp,
                count: (2 * per_set) as u32,
            })
        })
        .collect();
    let mut names = Vec::with_capacity(n);
    if ctx.span_timing() {
        // one span from the first dispatch to the last, in the passes `encode` would make
        let runs = cmds.iter().enumerate().filter(|(i, c)| {
            matches!(c, Cmd::Dispatch(_)) && (*i == 0 || matches!(cmds[i - 1], Cmd::Copy(_)))
        });
        let (first, passes) = (runs.clone().next().map(|r| r.0), runs.count());
        let mut pass_no = 0;
        let mut cmds = cmds.into_iter().enumerate().peekable();
        while let Some((i, cmd)) = cmds.next() {
            match cmd {
                Cmd::Copy(c) => c.record(&mut enc),
                Cmd::Dispatch(d) => {
                    pass_no += 1;
                    let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                        label: None,
                        timestamp_writes: Some(wgpu::ComputePassTimestampWrites {
                            query_set: &sets[0],
                            beginning_of_pass_write_index: (Some(i) == first).then_some(0),
                            end_of_pass_write_index: (pass_no == passes).then_some(1),
                        }),
                    });
                    d.record(&mut pass, &mut cache, dev, ubuf);
                    while let Some((_, Cmd::Dispatch(_))) = cmds.peek() {
                        if let Some((_, Cmd::Dispatch(d))) = cmds.next() {
                            d.record(&mut pass, &mut cache, dev, ubuf);
                        }
                    }
                }
            }
        }
        names.push(format!("submit span ({n} dispatches)"));
    } else {
        for cmd in cmds {
            match cmd {
                Cmd::Copy(c) => c.record(&mut enc),
                Cmd::Dispatch(d) => {
                    let i = names.len();
                    let (set, j) = (&sets[i / per_set], (i % per_set) as u32);
                    let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                        label: None,
                        timestamp_writes: Some(wgpu::ComputePassTimestampWrites {
                            query_set: set,
                            beginning_of_pass_write_index: Some(2 * j),
                            end_of_pass_write_index: Some(2 * j + 1),
                        }),
                    });
                    names.push(ctx.pipeline_name(&d.key.pipeline));
                    d.record(&mut pass, &mut cache, dev, ubuf);
                }
            }
        }
    }
    cache.end_submit();
    drop(cache);
    let bytes = (2 * per_set * 8) as u64;
    let mut reads = Vec::new();
    for (k, set) in sets.iter().enumerate() {
        let used = (names.len() - k * per_set).min(per_set);
        let resolve = dev.create_buffer(&wgpu::BufferDescriptor {
            label: None,
            size: bytes,
            usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        let read = dev.create_buffer(&wgpu::BufferDescriptor {
            label: None,
            size: bytes,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        enc.resolve_query_set(set, 0..(2 * used) as u32, &resolve, 0);
        enc.copy_buffer_to_buffer(&resolve, 0, &read, 0, bytes);
        reads.push((read, used));
    }
    ctx.queue.submit([enc.finish()]);
    let period = ctx.queue.get_timestamp_period() as f64;
    for (read, _) in &reads {
        read.map_async(wgpu::MapMode::Read, .., |_| {});
    }
    ctx.wait()?;
    let mut table = match ctx.profile.as_ref().map(|p| p.kernels.lock()) {
        Some(Ok(t)) => t,
        _ => return ctx.take_error(),
    };
    for (k, (read, used)) in reads.iter().enumerate() {
        let view = read
            .get_mapped_range(..)
            .map_err(|e| GpuError::Map(e.to_string()))?;
        let ts: &[u64] = bytemuck::cast_slice(&view);
        for j in 0..*used {
            let ns = ts[2 * j + 1].saturating_sub(ts[2 * j]) as f64 * period;
            let e = table.entry(names[k * per_set + j].clone()).or_default();
            e.0 += 1;
            e.1 += ns;
        }
    }
    ctx.take_error()
}

/// What a bind group binds: the pipeline's layout, the parameter block, the buffers.
#[derive(Clone, PartialEq, Eq, Hash)]
struct BindKey {
    pipeline: wgpu::ComputePipeline,
    /// (binding, buffer)
    buffers: Vec<(u32, wgpu::Buffer)>,
    param_off: u64,
    param_len: u64,
}

/// Bind groups kept across submits, and the parameter buffer they bind.
///
/// A model records the same dispatches with the same buffers every token, so after the first
/// token every bind group is found here instead of being created again (creating ~1000 bind
/// groups per token cost more CPU time than the GPU spent on the token). Entries unused for
/// [`BindCache::KEEP`] submits are dropped, so buffers that a model replaced are released.
#[derive(Default)]
pub(crate) struct BindCache {
    params: Option<wgpu::Buffer>,
    groups: std::collections::HashMap<BindKey, (wgpu::BindGroup, u64)>,
    submit: u64,
}

impl BindCache {
    const KEEP: u64 = 64;

    /// The shared uniform buffer, grown (and the cache emptied) when `need` bytes do not fit;
    /// `true` when it is new.
    fn params_buffer(&mut self, dev: &wgpu::Device, need: u64) -> (wgpu::Buffer, bool) {
        let need = need.max(16).div_ceil(16) * 16;
        if let Some(b) = &self.params
            && b.size() >= need
        {
            return (b.clone(), false);
        }
        // Room to grow without re-creating every token.
        let size = need.next_power_of_two().max(64 * 1024);
        let b = dev.create_buffer(&wgpu::BufferDescriptor {
            label: Some("op params"),
            size,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        self.groups.clear();
        self.params = Some(b.clone());
        (b, true)
    }

    fn bind_group(
        &mut self,
        dev: &wgpu::Device,
        ubuf: &wgpu::Buffer,
        key: BindKey,
    ) -> wgpu::BindGroup {
        let now = self.submit;
        if let Some((bg, used)) = self.groups.get_mut(&key) {
            *used = now;
            return bg.clone();
        }
        let mut entries = vec![wgpu::BindGroupEntry {
            binding: 0,
            resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                buffer: ubuf,
                offset: key.param_off,
                size: wgpu::BufferSize::new(key.param_len),
            }),
        }];
        for (binding, buf) in &key.buffers {
            entries.push(wgpu::BindGroupEntry {
                binding: *binding,
                resource: buf.as_entire_binding(),
            });
        }
        let bg = dev.create_bind_group(&wgpu::BindGroupDescriptor {
            label: None,
            layout: &key.pipeline.get_bind_group_layout(0),
            entries: &entries,
        });
        self.groups.insert(key, (bg.clone(), now));
        bg
    }

    fn end_submit(&mut self) {
        self.submit += 1;
        if self.submit.is_multiple_of(Self::KEEP) {
            let oldest = self.submit.saturating_sub(Self::KEEP);
            self.groups.retain(|_, (_, used)| *used >= oldest);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::{ctx, max_abs_diff, random};
    use super::super::{GpuWeight, buffer::ElemType, matmul, norm, softmax};
    use super::*;
    use crate::kernels::cpu;
    use crate::tensor::{DType, TensorView, encode};

    /// Dependent ops recorded into one encoder see each other's results (one submit, as a
    /// model's token step), and a copy between them lands in order.
    #[test]
    fn gpu_chain_in_one_encoder() {
        let Some(ctx) = ctx() else { return };
        let (n, k) = (48, 64);
        let shape = [n, k];
        let wv = random(n * k, 21);
        let bytes = encode(DType::F32, &wv, &shape, 0).unwrap();
        let view = TensorView::new(DType::F32, &shape, 0, &bytes).unwrap();
        let w = GpuWeight::upload(ctx, &view).unwrap();
        let x = random(k, 22);
        let xb = GpuBuffer::from_f32(ctx, &x);
        let y = GpuBuffer::zeros(ctx, n, ElemType::F32);
        let z = GpuBuffer::zeros(ctx, n, ElemType::F32);
        let mut enc = Encoder::new(ctx);
        matmul::matmul(&mut enc, &xb, 1, &w, &y).unwrap();
        norm::rmsnorm(&mut enc, &y, 1, n, None, 1e-6, false).unwrap();
        enc.copy(&y, 0, &z, 0, n).unwrap();
        softmax::softmax(&mut enc, &z, 1, n).unwrap();
        assert_eq!(enc.len(), 4);
        enc.submit().unwrap();
        let mut want = vec![0f32; n];
        cpu::matmul(&x, 1, &view, &mut want);
        cpu::rmsnorm(&mut want, n, None, 1e-6, false);
        assert!(max_abs_diff(&ctx.read_f32(&y).unwrap(), &want) < 1e-5);
        cpu::softmax(&mut want);
        assert!(max_abs_diff(&ctx.read_f32(&z).unwrap(), &want) < 1e-6);
    }
}
