//! `--image` / `--audio` for `cellm run` and `cellm compare`: files turned into soft tokens by the
//! model's own towers.

use anyhow::{Context, bail};
use cellm_encoders::MediaEncoders;
use cellm_engine::session::{MediaEmbedding, Session};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Fails early (before a model is loaded) when a media file cannot be opened.
pub fn check_readable(images: &[PathBuf], audio: &[PathBuf]) -> anyhow::Result<()> {
    for (kind, paths) in [("image", images), ("audio", audio)] {
        for p in paths {
            if let Err(e) = std::fs::File::open(p) {
                bail!("cannot read the {kind} file {}: {e}", p.display());
            }
            if p.is_dir() {
                bail!("the {kind} path {} is a folder, not a file", p.display());
            }
        }
    }
    Ok(())
}

/// The soft tokens of `images` then `audio` (the order the Gemma 4 template places them in),
/// encoded at the model's default image budget. One entry per image, one per 30 s audio clip.
pub fn media_embeddings(
    session: &Session,
    images: &[PathBuf],
    audio: &[PathBuf],
) -> anyhow::Result<Vec<MediaEmbedding>> {
    encode(session, images, audio, None)
}

/// Like [`media_embeddings`], for a prompt whose placeholders are already laid out (`cellm
/// compare`): each image gets the budget that yields as many soft tokens as its run of
/// placeholders in `ids`.
pub fn media_embeddings_for_ids(
    session: &Session,
    images: &[PathBuf],
    audio: &[PathBuf],
    ids: &[u32],
) -> anyhow::Result<Vec<MediaEmbedding>> {
    let special = &session.file().header().tokenizer.special_tokens;
    for (kind, given) in [("image", images.len()), ("audio", audio.len())] {
        let count = special
            .get(kind)
            .map_or(0, |&p| ids.iter().filter(|&&id| id == p).count());
        if count > 0 && given == 0 {
            eprintln!(
                "note: the reference holds {count} {kind} placeholder tokens but no --{kind} \
                 was given; they are fed as plain tokens"
            );
        }
    }
    let runs = special.get("image").map(|&p| placeholder_runs(ids, p));
    let counts = match runs {
        Some(r) if r.len() == images.len() => Some(r),
        _ => None,
    };
    encode(session, images, audio, counts.as_deref())
}

/// Lengths of the maximal runs of `token` in `ids`, in order.
fn placeholder_runs(ids: &[u32], token: u32) -> Vec<usize> {
    let mut runs = Vec::new();
    let mut n = 0;
    for &id in ids {
        if id == token {
            n += 1;
        } else if n > 0 {
            runs.push(n);
            n = 0;
        }
    }
    if n > 0 {
        runs.push(n);
    }
    runs
}

fn encode(
    session: &Session,
    images: &[PathBuf],
    audio: &[PathBuf],
    image_tokens: Option<&[usize]>,
) -> anyhow::Result<Vec<MediaEmbedding>> {
    if images.is_empty() && audio.is_empty() {
        return Ok(Vec::new());
    }
    let mut encoders = MediaEncoders::load(session.file()).context("loading the media encoders")?;
    // The towers run where the text stack runs.
    if session.backend().starts_with("gpu") {
        match cellm_encoders::gpu::TowersGpu::load(&encoders) {
            Ok(g) => encoders = encoders.with_gpu(std::sync::Arc::new(g)),
            Err(e) => eprintln!("media towers on the CPU: {e}"),
        }
    }
    let device = encoders.device();
    if !images.is_empty() && encoders.vision.is_none() {
        bail!("this model has no vision tower; use a Gemma 4 model with vision");
    }
    if !audio.is_empty() && encoders.audio.is_none() {
        bail!("this model has no audio tower; use a Gemma 4 model with audio (E2B or E4B)");
    }
    let mut out = Vec::new();
    for (i, path) in images.iter().enumerate() {
        let t = Instant::now();
        let e = match image_tokens {
            Some(counts) => encoders.encode_image_matching(path, counts[i]),
            None => encoders.encode_image(path),
        }
        .with_context(|| format!("encoding the image {}", path.display()))?;
        note("image", path, e.tokens, t, &device);
        out.push(e);
    }
    for path in audio {
        let t = Instant::now();
        let clips = encoders
            .encode_audio(path)
            .with_context(|| format!("encoding the audio {}", path.display()))?;
        note(
            "audio",
            path,
            clips.iter().map(|c| c.tokens).sum(),
            t,
            &device,
        );
        out.extend(clips);
    }
    Ok(out)
}

fn note(kind: &str, path: &Path, tokens: usize, t: Instant, device: &str) {
    eprintln!(
        "[{kind} {}: {tokens} soft tokens in {:.2} s on the {device}]",
        path.display(),
        t.elapsed().as_secs_f64()
    );
}

#[cfg(test)]
mod tests {
    use super::placeholder_runs;

    #[test]
    fn runs_of_placeholders() {
        assert_eq!(placeholder_runs(&[1, 7, 7, 2, 7, 3], 7), vec![2, 1]);
        assert_eq!(placeholder_runs(&[7, 7, 7], 7), vec![3]);
        assert!(placeholder_runs(&[1, 2], 7).is_empty());
    }
}
