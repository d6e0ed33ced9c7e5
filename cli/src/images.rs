//! Reading and writing the images `restore` works on: PNG or JPEG, 8- or 16-bit, gray or RGB,
//! with or without alpha (passed through untouched).

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use image::{DynamicImage, ImageBuffer, Luma, LumaA, Rgb, Rgba};

use crate::error::Result;

/// An image split into the channels the network restores and the alpha it does not.
pub struct Picture {
    /// Colour channels in `[0, 1]`, `(1, C, H, W)` row-major (C = 1 or 3).
    pub pixels: Vec<f32>,
    /// 1 (gray) or 3 (RGB).
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    /// The alpha plane, in the image's own bit depth, when there is one.
    pub alpha: Option<Vec<u16>>,
    /// Whether the source had 16 bits per channel (the output keeps the depth).
    pub sixteen_bit: bool,
}

/// An image file found among the inputs.
#[derive(Clone, Debug)]
pub struct Input {
    /// Its path.
    pub path: PathBuf,
    /// Its path relative to the input it was found under, `/`-separated (its file name when
    /// it was given itself): what names its output and keys its noise.
    pub key: String,
    /// The name of the folder it was found under, when it was found in one.
    pub folder: Option<String>,
}

/// The image files `restore` takes: each file given, and the PNG/JPEG files of each folder
/// given (recursively with `recursive`), sorted by path within each folder.
pub fn collect_inputs(inputs: &[PathBuf], recursive: bool) -> Result<Vec<Input>> {
    let mut files = Vec::new();
    for input in inputs {
        let meta = std::fs::metadata(input).map_err(|e| format!("{}: {e}", input.display()))?;
        if meta.is_dir() {
            let folder = input
                .canonicalize()
                .ok()
                .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()));
            let mut found = Vec::new();
            walk(input, recursive, &mut found)?;
            found.sort();
            files.extend(found.into_iter().map(|path| Input {
                key: relative_key(input, &path),
                path,
                folder: folder.clone(),
            }));
        } else {
            let key = input
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .ok_or_else(|| format!("{}: no file name", input.display()))?;
            files.push(Input {
                path: input.clone(),
                key,
                folder: None,
            });
        }
    }
    if files.is_empty() {
        return Err("no PNG or JPEG files among the inputs".into());
    }
    Ok(files)
}

/// The image files (paths only) of `inputs`: see [`collect_inputs`].
pub fn collect_files(inputs: &[PathBuf]) -> Result<Vec<PathBuf>> {
    Ok(collect_inputs(inputs, false)?
        .into_iter()
        .map(|i| i.path)
        .collect())
}

/// Adds the image files under `dir` to `found` (its subfolders too with `recursive`).
fn walk(dir: &Path, recursive: bool, found: &mut Vec<PathBuf>) -> Result<()> {
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for entry in entries.filter_map(|e| e.ok()) {
        let path = entry.path();
        if path.is_dir() && recursive {
            walk(&path, recursive, found)?;
        } else if path.is_file() && is_image(&path) {
            found.push(path);
        }
    }
    Ok(())
}

/// `path` relative to `root`, with `/` between components.
fn relative_key(root: &Path, path: &Path) -> String {
    let rel = path.strip_prefix(root).unwrap_or(path);
    rel.components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join("/")
}

fn is_image(p: &Path) -> bool {
    matches!(
        p.extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase)
            .as_deref(),
        Some("png" | "jpg" | "jpeg")
    )
}

/// The stable 64-bit FNV-1a hash of `bytes` (the same on every platform and Rust version).
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The noise seed of an image: `--seed` and the image's key (its path relative to the input
/// it was found under, `/`-separated).
pub fn image_seed(seed: u64, key: &str) -> u64 {
    fnv1a(key.as_bytes()) ^ seed.wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

/// Reads `path`.
pub fn read(path: &Path) -> Result<Picture> {
    let img =
        image::open(path).map_err(|e| format!("{}: cannot read the image: {e}", path.display()))?;
    picture(img, &path.display().to_string())
}

/// Decodes an image file's bytes; `label` names it in errors.
pub fn decode(bytes: &[u8], label: &str) -> Result<Picture> {
    let img = image::load_from_memory(bytes)
        .map_err(|e| format!("{label}: cannot read the image: {e}"))?;
    picture(img, label)
}

/// Splits a decoded image into colour planes and alpha.
fn picture(img: DynamicImage, label: &str) -> Result<Picture> {
    let (width, height) = (img.width() as usize, img.height() as usize);
    if width == 0 || height == 0 {
        return Err(format!("{label}: the image is empty ({width}×{height})").into());
    }
    let sixteen_bit = matches!(
        img,
        DynamicImage::ImageLuma16(_)
            | DynamicImage::ImageLumaA16(_)
            | DynamicImage::ImageRgb16(_)
            | DynamicImage::ImageRgba16(_)
    );
    let gray = matches!(
        img,
        DynamicImage::ImageLuma8(_)
            | DynamicImage::ImageLumaA8(_)
            | DynamicImage::ImageLuma16(_)
            | DynamicImage::ImageLumaA16(_)
    );
    let has_alpha = img.color().has_alpha();
    let channels = if gray { 1 } else { 3 };
    let n = height * width;
    let mut pixels = vec![0f32; channels * n];
    let mut alpha = has_alpha.then(|| vec![0u16; n]);
    // Everything through 16-bit buffers: exact for 8-bit sources (v·257/65535 = v/255).
    let rgba = img.to_rgba16();
    let luma = gray.then(|| img.to_luma_alpha16());
    for (k, p) in rgba.pixels().enumerate() {
        match &luma {
            Some(l) => pixels[k] = l.as_raw()[2 * k] as f32 / 65535.0,
            None => {
                for c in 0..3 {
                    pixels[c * n + k] = p.0[c] as f32 / 65535.0;
                }
            }
        }
        if let Some(a) = alpha.as_mut() {
            a[k] = if sixteen_bit { p.0[3] } else { p.0[3] / 257 };
        }
    }
    Ok(Picture {
        pixels,
        channels,
        height,
        width,
        alpha,
        sixteen_bit,
    })
}

impl Picture {
    /// The colour channels as a `(1, C, H, W)` tensor on `device`.
    pub fn tensor(&self, device: &Device, dtype: DType) -> Result<Tensor> {
        let t = Tensor::from_vec(
            self.pixels.clone(),
            (1, self.channels, self.height, self.width),
            &Device::Cpu,
        )?;
        Ok(t.to_dtype(dtype)?.to_device(device)?)
    }

    /// Writes `restored` (`(1, C, H, W)`, clamped to `[0, 1]`) with this picture's alpha and
    /// bit depth as a PNG at `path`.
    pub fn write_png(&self, restored: &Tensor, path: &Path) -> Result<()> {
        let bytes = self.encode_png(restored)?;
        crate::files::write_atomically(path, |tmp| {
            std::fs::write(tmp, &bytes).map_err(|e| format!("{}: {e}", path.display()).into())
        })
    }

    /// `restored` (`(1, C, H, W)`, clamped to `[0, 1]`) with this picture's alpha and bit
    /// depth, as the bytes of a PNG file ([`write_png`](Self::write_png) writes them).
    pub fn encode_png(&self, restored: &Tensor) -> Result<Vec<u8>> {
        let v: Vec<f32> = restored
            .to_dtype(DType::F32)?
            .to_device(&Device::Cpu)?
            .flatten_all()?
            .to_vec1()?;
        let (w, h, n) = (
            self.width as u32,
            self.height as u32,
            self.height * self.width,
        );
        let q16 = |x: f32| (x.clamp(0.0, 1.0) * 65535.0).round() as u16;
        let q8 = |x: f32| (x.clamp(0.0, 1.0) * 255.0).round() as u8;
        let img = match (self.channels, &self.alpha, self.sixteen_bit) {
            (1, None, false) => DynamicImage::ImageLuma8(ImageBuffer::from_fn(w, h, |x, y| {
                Luma([q8(v[(y * w + x) as usize])])
            })),
            (1, None, true) => DynamicImage::ImageLuma16(ImageBuffer::from_fn(w, h, |x, y| {
                Luma([q16(v[(y * w + x) as usize])])
            })),
            (1, Some(a), false) => DynamicImage::ImageLumaA8(ImageBuffer::from_fn(w, h, |x, y| {
                let k = (y * w + x) as usize;
                LumaA([q8(v[k]), a[k] as u8])
            })),
            (1, Some(a), true) => DynamicImage::ImageLumaA16(ImageBuffer::from_fn(w, h, |x, y| {
                let k = (y * w + x) as usize;
                LumaA([q16(v[k]), a[k]])
            })),
            (_, None, false) => DynamicImage::ImageRgb8(ImageBuffer::from_fn(w, h, |x, y| {
                let k = (y * w + x) as usize;
                Rgb([q8(v[k]), q8(v[n + k]), q8(v[2 * n + k])])
            })),
            (_, None, true) => DynamicImage::ImageRgb16(ImageBuffer::from_fn(w, h, |x, y| {
                let k = (y * w + x) as usize;
                Rgb([q16(v[k]), q16(v[n + k]), q16(v[2 * n + k])])
            })),
            (_, Some(a), false) => DynamicImage::ImageRgba8(ImageBuffer::from_fn(w, h, |x, y| {
                let k = (y * w + x) as usize;
                Rgba([q8(v[k]), q8(v[n + k]), q8(v[2 * n + k]), a[k] as u8])
            })),
            (_, Some(a), true) => DynamicImage::ImageRgba16(ImageBuffer::from_fn(w, h, |x, y| {
                let k = (y * w + x) as usize;
                Rgba([q16(v[k]), q16(v[n + k]), q16(v[2 * n + k]), a[k]])
            })),
        };
        let mut bytes = Vec::new();
        img.write_to(
            &mut std::io::Cursor::new(&mut bytes),
            image::ImageFormat::Png,
        )
        .map_err(|e| format!("cannot encode the PNG: {e}"))?;
        Ok(bytes)
    }
}
