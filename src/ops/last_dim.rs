//! A contiguous input seen as rows over its last dimension, as the row-wise ops (softmax, layer
//! norm) launch over it.

use candle_core::{Layout, Result};

pub(crate) struct LastDim {
    /// The input's element range in its storage.
    pub start: usize,
    pub end: usize,
    /// The launch's grid (read by the CUDA forwards only).
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    pub rows: usize,
    /// The last dimension (at least 1, so that chunking by it is defined).
    pub cols: usize,
}

/// The rows of `layout` over its last dimension; `op` names the op in errors. Refuses
/// non-contiguous inputs and sizes one launch (a block per row) cannot cover.
pub(crate) fn last_dim(layout: &Layout, op: &str) -> Result<LastDim> {
    let Some((start, end)) = layout.contiguous_offsets() else {
        candle_core::bail!("{op}: the input must be contiguous")
    };
    let cols = layout.dims().last().copied().unwrap_or(1).max(1);
    let rows = layout.shape().elem_count() / cols;
    if rows > u32::MAX as usize || cols > i32::MAX as usize {
        candle_core::bail!("{op}: {rows} rows of {cols} exceed one launch")
    }
    Ok(LastDim {
        start,
        end,
        rows,
        cols,
    })
}
