//! Decoding any image file users have into 8-bit RGB, refusing what would be unsafe or
//! meaningless with a reason: empty, truncated or unknown files, and images whose pipeline would
//! need more memory than [`MAX_IMAGE_BYTES`] or that declare more than [`MAX_PIXELS`] — both
//! judged from the header, before any pixel buffer exists.
//!
//! Conversions (the same as PIL's `convert("RGB")`, which the official code uses): grayscale is
//! replicated to three channels, alpha is dropped, 16-bit samples are scaled to 8 bits, palette
//! images are expanded, CMYK JPEGs are converted to RGB, and an animated GIF gives its first frame.
//! JPEGs are decoded by libjpeg-turbo's decoder, as PIL decodes them ([`decode_jpeg`]), to the
//! same bytes; other formats by the `image` crate (lossless formats have one right answer).

use std::io::{Cursor, Read};
use std::path::Path;

use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, Limits, RgbImage};

use super::error::FileError;
use super::jpeg_end::check_complete;
use super::patches::OUT_SIZE;
use super::pil_jpeg::decode_jpeg;

/// The largest image accepted, in pixels (width × height): 100 megapixels.
pub const MAX_PIXELS: u64 = 100_000_000;

/// The most memory one image may take on its way through the pipeline: the file, the decoded
/// buffer, its RGB copy and, for a side shorter than 224 px, the stretch (see
/// [`pipeline_bytes`]). A 100-megapixel 16-bit RGBA image fits; a 1,000,000 × 1 strip does not
/// (stretched to 1,000,000 × 224 it would take 4.0 GiB).
pub const MAX_IMAGE_BYTES: u64 = 2 << 30;

/// How strict decoding is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DecodeOptions {
    /// Decode JPEGs that end before their end-of-image marker (the decoder fills the missing
    /// part), instead of reporting them as broken.
    pub allow_truncated: bool,
}

/// Bytes the pipeline allocates for a `w × h` image decoded at `bytes_per_pixel`: the decoded
/// buffer, the 8-bit RGB copy and — when a side is shorter than 224 px — the stretch, whose
/// bilinear resize first makes a `w × 224` buffer of four f32 channels, then the RGB result.
pub fn pipeline_bytes(w: u64, h: u64, bytes_per_pixel: u64) -> u64 {
    let min = OUT_SIZE as u64;
    let decoded = w * h * bytes_per_pixel + w * h * 3;
    let (sw, sh) = (w.max(min), h.max(min));
    let stretch = match (sw, sh) == (w, h) {
        true => 0,
        false => w * sh * 16 + sw * sh * 3,
    };
    decoded + stretch
}

fn gib(bytes: u64) -> String {
    format!("{:.1} GiB", bytes as f64 / f64::from(1u32 << 30))
}

/// Decode `path` to RGB8.
pub fn load_rgb(path: &Path, options: DecodeOptions) -> Result<RgbImage, FileError> {
    let fail = |reason: String| FileError::new(path, reason);
    let bytes = read_file(path)?;
    let format = image::guess_format(&bytes).map_err(|_| {
        fail("not an image in a supported format (PNG, JPEG, GIF, BMP, WebP, TIFF)".into())
    })?;
    if format == ImageFormat::Jpeg && !options.allow_truncated {
        check_complete(&bytes).map_err(fail)?;
    }
    let mut decoder = ImageReader::with_format(Cursor::new(&bytes[..]), format)
        .into_decoder()
        .map_err(|e| fail(format!("cannot decode: {e}")))?;
    let (w, h) = decoder.dimensions();
    let bytes_per_pixel = u64::from(decoder.color_type().bytes_per_pixel());
    check_size(u64::from(w), u64::from(h), bytes_per_pixel).map_err(fail)?;
    if format == ImageFormat::Jpeg {
        return decode_jpeg(&bytes).map_err(|e| fail(format!("cannot decode: {e}")));
    }
    let mut limits = Limits::default();
    // The decoded buffer plus the decoder's own working memory.
    limits.max_alloc = Some(u64::from(w) * u64::from(h) * bytes_per_pixel + (64 << 20));
    decoder
        .set_limits(limits)
        .map_err(|e| fail(format!("cannot decode: {e}")))?;
    let img =
        DynamicImage::from_decoder(decoder).map_err(|e| fail(format!("cannot decode: {e}")))?;
    Ok(img.into_rgb8())
}

/// The file's bytes, once its first bytes look like an image and its size is within
/// [`MAX_IMAGE_BYTES`].
fn read_file(path: &Path) -> Result<Vec<u8>, FileError> {
    let fail = |reason: String| FileError::new(path, reason);
    let cannot_read = |e: std::io::Error| fail(format!("cannot read: {e}"));
    let meta = std::fs::metadata(path).map_err(cannot_read)?;
    if meta.is_dir() {
        return Err(fail("a directory, not an image file".into()));
    }
    if meta.len() == 0 {
        return Err(fail("empty file (0 bytes)".into()));
    }
    // Judge by content, not by name: a text file called `x.png` is not a broken PNG.
    let mut file = std::fs::File::open(path).map_err(cannot_read)?;
    let mut head = Vec::with_capacity(64);
    (&mut file)
        .take(64)
        .read_to_end(&mut head)
        .map_err(cannot_read)?;
    if image::guess_format(&head).is_err() {
        return Err(fail(
            "not an image in a supported format (PNG, JPEG, GIF, BMP, WebP, TIFF)".into(),
        ));
    }
    if meta.len() > MAX_IMAGE_BYTES {
        return Err(fail(format!(
            "a file of {}, over the limit of {} per image",
            gib(meta.len()),
            gib(MAX_IMAGE_BYTES)
        )));
    }
    let mut bytes = head;
    file.read_to_end(&mut bytes).map_err(cannot_read)?;
    Ok(bytes)
}

/// Refuse, from the header, an image that is empty, declares too many pixels, or whose pipeline
/// would need more than [`MAX_IMAGE_BYTES`].
fn check_size(w: u64, h: u64, bytes_per_pixel: u64) -> Result<(), String> {
    if w == 0 || h == 0 {
        return Err(format!("declares an empty image ({w}×{h})"));
    }
    let pixels = w * h;
    if pixels > MAX_PIXELS {
        return Err(format!(
            "declares {w}×{h} = {pixels} pixels, over the limit of {MAX_PIXELS}; refused without decoding"
        ));
    }
    let need = pipeline_bytes(w, h, bytes_per_pixel);
    if need <= MAX_IMAGE_BYTES {
        return Ok(());
    }
    let min = OUT_SIZE as u64;
    let what = match w < min || h < min {
        true => format!(
            "{w}×{h}: stretching its short side to {min} px ({}×{}) would need {}",
            w.max(min),
            h.max(min),
            gib(need)
        ),
        false => format!("{w}×{h}: decoding it would need {}", gib(need)),
    };
    Err(format!(
        "{what}, over the limit of {} per image; refused without decoding",
        gib(MAX_IMAGE_BYTES)
    ))
}
