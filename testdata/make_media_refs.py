"""Reference outputs of transformers' Gemma 4 image processor and audio feature extractor.

Writes testdata/media/: test images (PNG/JPEG made here, deterministic), WAV files at several
rates / channel counts / sample formats, and references:
- <image>.resized.png: the image exactly as the processor resized it (uint8), plus JSON with the
  target size, soft-token count, and a few pixel_values spot checks (pixel_values = resized / 255).
- audio_refs.safetensors: log-mel features of each WAV after the documented preprocessing.
Run: python3 testdata/make_media_refs.py   (CPU, a few seconds; needs transformers, torchvision, scipy)
"""
import json, os, io
import numpy as np
import torch
from PIL import Image
import soundfile as sf
from scipy.signal import resample_poly
from safetensors.numpy import save_file
from transformers.models.gemma4.image_processing_gemma4 import Gemma4ImageProcessor
from transformers.models.gemma4.image_processing_pil_gemma4 import Gemma4ImageProcessorPil
from transformers.models.gemma4.feature_extraction_gemma4 import Gemma4AudioFeatureExtractor

torch.set_num_threads(1)
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "media")
os.makedirs(OUT, exist_ok=True)
rng = np.random.default_rng(1234)


def make_image(w, h, mode="RGB"):
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    r = 127 + 120 * np.sin(x / max(w, 1) * 6.3 + y / max(h, 1) * 2.0)
    g = 127 + 120 * np.cos(y / max(h, 1) * 9.0)
    b = (x * 3 + y * 5) % 256
    img = np.stack([r, g, b], -1) + rng.normal(0, 12, (h, w, 3))
    img = np.clip(img, 0, 255).astype(np.uint8)
    im = Image.fromarray(img, "RGB")
    if mode != "RGB":
        im = im.convert(mode)
    return im


images = {
    "wide_517x333.png": make_image(517, 333),
    "small_100x60.png": make_image(100, 60),
    "square_384.png": make_image(384, 384),  # already the target size at budget 70: no resize
    "tall_200x1000.png": make_image(200, 1000),
    "strip_600x20.png": make_image(600, 20),  # one side rounds to 0
    "gray_300x200.png": make_image(300, 200, "L"),
    "rgba_256x320.png": make_image(256, 320, "RGBA"),
    "photo_640x480.jpg": make_image(640, 480),
}
fast = Gemma4ImageProcessor()
pil = Gemma4ImageProcessorPil()
meta = {}
for name, im in images.items():
    path = os.path.join(OUT, name)
    if name.endswith(".jpg"):
        im.save(path, quality=90)
    else:
        im.save(path)
    loaded = Image.open(path)
    rgb = loaded.convert("RGB")
    for budget in (70,):  # 70 keeps the committed fixtures small; the rule is the same for 280
        a = fast(rgb, max_soft_tokens=budget, return_tensors="pt")
        b = pil(rgb, max_soft_tokens=budget, return_tensors="pt")
        pv = a["pixel_values"][0]
        n = int(a["num_soft_tokens_per_image"][0])
        pos = a["image_position_ids"][0]
        n_patches = int((pos[:, 0] >= 0).sum())
        ph = int(pos[:n_patches, 1].max()) + 1
        pw = int(pos[:n_patches, 0].max()) + 1
        # Undo the patchify to recover the resized uint8 image.
        patches = pv[:n_patches].reshape(ph, pw, 16, 16, 3).permute(0, 2, 1, 3, 4).reshape(ph * 16, pw * 16, 3)
        resized = torch.round(patches * 255).to(torch.uint8).numpy()
        assert torch.allclose(patches * 255, torch.round(patches * 255), atol=1e-3)
        stem = name.rsplit(".", 1)[0]
        Image.fromarray(resized).save(os.path.join(OUT, f"{stem}.t{budget}.resized.png"))
        diff = (a["pixel_values"] - b["pixel_values"]).abs().max().item()
        meta[f"{name}@{budget}"] = {
            "source": name, "budget": budget, "source_size": [loaded.width, loaded.height],
            "target_size": [pw * 16, ph * 16], "num_soft_tokens": n, "num_patches": n_patches,
            "max_patches": int(pv.shape[0]), "fast_vs_pil_max_abs": diff,
            "pixel_sum": float(pv.double().sum()),
        }
        print(name, budget, meta[f"{name}@{budget}"])
json.dump(meta, open(os.path.join(OUT, "image_refs.json"), "w"), indent=1)

# ---- audio
fe = Gemma4AudioFeatureExtractor()
def tone(sr, secs, ch):
    t = np.arange(int(sr * secs)) / sr
    sig = 0.4 * np.sin(2 * np.pi * 440 * t) + 0.2 * np.sin(2 * np.pi * 1234.5 * t * (1 + 0.1 * t))
    sig = sig + 0.02 * rng.normal(size=t.shape)
    sig *= np.minimum(1, t * 8)  # fade in
    if ch == 2:
        sig = np.stack([sig, 0.5 * sig[::-1]], -1)
    return sig.astype(np.float32)

wavs = {
    "mono16k_pcm16.wav": (16000, 1.3, 1, "PCM_16"),
    "stereo44k_pcm16.wav": (44100, 0.7, 2, "PCM_16"),
    "stereo8k_pcm16.wav": (8000, 0.9, 2, "PCM_16"),
    "mono48k_float.wav": (48000, 0.5, 1, "FLOAT"),
    "mono22k_pcm24.wav": (22050, 0.6, 1, "PCM_24"),
    "mono16k_pcm32.wav": (16000, 0.4, 1, "PCM_32"),
    "mono16k_u8.wav": (16000, 0.3, 1, "PCM_U8"),
}
tensors = {}
ameta = {}
for name, (sr, secs, ch, sub) in wavs.items():
    path = os.path.join(OUT, name)
    sf.write(path, tone(sr, secs, ch), sr, subtype=sub)
    data, rate = sf.read(path, dtype="float32", always_2d=True)
    mono = data.mean(axis=1)
    if rate != 16000:
        g = np.gcd(rate, 16000)
        mono = resample_poly(mono.astype(np.float64), 16000 // g, rate // g).astype(np.float32)
    out = fe([mono], sampling_rate=16000, return_tensors="np")
    key = name.rsplit(".", 1)[0]
    tensors[f"{key}.features"] = out["input_features"][0].astype(np.float32)
    tensors[f"{key}.mask"] = out["input_features_mask"][0].astype(np.uint8)
    tensors[f"{key}.waveform16k"] = mono.astype(np.float32)
    ameta[name] = {"rate": rate, "channels": ch, "subtype": sub, "frames": int(out["input_features"].shape[1]),
                   "resampled": rate != 16000}
    print(name, ameta[name])
save_file(tensors, os.path.join(OUT, "audio_refs.safetensors"))
json.dump(ameta, open(os.path.join(OUT, "audio_refs.json"), "w"), indent=1)
