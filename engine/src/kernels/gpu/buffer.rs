//! Device buffers: activations / caches ([`GpuBuffer`]) and uploaded weights ([`GpuWeight`]).

use super::{GpuContext, GpuError};
use crate::tensor::{DType, TensorView};
use half::f16;

const USAGE: wgpu::BufferUsages = wgpu::BufferUsages::STORAGE
    .union(wgpu::BufferUsages::COPY_SRC)
    .union(wgpu::BufferUsages::COPY_DST);

/// Buffers are padded to 16 bytes: shaders read weights as `vec4<u32>` and copies need 4.
fn padded(bytes: usize) -> u64 {
    (bytes.max(16) as u64).div_ceil(16) * 16
}

/// Element type of a [`GpuBuffer`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ElemType {
    F32,
    /// Packed pairs in `u32` words (KV caches).
    F16,
}

/// A device buffer of `len` f32 (or f16) elements: activations, KV caches, scratch.
#[derive(Clone, Debug)]
pub struct GpuBuffer {
    pub(crate) buf: wgpu::Buffer,
    pub len: usize,
    pub elem: ElemType,
}

impl GpuBuffer {
    /// Zero-filled buffer of `len` elements.
    pub fn zeros(ctx: &GpuContext, len: usize, elem: ElemType) -> GpuBuffer {
        let bytes = match elem {
            ElemType::F32 => len * 4,
            ElemType::F16 => len * 2,
        };
        let buf = ctx.device.create_buffer(&wgpu::BufferDescriptor {
            label: None,
            size: padded(bytes),
            usage: USAGE,
            mapped_at_creation: false,
        });
        GpuBuffer { buf, len, elem }
    }

    /// An f32 buffer holding `data`.
    pub fn from_f32(ctx: &GpuContext, data: &[f32]) -> GpuBuffer {
        let b = GpuBuffer::zeros(ctx, data.len(), ElemType::F32);
        ctx.queue
            .write_buffer(&b.buf, 0, bytemuck::cast_slice(data));
        b
    }

    /// An f16 buffer holding `data` (converted).
    pub fn from_f32_as_f16(ctx: &GpuContext, data: &[f32]) -> GpuBuffer {
        let b = GpuBuffer::zeros(ctx, data.len(), ElemType::F16);
        let mut h: Vec<f16> = data.iter().map(|&v| f16::from_f32(v)).collect();
        if h.len() % 2 == 1 {
            h.push(f16::ZERO);
        }
        ctx.queue.write_buffer(&b.buf, 0, bytemuck::cast_slice(&h));
        b
    }

    /// A small tensor (norm weights, tables) dequantized to f32.
    pub fn from_tensor_f32(ctx: &GpuContext, t: &TensorView<'_>) -> GpuBuffer {
        GpuBuffer::from_f32(ctx, &t.to_f32_vec())
    }

    /// Overwrites f32 elements starting at element `at` (queued before the next submit).
    pub fn write_f32(&self, ctx: &GpuContext, at: usize, data: &[f32]) -> Result<(), GpuError> {
        if self.elem != ElemType::F32 || at + data.len() > self.len {
            return Err(super::shape_err(
                "write_f32",
                format!(
                    "{} values at {at} into {:?}[{}]",
                    data.len(),
                    self.elem,
                    self.len
                ),
            ));
        }
        ctx.queue
            .write_buffer(&self.buf, (at * 4) as u64, bytemuck::cast_slice(data));
        Ok(())
    }

    pub fn bytes(&self) -> u64 {
        self.buf.size()
    }
}

impl GpuContext {
    /// Waits for all submitted work and copies `buf` back as f32 (f16 buffers are converted).
    pub fn read_f32(&self, buf: &GpuBuffer) -> Result<Vec<f32>, GpuError> {
        self.read_f32_n(buf, buf.len)
    }

    /// As [`read_f32`](Self::read_f32), for the first `n` elements only (a model reads one row
    /// of logits out of a buffer sized for many).
    pub fn read_f32_n(&self, buf: &GpuBuffer, n: usize) -> Result<Vec<f32>, GpuError> {
        if n > buf.len {
            return Err(super::shape_err(
                "read_f32",
                format!("{n} values of {}", buf.len),
            ));
        }
        let es = match buf.elem {
            ElemType::F32 => 4,
            ElemType::F16 => 2,
        };
        let size = ((n * es) as u64).div_ceil(4).max(1) * 4;
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("read-back"),
            size,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut enc = self.device.create_command_encoder(&Default::default());
        enc.copy_buffer_to_buffer(&buf.buf, 0, &staging, 0, size);
        self.queue.submit([enc.finish()]);
        let (tx, rx) = std::sync::mpsc::channel();
        staging.map_async(wgpu::MapMode::Read, .., move |r| {
            let _ = tx.send(r);
        });
        self.wait()?;
        rx.recv()
            .map_err(|e| GpuError::Map(e.to_string()))?
            .map_err(|e| GpuError::Map(e.to_string()))?;
        let out = {
            let view = staging
                .get_mapped_range(..)
                .map_err(|e| GpuError::Map(e.to_string()))?;
            match buf.elem {
                ElemType::F32 => bytemuck::cast_slice::<u8, f32>(&view)[..n].to_vec(),
                ElemType::F16 => bytemuck::cast_slice::<u8, f16>(&view)[..n]
                    .iter()
                    .map(|h| h.to_f32())
                    .collect(),
            }
        };
        staging.unmap();
        Ok(out)
    }
}

/// A host-readable f32 buffer that stays allocated: an [`super::Encoder::copy_to_host`] recorded
/// with the work, then [`GpuContext::read_back`] (the logits of every token, without a staging
/// buffer and a copy submit per read).
#[derive(Debug)]
pub struct ReadBack {
    pub(crate) buf: wgpu::Buffer,
    pub len: usize,
}

impl ReadBack {
    pub fn new(ctx: &GpuContext, len: usize) -> ReadBack {
        let buf = ctx.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("read-back"),
            size: padded(len * 4),
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        ReadBack { buf, len }
    }
}

impl GpuContext {
    /// Waits for the submitted work and copies the first `out.len()` values of `rb` into `out`.
    pub fn read_back(&self, rb: &ReadBack, out: &mut [f32]) -> Result<(), GpuError> {
        if out.len() > rb.len {
            return Err(super::shape_err(
                "read_back",
                format!("{} values of {}", out.len(), rb.len),
            ));
        }
        let (tx, rx) = std::sync::mpsc::channel();
        let bytes = (out.len() * 4).max(4) as u64;
        rb.buf.map_async(wgpu::MapMode::Read, ..bytes, move |r| {
            let _ = tx.send(r);
        });
        self.wait()?;
        rx.recv()
            .map_err(|e| GpuError::Map(e.to_string()))?
            .map_err(|e| GpuError::Map(e.to_string()))?;
        {
            let view = rb
                .buf
                .get_mapped_range(..bytes)
                .map_err(|e| GpuError::Map(e.to_string()))?;
            out.copy_from_slice(&bytemuck::cast_slice::<u8, f32>(&view)[..out.len()]);
        }
        rb.buf.unmap();
        Ok(())
    }
}

/// One buffer of a weight: rows `row0..row0 + rows`, in the file's layout for those rows
/// (q8/q4: packed values of these rows, then their f16 scales).
#[derive(Debug)]
pub(crate) struct WeightPart {
    pub buf: wgpu::Buffer,
    pub row0: usize,
    pub rows: usize,
    /// Index of the first scale's `u32` word (quantized dtypes).
    pub scale_word: usize,
}

/// A weight matrix `[rows, cols]` resident on the device in its stored dtype.
#[derive(Debug)]
pub struct GpuWeight {
    /// Q4, Q8, Lut4, Lut6, F16 or F32 (bf16 is uploaded as f32: f16 cannot hold its range).
    pub dtype: DType,
    pub rows: usize,
    pub cols: usize,
    pub group_size: usize,
    pub(crate) parts: Vec<WeightPart>,
}

impl GpuWeight {
    /// Uploads `t` (any rank; rows = all dims but the last). Splits by rows so no buffer exceeds
    /// [`GpuContext::max_binding_bytes`].
    pub fn upload(ctx: &GpuContext, t: &TensorView<'_>) -> Result<GpuWeight, GpuError> {
        Self::upload_with_limit(ctx, t, ctx.max_binding_bytes())
    }

    /// [`upload`](Self::upload) with an explicit per-buffer byte limit (tests exercise splitting).
    pub fn upload_with_limit(
        ctx: &GpuContext,
        t: &TensorView<'_>,
        max_bytes: u64,
    ) -> Result<GpuWeight, GpuError> {
        let (rows, cols) = (t.rows(), t.cols());
        let bf16_as_f32;
        let (dtype, data): (DType, &[u8]) = match t.dtype {
            DType::BF16 => {
                bf16_as_f32 = t.to_f32_vec();
                (DType::F32, bytemuck::cast_slice(&bf16_as_f32))
            }
            d => (d, t.data),
        };
        let (row_vals, row_scales) = match dtype {
            DType::Q4 => (cols / 2, cols / t.group_size * 2),
            DType::Q8 => (cols, cols / t.group_size * 2),
            DType::F16 => (cols * 2, 0),
            // palettes go per row group (see `lut_palettes` below), not per row
            DType::Lut4 | DType::Lut6 => (crate::tensor::lut::row_bytes(dtype, cols), 0),
            _ => (cols * 4, 0),
        };
        // lut: bytes of one palette; a part of n rows holds at most n / gs + 2 of them
        let pal_bytes = if dtype.is_lut() {
            crate::tensor::lut::palette_len(dtype) * 2
        } else {
            0
        };
        let gs = t.group_size.max(1);
        let row_bytes = (row_vals + row_scales + pal_bytes.div_ceil(gs)) as u64;
        // keep a margin for the 16-byte padding of the values and of the scales
        let margin = 32 + 2 * pal_bytes as u64;
        let per_part = ((max_bytes.saturating_sub(margin)) / row_bytes.max(1)) as usize;
        if per_part == 0 {
            return Err(GpuError::Unsupported(format!(
                "one row of {row_bytes} bytes exceeds the buffer limit {max_bytes}"
            )));
        }
        let (values, scales) = data.split_at(rows * row_vals);
        let mut parts = Vec::new();
        let mut row0 = 0;
        while row0 < rows || (rows == 0 && parts.is_empty()) {
            let n = per_part.min(rows - row0);
            let v = &values[row0 * row_vals..(row0 + n) * row_vals];
            let s = if pal_bytes > 0 && n > 0 {
                // the palettes of the row groups of rows row0..row0+n
                &scales[row0 / gs * pal_bytes..((row0 + n - 1) / gs + 1) * pal_bytes]
            } else {
                &scales[row0 * row_scales..(row0 + n) * row_scales]
            };
            let vbytes = padded(v.len()) as usize;
            let buf = ctx.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("weight"),
                size: vbytes as u64 + if s.is_empty() { 0 } else { padded(s.len()) },
                usage: USAGE,
                mapped_at_creation: true,
            });
            {
                let mut m = buf
                    .slice(..)
                    .get_mapped_range_mut()
                    .map_err(|e| GpuError::Map(e.to_string()))?;
                m.slice(..v.len()).copy_from_slice(v);
                m.slice(vbytes..vbytes + s.len()).copy_from_slice(s);
            }
            buf.unmap();
            parts.push(WeightPart {
                buf,
                row0,
                rows: n,
                scale_word: vbytes / 4,
            });
            row0 += n;
            if rows == 0 {
                break;
            }
        }
        ctx.take_error()?;
        Ok(GpuWeight {
            dtype,
            rows,
            cols,
            group_size: t.group_size,
            parts,
        })
    }

    /// Number of buffers the weight was split into.
    pub fn n_parts(&self) -> usize {
        self.parts.len()
    }

    /// Device bytes held.
    pub fn bytes(&self) -> u64 {
        self.parts.iter().map(|p| p.buf.size()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::{ctx, random};
    use super::*;

    #[test]
    fn gpu_read_prefix() {
        let Some(ctx) = ctx() else { return };
        let x = random(37, 4);
        let b = GpuBuffer::from_f32(ctx, &x);
        assert_eq!(ctx.read_f32_n(&b, 5).unwrap(), x[..5]);
        assert_eq!(ctx.read_f32(&b).unwrap(), x);
        assert!(ctx.read_f32_n(&b, 38).is_err());
        let h = GpuBuffer::from_f32_as_f16(ctx, &[1.0, 2.0, 3.0]);
        assert_eq!(ctx.read_f32_n(&h, 1).unwrap(), [1.0]);
    }
}
