//! Image decoding and the Gemma 4 image processor against transformers' fast processor outputs
//! (testdata/media, made by testdata/make_media_refs.py) and bad inputs.

use cellm_encoders::EncoderError;
use cellm_encoders::vision::preprocess::{self, load_rgb, preprocess_file, resized_rgb};
use std::path::{Path, PathBuf};

fn media(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../testdata/media")
        .join(name)
}

fn refs() -> serde_json::Value {
    let s = std::fs::read_to_string(media("image_refs.json")).expect("image_refs.json");
    serde_json::from_str(&s).expect("json")
}

#[test]
fn vision_resize_is_bit_exact_with_torchvision() {
    let refs = refs();
    let obj = refs.as_object().expect("object");
    assert!(obj.len() >= 8);
    for (key, r) in obj {
        let src = r["source"].as_str().unwrap();
        let budget = r["budget"].as_u64().unwrap() as usize;
        let tw = r["target_size"][0].as_u64().unwrap() as usize;
        let th = r["target_size"][1].as_u64().unwrap() as usize;
        let img = load_rgb(&media(src)).unwrap();
        assert_eq!(
            [img.width, img.height],
            [
                r["source_size"][0].as_u64().unwrap() as usize,
                r["source_size"][1].as_u64().unwrap() as usize
            ],
            "{key}"
        );
        let out = resized_rgb(&img, budget).unwrap();
        assert_eq!((out.width, out.height), (tw, th), "{key}: target size");
        let stem = src.rsplit_once('.').unwrap().0;
        let want = image::open(media(&format!("{stem}.t{budget}.resized.png")))
            .unwrap()
            .to_rgb8();
        assert_eq!((want.width() as usize, want.height() as usize), (tw, th));
        let want = want.into_raw();
        let max = out
            .data
            .iter()
            .zip(&want)
            .map(|(a, b)| (*a as i32 - *b as i32).abs())
            .max()
            .unwrap();
        let ndiff = out.data.iter().zip(&want).filter(|(a, b)| a != b).count();
        if src.ends_with(".jpg") {
            // The resize is bit-exact (checked on PIL's own decoding of this file), but the
            // `image` crate's JPEG decoder differs from libjpeg-turbo by up to 4/255 on about a
            // quarter of the values (IDCT / chroma upsampling rounding).
            println!(
                "{key}: {ndiff} of {} bytes differ, max {max}/255",
                want.len()
            );
            assert!(max <= 6, "{key}: max diff {max}/255");
        } else {
            assert_eq!(max, 0, "{key}: {ndiff} bytes differ, max diff {max}/255");
        }

        let pre = preprocess_file(&media(src), budget).unwrap();
        assert_eq!(
            pre.soft_tokens(),
            r["num_soft_tokens"].as_u64().unwrap() as usize
        );
        assert_eq!(pre.num_patches, r["num_patches"].as_u64().unwrap() as usize);
        assert_eq!(pre.max_patches, r["max_patches"].as_u64().unwrap() as usize);
        let sum: f64 = pre.pixel_values.iter().map(|&v| v as f64).sum();
        let want_sum = r["pixel_sum"].as_f64().unwrap();
        let tol = if src.ends_with(".jpg") {
            2e-3 * want_sum
        } else {
            1e-2
        };
        assert!(
            (sum - want_sum).abs() < tol,
            "{key}: sum {sum} vs {want_sum}"
        );
    }
}

#[test]
fn vision_target_sizes_match_the_spec() {
    // gemma-spec §4.1 examples at budget 280 (max_patches 2520); (h, w) -> (h', w').
    for ((h, w), want) in [
        ((1000, 1000), (768, 768)),
        ((480, 640), (672, 912)),
        ((1080, 1920), (576, 1056)),
    ] {
        assert_eq!(preprocess::target_size(h, w, 2520).unwrap(), want);
    }
}

fn write_png(path: &Path, w: u32, h: u32) {
    let img = image::RgbImage::from_pixel(w, h, image::Rgb([10, 200, 30]));
    img.save(path).unwrap();
}

#[test]
fn vision_rejects_corrupt_and_truncated_files() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("corrupt.png");
    let mut bytes = std::fs::read(media("small_100x60.png")).unwrap();
    for b in bytes.iter_mut().skip(60).take(400) {
        *b ^= 0x5a;
    }
    std::fs::write(&p, &bytes).unwrap();
    let e = preprocess_file(&p, 70).unwrap_err();
    assert!(matches!(e, EncoderError::BadImage { .. }), "{e}");

    let p = dir.path().join("truncated.jpg");
    let bytes = std::fs::read(media("photo_640x480.jpg")).unwrap();
    std::fs::write(&p, &bytes[..bytes.len() / 3]).unwrap();
    let e = preprocess_file(&p, 70).unwrap_err();
    assert!(matches!(e, EncoderError::BadImage { .. }), "{e}");

    let p = dir.path().join("not_an_image.png");
    std::fs::write(&p, b"hello, this is text").unwrap();
    let e = preprocess_file(&p, 70).unwrap_err();
    assert!(e.to_string().contains("not_an_image.png"), "{e}");

    let p = dir.path().join("notes.txt");
    std::fs::write(&p, b"hello, this is text").unwrap();
    let e = preprocess_file(&p, 70).unwrap_err();
    assert!(e.to_string().contains("unknown image format"), "{e}");

    let e = preprocess_file(&media("small_100x60.png"), 100).unwrap_err();
    assert!(e.to_string().contains("max_soft_tokens"), "{e}");

    let e = preprocess_file(&dir.path().join("missing.png"), 70).unwrap_err();
    assert!(matches!(e, EncoderError::Io { .. }), "{e}");
}

#[test]
fn vision_refuses_huge_images_before_decoding() {
    // Decoding a 20000x20000 image would need 1.2 GB, so it is refused from its header (limit
    // 100 MP). Only the header is read, so the test writes a valid PNG header with an empty
    // image stream (a real single-colour file would take seconds of deflate to make).
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("huge.png");
    std::fs::write(&p, png_header_only(20000, 20000)).unwrap();
    let e = preprocess_file(&p, 280).unwrap_err();
    assert!(matches!(e, EncoderError::ImageTooLarge { .. }), "{e}");
    assert!(e.to_string().contains("20000x20000"), "{e}");
}

#[test]
fn vision_small_and_other_formats() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("one.png");
    write_png(&p, 1, 1);
    let pre = preprocess_file(&p, 280).unwrap();
    assert_eq!((pre.width, pre.height), (768, 768));
    assert_eq!(pre.soft_tokens(), 256);
    assert!(
        pre.pixel_values[..pre.num_patches * 768]
            .chunks(3)
            .all(|c| c == [10.0 / 255.0, 200.0 / 255.0, 30.0 / 255.0])
    );

    let src = image::open(media("small_100x60.png")).unwrap();
    let want = preprocess_file(&media("small_100x60.png"), 70).unwrap();
    for ext in ["gif", "bmp", "webp"] {
        let p = dir.path().join(format!("small.{ext}"));
        src.save(&p).unwrap();
        let pre = preprocess_file(&p, 70).unwrap();
        assert_eq!(pre.num_patches, want.num_patches, "{ext}");
        if ext != "gif" {
            // lossless (BMP, lossless WebP): identical to the PNG
            assert_eq!(pre.pixel_values, want.pixel_values);
        }
    }
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut c = 0xffff_ffffu32;
    for &b in bytes {
        c ^= b as u32;
        for _ in 0..8 {
            c = if c & 1 != 0 {
                0xedb8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
        }
    }
    !c
}

fn png_chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    let start = out.len();
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    let crc = crc32(&out[start..]);
    out.extend_from_slice(&crc.to_be_bytes());
}

/// A PNG whose IHDR says `w x h` RGB8, with an empty zlib stream as pixel data.
fn png_header_only(w: u32, h: u32) -> Vec<u8> {
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&w.to_be_bytes());
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    png_chunk(&mut out, b"IHDR", &ihdr);
    png_chunk(
        &mut out,
        b"IDAT",
        &[0x78, 0x01, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01],
    );
    png_chunk(&mut out, b"IEND", &[]);
    out
}

/// An APP1 EXIF segment holding only an orientation tag (big-endian TIFF, one IFD entry).
fn exif_orientation_segment(orientation: u16) -> Vec<u8> {
    let mut tiff = b"MM\x00\x2a\x00\x00\x00\x08".to_vec();
    tiff.extend_from_slice(&1u16.to_be_bytes()); // one entry
    tiff.extend_from_slice(&0x0112u16.to_be_bytes()); // Orientation
    tiff.extend_from_slice(&3u16.to_be_bytes()); // SHORT
    tiff.extend_from_slice(&1u32.to_be_bytes()); // count
    tiff.extend_from_slice(&orientation.to_be_bytes());
    tiff.extend_from_slice(&[0, 0]); // value padding
    tiff.extend_from_slice(&0u32.to_be_bytes()); // no next IFD
    let mut payload = b"Exif\x00\x00".to_vec();
    payload.extend_from_slice(&tiff);
    let mut seg = vec![0xff, 0xe1];
    seg.extend_from_slice(&((payload.len() + 2) as u16).to_be_bytes());
    seg.extend_from_slice(&payload);
    seg
}

#[test]
fn vision_applies_exif_orientation() {
    // 64x32: left half red, right half blue. EXIF orientation 6 means "rotate 90° clockwise to
    // display", giving 32x64 with red on top.
    let img = image::RgbImage::from_fn(64, 32, |x, _| {
        if x < 32 {
            image::Rgb([255, 0, 0])
        } else {
            image::Rgb([0, 0, 255])
        }
    });
    let mut jpeg = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 95)
        .encode_image(&img)
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("plain.jpg");
    std::fs::write(&plain, &jpeg).unwrap();
    let mut rotated = jpeg[..2].to_vec();
    rotated.extend_from_slice(&exif_orientation_segment(6));
    rotated.extend_from_slice(&jpeg[2..]);
    let path = dir.path().join("rotated.jpg");
    std::fs::write(&path, &rotated).unwrap();

    let a = load_rgb(&plain).unwrap();
    assert_eq!((a.width, a.height), (64, 32));
    let b = load_rgb(&path).unwrap();
    assert_eq!((b.width, b.height), (32, 64));
    let px = |im: &preprocess::RgbImage, x: usize, y: usize| {
        let i = (y * im.width + x) * 3;
        [im.data[i], im.data[i + 1], im.data[i + 2]]
    };
    assert!(
        px(&b, 16, 8)[0] > 200 && px(&b, 16, 8)[2] < 60,
        "top is red"
    );
    assert!(
        px(&b, 16, 56)[2] > 200 && px(&b, 16, 56)[0] < 60,
        "bottom is blue"
    );
}
