//! Pasting an image from the clipboard: the clipboard behind a small trait (so tests can feed
//! one), and saving a pasted image as a PNG the composer can attach.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// An RGBA8 image (not premultiplied), row by row.
#[derive(Clone, Debug, PartialEq)]
pub struct PastedImage {
    pub width: usize,
    pub height: usize,
    pub rgba: Vec<u8>,
}

impl PastedImage {
    pub fn from_color_image(image: &egui::ColorImage) -> Self {
        let rgba = image
            .pixels
            .iter()
            .flat_map(|c| c.to_srgba_unmultiplied())
            .collect();
        Self {
            width: image.size[0],
            height: image.size[1],
            rgba,
        }
    }
}

/// What the clipboard holds, as far as pasting is concerned.
#[derive(Clone, Debug, PartialEq)]
pub enum Clipboard {
    Image(PastedImage),
    /// Text only: the text box pastes it, nothing to attach.
    Text,
    Empty,
}

/// Reads the clipboard. Errors are plain sentences for a notice.
pub trait ClipboardSource {
    fn read(&mut self) -> Result<Clipboard, String>;
}

/// The system clipboard (X11, Wayland, macOS, Windows) through `arboard`.
pub struct SystemClipboard;

impl ClipboardSource for SystemClipboard {
    fn read(&mut self) -> Result<Clipboard, String> {
        // Opened per paste: it is cheap, and a display that appears later still works.
        let mut cb = arboard::Clipboard::new()
            .map_err(|e| format!("The clipboard is not available: {e}"))?;
        match cb.get_image() {
            Ok(img) => Ok(Clipboard::Image(PastedImage {
                width: img.width,
                height: img.height,
                rgba: img.bytes.into_owned(),
            })),
            Err(arboard::Error::ContentNotAvailable | arboard::Error::ConversionFailure) => {
                match cb.get_text() {
                    Ok(t) if !t.is_empty() => Ok(Clipboard::Text),
                    _ => Ok(Clipboard::Empty),
                }
            }
            Err(e) => Err(format!("Cannot read the clipboard: {e}")),
        }
    }
}

/// Writes `image` as `pasted-<time>-<n>.png` in `dir` (atomically) and returns its path.
pub fn save_png(dir: &Path, image: &PastedImage) -> Result<PathBuf, String> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let (w, h) = (
        u32::try_from(image.width).map_err(|_| "the pasted image is too large")?,
        u32::try_from(image.height).map_err(|_| "the pasted image is too large")?,
    );
    if w == 0 || h == 0 {
        return Err("The pasted image is empty.".to_owned());
    }
    let buf = image::RgbaImage::from_raw(w, h, image.rgba.clone())
        .ok_or("The pasted image is malformed (its size does not match its pixels).")?;
    let mut png = std::io::Cursor::new(Vec::new());
    buf.write_to(&mut png, image::ImageFormat::Png)
        .map_err(|e| format!("Cannot encode the pasted image: {e}"))?;
    std::fs::create_dir_all(dir).map_err(|e| format!("Cannot create {}: {e}", dir.display()))?;
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    let path = loop {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let p = dir.join(format!("pasted-{stamp}-{n}.png"));
        if !p.exists() {
            break p;
        }
    };
    super::store::write_atomic(&path, png.get_ref()).map_err(|e| format!("{e:#}"))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saves_a_readable_png_with_unique_names() {
        let img = PastedImage {
            width: 2,
            height: 1,
            rgba: vec![255, 0, 0, 255, 0, 0, 255, 128],
        };
        let dir = tempfile::tempdir().unwrap();
        let a = save_png(dir.path(), &img).unwrap();
        let b = save_png(dir.path(), &img).unwrap();
        assert_ne!(a, b);
        let back = image::open(&a).unwrap().to_rgba8();
        assert_eq!(back.dimensions(), (2, 1));
        assert_eq!(back.into_raw(), img.rgba);
        // Only the two PNGs: no temp files left.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
    }

    #[test]
    fn malformed_images_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let short = PastedImage {
            width: 4,
            height: 4,
            rgba: vec![0; 10],
        };
        assert!(save_png(dir.path(), &short).is_err());
        let empty = PastedImage {
            width: 0,
            height: 0,
            rgba: vec![],
        };
        assert!(save_png(dir.path(), &empty).is_err());
    }

    #[test]
    fn the_system_clipboard_never_panics() {
        // Without a display (CI) this is an error in words; with one, whatever it holds.
        if let Err(e) = SystemClipboard.read() {
            assert!(e.contains("clipboard"), "{e}");
        }
    }

    /// Round trip through a real X11 clipboard: `Xvfb :99 &` then
    /// `DISPLAY=:99 cargo test --release -p cellm-app --lib clipboard_round_trip -- --ignored`
    #[test]
    #[ignore]
    fn clipboard_round_trip_on_a_real_display() {
        let rgba: Vec<u8> = (0..4 * 3 * 2).map(|i| (i * 10) as u8 | 1).collect();
        let mut owner = arboard::Clipboard::new().unwrap();
        owner
            .set_image(arboard::ImageData {
                width: 3,
                height: 2,
                bytes: rgba.clone().into(),
            })
            .unwrap();
        let got = SystemClipboard.read().unwrap();
        let Clipboard::Image(img) = got else {
            panic!("expected an image, got {got:?}");
        };
        assert_eq!((img.width, img.height), (3, 2));
        assert_eq!(img.rgba, rgba);
        owner.set_text("just text").unwrap();
        assert_eq!(SystemClipboard.read().unwrap(), Clipboard::Text);
    }

    #[test]
    fn premultiplied_egui_pixels_come_back_unmultiplied() {
        let c = egui::ColorImage::from_rgba_unmultiplied([1, 1], &[200, 100, 50, 255]);
        assert_eq!(
            PastedImage::from_color_image(&c).rgba,
            vec![200, 100, 50, 255]
        );
    }
}
