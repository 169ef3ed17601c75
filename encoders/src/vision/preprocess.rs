//! Image decoding and the Gemma 4 image processor: aspect-preserving bicubic resize to a
//! multiple of 48 pixels within the patch budget, `/255`, 16×16 patchify, (x, y) position ids,
//! padding to `max_patches`.

use super::resize::resize_bicubic_aa;
use crate::EncoderError;
use image::{DynamicImage, ImageDecoder, ImageReader, Limits};
use std::path::Path;

pub const PATCH_SIZE: usize = 16;
pub const POOLING_KERNEL: usize = 3;
/// Soft-token budgets the Gemma 4 processor accepts.
pub const SUPPORTED_SOFT_TOKENS: [usize; 5] = [70, 140, 280, 560, 1120];
pub const DEFAULT_MAX_SOFT_TOKENS: usize = 280;
/// Largest image accepted, checked on the header before decoding.
pub const MAX_PIXELS: u64 = 100_000_000;
pub const MAX_SIDE: u32 = 30_000;
/// Bound on the decoder's allocations (a 100 MP RGBA8 image needs 400 MB).
pub const MAX_DECODE_ALLOC: u64 = 512 * 1024 * 1024;

/// A decoded RGB8 image, `height × width × 3` interleaved.
#[derive(Clone, Debug)]
pub struct RgbImage {
    pub width: usize,
    pub height: usize,
    pub data: Vec<u8>,
}

/// The processor's output for one image.
#[derive(Clone, Debug)]
pub struct PreprocessedImage {
    /// `[max_patches, 768]` in [0, 1]; padding rows are zero.
    pub pixel_values: Vec<f32>,
    /// `[max_patches]` (x, y) patch positions; (-1, -1) for padding.
    pub positions: Vec<(i32, i32)>,
    /// Real (non-padding) patches, the first rows of `pixel_values`.
    pub num_patches: usize,
    pub max_patches: usize,
    /// Resized size in pixels.
    pub width: usize,
    pub height: usize,
}

impl PreprocessedImage {
    pub fn patch_dim(&self) -> usize {
        PATCH_SIZE * PATCH_SIZE * 3
    }

    /// Patch grid (columns, rows).
    pub fn grid(&self) -> (usize, usize) {
        (self.width / PATCH_SIZE, self.height / PATCH_SIZE)
    }

    /// Soft tokens this image becomes (patches / 9).
    pub fn soft_tokens(&self) -> usize {
        self.num_patches / (POOLING_KERNEL * POOLING_KERNEL)
    }
}

fn bad(path: &Path, why: impl ToString) -> EncoderError {
    EncoderError::BadImage {
        path: path.display().to_string(),
        why: why.to_string(),
    }
}

/// Decodes any supported format (PNG, JPEG, WebP, GIF first frame, BMP), applies the EXIF
/// orientation, and converts to RGB8 (alpha dropped, grey replicated, as PIL's `convert("RGB")`).
/// Refuses images over [`MAX_PIXELS`] / [`MAX_SIDE`] from the header, before decoding.
pub fn load_rgb(path: &Path) -> Result<RgbImage, EncoderError> {
    let open = || -> Result<ImageReader<std::io::BufReader<std::fs::File>>, EncoderError> {
        ImageReader::open(path)
            .map_err(|source| EncoderError::Io {
                path: path.display().to_string(),
                source,
            })?
            .with_guessed_format()
            .map_err(|source| EncoderError::Io {
                path: path.display().to_string(),
                source,
            })
    };
    let reader = open()?;
    if reader.format() == Some(image::ImageFormat::Jpeg) {
        check_jpeg_complete(path)?;
    }
    if reader.format().is_none() {
        return Err(bad(
            path,
            "unknown image format (supported: PNG, JPEG, WebP, GIF, BMP)",
        ));
    }
    let (w, h) = reader.into_dimensions().map_err(|e| bad(path, e))?;
    check_dimensions(path, w, h)?;
    let mut reader = open()?;
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(MAX_DECODE_ALLOC);
    reader.limits(limits);
    let mut decoder = reader.into_decoder().map_err(|e| bad(path, e))?;
    // A broken EXIF block should not make a decodable image unusable.
    let orientation = decoder.orientation().ok();
    let mut img = DynamicImage::from_decoder(decoder).map_err(|e| bad(path, e))?;
    if let Some(o) = orientation {
        img.apply_orientation(o);
    }
    let rgb = img.to_rgb8();
    let (width, height) = (rgb.width() as usize, rgb.height() as usize);
    if width == 0 || height == 0 {
        return Err(bad(path, "image has no pixels"));
    }
    Ok(RgbImage {
        width,
        height,
        data: rgb.into_raw(),
    })
}

/// The `image` crate decodes a truncated JPEG without complaint (filling the missing rows), while
/// PIL refuses it; refuse it too: the end-of-image marker must come after the last scan start.
fn check_jpeg_complete(path: &Path) -> Result<(), EncoderError> {
    let bytes = std::fs::read(path).map_err(|source| EncoderError::Io {
        path: path.display().to_string(),
        source,
    })?;
    let last = |marker: u8| bytes.windows(2).rposition(|w| w == [0xff, marker]);
    match (last(0xda), last(0xd9)) {
        (Some(sos), Some(eoi)) if eoi > sos => Ok(()),
        _ => Err(bad(
            path,
            "truncated JPEG (no end-of-image marker after the image data)",
        )),
    }
}

fn check_dimensions(path: &Path, w: u32, h: u32) -> Result<(), EncoderError> {
    if w == 0 || h == 0 {
        return Err(bad(path, format!("image is {w}x{h} pixels")));
    }
    if w > MAX_SIDE || h > MAX_SIDE || w as u64 * h as u64 > MAX_PIXELS {
        return Err(EncoderError::ImageTooLarge {
            path: path.display().to_string(),
            width: w as u64,
            height: h as u64,
            limit: format!(
                "at most {MAX_SIDE} pixels a side and {} megapixels",
                MAX_PIXELS / 1_000_000
            ),
        });
    }
    Ok(())
}

/// transformers' `get_aspect_ratio_preserving_size`: the largest multiple-of-48 size with at most
/// `max_patches` patches, same aspect ratio; returns (height, width).
pub fn target_size(
    height: usize,
    width: usize,
    max_patches: usize,
) -> Result<(usize, usize), EncoderError> {
    let total_px = (height * width) as f64;
    let target_px = (max_patches * PATCH_SIZE * PATCH_SIZE) as f64;
    let factor = (target_px / total_px).sqrt();
    let side = POOLING_KERNEL * PATCH_SIZE;
    let mut th = (factor * height as f64 / side as f64).floor() as usize * side;
    let mut tw = (factor * width as f64 / side as f64).floor() as usize * side;
    if th == 0 && tw == 0 {
        return Err(EncoderError::Invalid(format!(
            "cannot resize a {width}x{height} image: both sides round to 0"
        )));
    }
    let max_side = (max_patches / (POOLING_KERNEL * POOLING_KERNEL)) * side;
    if th == 0 {
        th = side;
        tw = ((width / height) * side).min(max_side);
    } else if tw == 0 {
        tw = side;
        th = ((height / width) * side).min(max_side);
    }
    if (th * tw) as f64 > target_px {
        return Err(EncoderError::Invalid(format!(
            "resizing {width}x{height} to {tw}x{th} exceeds {max_patches} patches"
        )));
    }
    Ok((th, tw))
}

/// Resizes, rescales, patchifies and pads an RGB image for a budget of `max_soft_tokens`.
pub fn preprocess_rgb(
    img: &RgbImage,
    max_soft_tokens: usize,
) -> Result<PreprocessedImage, EncoderError> {
    if !SUPPORTED_SOFT_TOKENS.contains(&max_soft_tokens) {
        return Err(EncoderError::Invalid(format!(
            "max_soft_tokens must be one of {SUPPORTED_SOFT_TOKENS:?}, got {max_soft_tokens}"
        )));
    }
    let max_patches = max_soft_tokens * POOLING_KERNEL * POOLING_KERNEL;
    let (th, tw) = target_size(img.height, img.width, max_patches)?;
    let resized = if th == img.height && tw == img.width {
        img.data.clone()
    } else {
        resize_bicubic_aa(&img.data, img.width, img.height, tw, th)
    };
    Ok(patchify(&resized, tw, th, max_patches))
}

/// Splits an RGB8 image whose sides are multiples of 16 into `/255` patches, row-major over the
/// grid, `(py, px, c)` inside a patch, padded to `max_patches`.
pub fn patchify(rgb: &[u8], width: usize, height: usize, max_patches: usize) -> PreprocessedImage {
    let (gw, gh) = (width / PATCH_SIZE, height / PATCH_SIZE);
    let n = gw * gh;
    let dim = PATCH_SIZE * PATCH_SIZE * 3;
    let rows = max_patches.max(n);
    let mut pixel_values = vec![0f32; rows * dim];
    let mut positions = vec![(-1, -1); rows];
    for gy in 0..gh {
        for gx in 0..gw {
            let p = gy * gw + gx;
            positions[p] = (gx as i32, gy as i32);
            let out = &mut pixel_values[p * dim..(p + 1) * dim];
            for py in 0..PATCH_SIZE {
                let y = gy * PATCH_SIZE + py;
                let src = &rgb[(y * width + gx * PATCH_SIZE) * 3..][..PATCH_SIZE * 3];
                for (o, &v) in out[py * PATCH_SIZE * 3..(py + 1) * PATCH_SIZE * 3]
                    .iter_mut()
                    .zip(src)
                {
                    *o = v as f32 / 255.0;
                }
            }
        }
    }
    PreprocessedImage {
        pixel_values,
        positions,
        num_patches: n,
        max_patches: rows,
        width,
        height,
    }
}

/// Decodes and preprocesses an image file.
pub fn preprocess_file(
    path: &Path,
    max_soft_tokens: usize,
) -> Result<PreprocessedImage, EncoderError> {
    let img = load_rgb(path)?;
    preprocess_rgb(&img, max_soft_tokens)
}

/// The resized RGB8 image the processor would patchify (for tests and debugging).
pub fn resized_rgb(img: &RgbImage, max_soft_tokens: usize) -> Result<RgbImage, EncoderError> {
    let max_patches = max_soft_tokens * POOLING_KERNEL * POOLING_KERNEL;
    let (th, tw) = target_size(img.height, img.width, max_patches)?;
    let data = if th == img.height && tw == img.width {
        img.data.clone()
    } else {
        resize_bicubic_aa(&img.data, img.width, img.height, tw, th)
    };
    Ok(RgbImage {
        width: tw,
        height: th,
        data,
    })
}
