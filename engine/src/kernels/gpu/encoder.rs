//! Records a sequence of op dispatches (one token's forward, say) into one command buffer.

use super::{GpuBuffer, GpuContext, GpuError};

enum Cmd {
    Dispatch {
        pipeline: wgpu::ComputePipeline,
        buffers: Vec<wgpu::Buffer>,
        param_off: u64,
        param_len: u64,
        groups: [u32; 3],
    },
    Copy {
        src: wgpu::Buffer,
        src_off: u64,
        dst: wgpu::Buffer,
        dst_off: u64,
        size: u64,
    },
}

/// Collects dispatches; [`submit`](Self::submit) sends them all in one command buffer.
///
/// Every op's parameters go into one uniform buffer (each block at the device's uniform offset
/// alignment), made at submit time, so recording allocates nothing on the device.
pub struct Encoder<'c> {
    ctx: &'c GpuContext,
    params: Vec<u8>,
    cmds: Vec<Cmd>,
}

impl<'c> Encoder<'c> {
    pub fn new(ctx: &'c GpuContext) -> Self {
        Encoder {
            ctx,
            params: Vec::new(),
            cmds: Vec::new(),
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
        let align = self.ctx.limits.min_uniform_buffer_offset_alignment.max(16) as usize;
        let off = self.params.len().div_ceil(align) * align;
        self.params.resize(off, 0);
        self.params.extend_from_slice(bytemuck::cast_slice(params));
        // uniform blocks are a multiple of 16 bytes
        let len = (params.len() * 4).div_ceil(16).max(1) * 16;
        self.params.resize(off + len, 0);
        let max = self.ctx.limits.max_compute_workgroups_per_dimension.max(1);
        let groups = groups.max(1);
        let gx = groups.min(max);
        let gy = groups.div_ceil(gx);
        self.cmds.push(Cmd::Dispatch {
            pipeline,
            buffers: buffers.iter().map(|b| (*b).clone()).collect(),
            param_off: off as u64,
            param_len: len as u64,
            groups: [gx, gy, 1],
        });
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
        self.cmds.push(Cmd::Copy {
            src: src.buf.clone(),
            src_off: so,
            dst: dst.buf.clone(),
            dst_off: d_o,
            size,
        });
        Ok(())
    }

    /// Builds the command buffer (bind groups, one compute pass per run of dispatches).
    pub fn finish(self) -> Result<wgpu::CommandBuffer, GpuError> {
        let dev = &self.ctx.device;
        let ubuf = dev.create_buffer(&wgpu::BufferDescriptor {
            label: Some("op params"),
            size: (self.params.len().max(16) as u64).div_ceil(16) * 16,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        if !self.params.is_empty() {
            let mut p = self.params;
            p.resize(p.len().div_ceil(16) * 16, 0);
            self.ctx.queue.write_buffer(&ubuf, 0, &p);
        }
        let mut enc = dev.create_command_encoder(&Default::default());
        let mut i = 0;
        while i < self.cmds.len() {
            match &self.cmds[i] {
                Cmd::Copy {
                    src,
                    src_off,
                    dst,
                    dst_off,
                    size,
                } => {
                    enc.copy_buffer_to_buffer(src, *src_off, dst, *dst_off, *size);
                    i += 1;
                }
                Cmd::Dispatch { .. } => {
                    let mut pass = enc.begin_compute_pass(&Default::default());
                    while let Some(Cmd::Dispatch {
                        pipeline,
                        buffers,
                        param_off,
                        param_len,
                        groups,
                    }) = self.cmds.get(i)
                    {
                        let mut entries = vec![wgpu::BindGroupEntry {
                            binding: 0,
                            resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                                buffer: &ubuf,
                                offset: *param_off,
                                size: wgpu::BufferSize::new(*param_len),
                            }),
                        }];
                        for (b, buf) in buffers.iter().enumerate() {
                            entries.push(wgpu::BindGroupEntry {
                                binding: b as u32 + 1,
                                resource: buf.as_entire_binding(),
                            });
                        }
                        let bg = dev.create_bind_group(&wgpu::BindGroupDescriptor {
                            label: None,
                            layout: &pipeline.get_bind_group_layout(0),
                            entries: &entries,
                        });
                        pass.set_pipeline(pipeline);
                        pass.set_bind_group(0, &bg, &[]);
                        pass.dispatch_workgroups(groups[0], groups[1], groups[2]);
                        i += 1;
                    }
                }
            }
        }
        self.ctx.take_error()?;
        Ok(enc.finish())
    }

    /// Submits everything recorded (does not wait; see [`GpuContext::wait`] / `read_f32`).
    pub fn submit(self) -> Result<(), GpuError> {
        let ctx = self.ctx;
        let cb = self.finish()?;
        ctx.queue.submit([cb]);
        ctx.take_error()
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
