//! Decoding any image file users have into 8-bit RGB, refusing what would be unsafe or
//! meaningless with a reason: empty, truncated or unknown files, and decompression bombs (files
//! declaring more than [`MAX_PIXELS`], refused from the header before any pixel buffer exists).
//!
//! Conversions (the same as PIL's `convert("RGB")`, which the official code uses): grayscale is
//! replicated to three channels, alpha is dropped, 16-bit samples are scaled to 8 bits, palette
//! images are expanded, CMYK JPEGs are converted to RGB, and an animated GIF gives its first frame.

use std::path::Path;

use image::{DynamicImage, ImageDecoder, ImageReader, Limits, RgbImage};

use super::error::FileError;

/// The largest image accepted, in pixels (width × height): 100 megapixels.
pub const MAX_PIXELS: u64 = 100_000_000;

/// Decode `path` to RGB8.
pub fn load_rgb(path: &Path) -> Result<RgbImage, FileError> {
    let fail = |reason: String| FileError::new(path, reason);
    let meta = std::fs::metadata(path).map_err(|e| fail(format!("cannot read: {e}")))?;
    if meta.is_dir() {
        return Err(fail("a directory, not an image file".into()));
    }
    if meta.len() == 0 {
        return Err(fail("empty file (0 bytes)".into()));
    }
    // Judge by content, not by name: a text file called `x.png` is not a broken PNG.
    let mut head = [0u8; 64];
    let n = std::fs::File::open(path)
        .and_then(|mut f| std::io::Read::read(&mut f, &mut head))
        .map_err(|e| fail(format!("cannot read: {e}")))?;
    if image::guess_format(&head[..n]).is_err() {
        return Err(fail(
            "not an image in a supported format (PNG, JPEG, GIF, BMP, WebP, TIFF)".into(),
        ));
    }
    let reader = ImageReader::open(path)
        .map_err(|e| fail(format!("cannot open: {e}")))?
        .with_guessed_format()
        .map_err(|e| fail(format!("cannot read: {e}")))?;
    let mut decoder = reader
        .into_decoder()
        .map_err(|e| fail(format!("cannot decode: {e}")))?;
    let (w, h) = decoder.dimensions();
    if w == 0 || h == 0 {
        return Err(fail(format!("declares an empty image ({w}×{h})")));
    }
    let pixels = u64::from(w) * u64::from(h);
    if pixels > MAX_PIXELS {
        return Err(fail(format!(
            "declares {w}×{h} = {pixels} pixels, over the limit of {MAX_PIXELS}; refused without decoding"
        )));
    }
    let mut limits = Limits::default();
    // The decoded buffer (at most 16-bit RGBA) plus the decoder's own working memory.
    limits.max_alloc = Some(MAX_PIXELS * 8 + (64 << 20));
    decoder
        .set_limits(limits)
        .map_err(|e| fail(format!("cannot decode: {e}")))?;
    let img =
        DynamicImage::from_decoder(decoder).map_err(|e| fail(format!("cannot decode: {e}")))?;
    Ok(img.to_rgb8())
}
