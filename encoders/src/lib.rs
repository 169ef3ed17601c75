//! cellm-encoders: the Gemma 4 vision tower (ViT) and audio tower (USM conformer), with their
//! preprocessing, projecting images and audio into soft tokens for the text stack.

pub mod audio;
pub mod clipped;
pub mod embed;
pub mod error;
#[cfg(feature = "gpu")]
pub mod gpu;
pub mod vision;

pub use error::EncoderError;

use cellm_engine::format::CellmFile;
use cellm_engine::session::MediaEmbedding;
use std::path::Path;
use vision::preprocess::{DEFAULT_MAX_SOFT_TOKENS, SUPPORTED_SOFT_TOKENS};

/// Both towers of one model (either may be absent), for callers that just want a file turned
/// into soft tokens: the CLI, the app.
pub struct MediaEncoders<'a> {
    pub vision: Option<vision::VisionTower<'a>>,
    pub audio: Option<audio::AudioTower<'a>>,
    image_budget: usize,
    /// The towers' GPU copies, when the caller has them (see [`MediaEncoders::with_gpu`]).
    #[cfg(feature = "gpu")]
    gpu: Option<std::sync::Arc<gpu::TowersGpu>>,
}

impl<'a> MediaEncoders<'a> {
    /// Loads whichever towers the model has (a text-only model gives two `None`s, not an error).
    pub fn load(file: &'a CellmFile) -> Result<Self, EncoderError> {
        // The checkpoint's own budget when it names a supported one (E2B: 280).
        let image_budget = file
            .header()
            .config
            .get("vision_soft_tokens_per_image")
            .and_then(|v| v.as_u64())
            .map(|v| v as usize)
            .filter(|v| SUPPORTED_SOFT_TOKENS.contains(v))
            .unwrap_or(DEFAULT_MAX_SOFT_TOKENS);
        Ok(Self {
            vision: vision::VisionTower::load(file)?,
            audio: audio::AudioTower::load(file)?,
            image_budget,
            #[cfg(feature = "gpu")]
            gpu: None,
        })
    }

    /// Runs the towers on their GPU copies (made by [`gpu::TowersGpu::load`] for this model).
    #[cfg(feature = "gpu")]
    pub fn with_gpu(mut self, gpu: std::sync::Arc<gpu::TowersGpu>) -> Self {
        self.gpu = Some(gpu);
        self
    }

    /// Where the towers run: "cpu" or "gpu: <adapter>".
    pub fn device(&self) -> String {
        #[cfg(feature = "gpu")]
        if let Some(g) = &self.gpu {
            return format!("gpu: {}", g.adapter());
        }
        "cpu".to_string()
    }

    /// One preprocessed image through the vision tower (on the GPU copy when there is one).
    fn vision_embed(
        &self,
        tower: &vision::VisionTower<'a>,
        pre: &vision::PreprocessedImage,
    ) -> Result<Vec<f32>, EncoderError> {
        #[cfg(feature = "gpu")]
        if let Some(g) = &self.gpu {
            return gpu::or_cpu(g.encode_image(tower, pre), "vision", || tower.encode(pre));
        }
        tower.encode(pre)
    }

    /// One clip's features through the audio tower (on the GPU copy when there is one).
    fn audio_embed(
        &self,
        tower: &audio::AudioTower<'a>,
        clip: &audio::LogMelFeatures,
    ) -> Result<Vec<f32>, EncoderError> {
        #[cfg(feature = "gpu")]
        if let Some(g) = &self.gpu {
            return gpu::or_cpu(g.encode_clip(clip), "audio", || tower.encode(clip));
        }
        tower.encode(clip)
    }

    /// The soft-token budget images get by default.
    pub fn image_budget(&self) -> usize {
        self.image_budget
    }

    fn vision(&self) -> Result<&vision::VisionTower<'a>, EncoderError> {
        self.vision.as_ref().ok_or_else(|| {
            EncoderError::Invalid(
                "this model has no vision tower; use a Gemma 4 model with vision".into(),
            )
        })
    }

    fn audio(&self) -> Result<&audio::AudioTower<'a>, EncoderError> {
        self.audio.as_ref().ok_or_else(|| {
            EncoderError::Invalid(
                "this model has no audio tower; use a Gemma 4 model with audio (E2B or E4B)".into(),
            )
        })
    }

    /// Soft tokens of an image file at the model's default budget.
    pub fn encode_image(&self, path: &Path) -> Result<MediaEmbedding, EncoderError> {
        self.encode_image_with_budget(path, self.image_budget)
    }

    /// Soft tokens of an image file at an explicit budget (70, 140, 280, 560 or 1120).
    pub fn encode_image_with_budget(
        &self,
        path: &Path,
        max_soft_tokens: usize,
    ) -> Result<MediaEmbedding, EncoderError> {
        let tower = self.vision()?;
        vision::encode_image_file_with(tower, path, max_soft_tokens, &|pre| {
            self.vision_embed(tower, pre)
        })
    }

    /// Soft tokens of an image file at whichever supported budget gives exactly `tokens` of them
    /// (the default budget first): for prompts whose placeholders were laid out elsewhere, such
    /// as a reference made with another `max_soft_tokens`.
    pub fn encode_image_matching(
        &self,
        path: &Path,
        tokens: usize,
    ) -> Result<MediaEmbedding, EncoderError> {
        let tower = self.vision()?;
        let rgb = vision::load_rgb(path)?;
        let budgets = std::iter::once(self.image_budget).chain(
            SUPPORTED_SOFT_TOKENS
                .into_iter()
                .filter(|&b| b != self.image_budget),
        );
        let mut seen = Vec::new();
        for budget in budgets {
            let pre = vision::preprocess_rgb(&rgb, budget)?;
            let n = tower.soft_tokens(&pre);
            if n == tokens {
                let embeddings = self.vision_embed(tower, &pre)?;
                return Ok(MediaEmbedding {
                    kind: cellm_engine::session::MediaKind::Image,
                    embeddings,
                    tokens,
                });
            }
            seen.push(format!("{n} at budget {budget}"));
        }
        Err(EncoderError::Invalid(format!(
            "{}: the prompt has {tokens} image placeholders, but this image gives {}",
            path.display(),
            seen.join(", ")
        )))
    }

    /// Soft tokens of a WAV file: one embedding per 30 s clip.
    pub fn encode_audio(&self, path: &Path) -> Result<Vec<MediaEmbedding>, EncoderError> {
        let tower = self.audio()?;
        audio::encode_audio_file_with(tower, path, &|clip| self.audio_embed(tower, clip))
    }
}
