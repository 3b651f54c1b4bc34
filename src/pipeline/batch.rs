use candle_core::{DType, Device, Tensor};

use super::error::{Context, PipelineError};
use crate::clip::ClipTokenizer;
use crate::data::{Captions, FileError, Item, LoadedBatch, OUT_SIZE};
use crate::train::OwnedBatch;

/// A loaded batch as model inputs: pixels in `dtype` on `device`, labels, and — when `captions`
/// and `tokenizer` are given — caption ids (an image with no caption is moved to `failed`).
pub fn to_tensors(
    mut batch: LoadedBatch,
    items: &[Item],
    text: Option<(&Captions, &ClipTokenizer)>,
    dtype: DType,
    device: &Device,
) -> Result<(Option<OwnedBatch>, LoadedBatch), PipelineError> {
    let mut captions = Vec::new();
    if let Some((map, _)) = text {
        let mut keep = vec![true; batch.len()];
        for (k, &i) in batch.indices.iter().enumerate() {
            match map.get(&items[i].path) {
                Ok(c) => captions.push(c.to_string()),
                Err(reason) => {
                    keep[k] = false;
                    batch.failed.push(FileError::new(&items[i].path, reason));
                }
            }
        }
        if keep.iter().any(|k| !k) {
            let plane = 3 * OUT_SIZE * OUT_SIZE;
            let mut filtered = LoadedBatch {
                failed: std::mem::take(&mut batch.failed),
                ..LoadedBatch::default()
            };
            for (k, &kept) in keep.iter().enumerate() {
                if kept {
                    filtered
                        .pixels
                        .extend_from_slice(&batch.pixels[k * plane..(k + 1) * plane]);
                    filtered.labels.push(batch.labels[k]);
                    filtered.indices.push(batch.indices[k]);
                }
            }
            batch = filtered;
        }
    }
    let n = batch.len();
    if n == 0 {
        return Ok((None, batch));
    }
    let ctx = || "building a batch".to_string();
    let pixels = Tensor::from_slice(&batch.pixels, (n, 3, OUT_SIZE, OUT_SIZE), device)
        .and_then(|t| t.to_dtype(dtype))
        .context(ctx)?;
    let labels: Vec<f32> = batch.labels.iter().map(|&l| f32::from(l)).collect();
    let labels = Tensor::from_vec(labels, n, device).context(ctx)?;
    let captions = match text {
        Some((_, tok)) => {
            let refs: Vec<&str> = captions.iter().map(String::as_str).collect();
            tok.encode_batch(&refs, device).context(ctx)?
        }
        None => Tensor::zeros((n, 1), DType::U32, device).context(ctx)?,
    };
    Ok((
        Some(OwnedBatch {
            pixels,
            captions,
            labels,
        }),
        batch,
    ))
}
