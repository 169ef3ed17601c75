//! The towers' GPU copies: uploaded once (a GPU context of their own and the tower weights in
//! their stored dtype) and kept by callers that encode repeatedly, such as the app's worker.
//! [`crate::MediaEncoders::with_gpu`] then runs each image and clip on the GPU, falling back to
//! the CPU tower (with a note) if the GPU fails.

use crate::audio::LogMelFeatures;
use crate::audio::tower::gpu::AudioGpu;
use crate::vision::PreprocessedImage;
use crate::vision::gpu::VisionGpu;
use crate::{EncoderError, MediaEncoders};
use cellm_engine::kernels::gpu::GpuContext;
use std::sync::Arc;

pub struct TowersGpu {
    vision: Option<VisionGpu>,
    audio: Option<AudioGpu>,
    adapter: String,
}

impl TowersGpu {
    /// Uploads the towers `encoders` has; an error when no adapter exists or an upload fails.
    pub fn load(encoders: &MediaEncoders<'_>) -> Result<TowersGpu, EncoderError> {
        let ctx = GpuContext::new()
            .map_err(|e| EncoderError::Invalid(format!("no GPU for the media towers: {e}")))?;
        let adapter = ctx.adapter().to_string();
        let ctx = Arc::new(ctx);
        let vision = match &encoders.vision {
            Some(t) => Some(VisionGpu::new(ctx.clone(), t)?),
            None => None,
        };
        let audio = match &encoders.audio {
            Some(t) => Some(AudioGpu::new(ctx, t)?),
            None => None,
        };
        Ok(TowersGpu {
            vision,
            audio,
            adapter,
        })
    }

    /// The adapter the towers run on.
    pub fn adapter(&self) -> &str {
        &self.adapter
    }

    pub(crate) fn encode_image(
        &self,
        tower: &crate::vision::VisionTower<'_>,
        pre: &PreprocessedImage,
    ) -> Option<Result<Vec<f32>, EncoderError>> {
        self.vision.as_ref().map(|g| g.encode(tower, pre))
    }

    pub(crate) fn encode_clip(
        &self,
        clip: &LogMelFeatures,
    ) -> Option<Result<Vec<f32>, EncoderError>> {
        self.audio.as_ref().map(|g| g.encode(clip))
    }
}

/// The GPU result when there is one and it worked; else the CPU's (a failed GPU encode is
/// reported on stderr, and the CPU result is what the user gets).
pub(crate) fn or_cpu(
    gpu: Option<Result<Vec<f32>, EncoderError>>,
    what: &str,
    cpu: impl FnOnce() -> Result<Vec<f32>, EncoderError>,
) -> Result<Vec<f32>, EncoderError> {
    match gpu {
        Some(Ok(v)) => Ok(v),
        Some(Err(e)) => {
            eprintln!("the {what} tower failed on the GPU ({e}); encoding on the CPU");
            cpu()
        }
        None => cpu(),
    }
}
