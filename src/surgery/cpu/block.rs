//! Sizes and helpers shared by the CPU kernels. Work is split into rows or 65536-element chunks
//! for the thread pool, and chunks into segments that are widened to f32 in bulk and stay in the
//! core's cache while the arithmetic runs over them.

use crate::surgery::element::Element;
use crate::surgery::transform::Transform;

/// Lanes of the fixed-order f32 reductions: element `i` of a reduction goes to lane `i % LANES`.
pub const LANES: usize = 8;
/// Elements per work item of the multi-tensor ops (the Apex chunk size).
pub const CHUNK: usize = crate::surgery::contract::CHUNK;
/// Elements widened to f32 at a time inside a chunk; a multiple of 64.
pub const SEGMENT: usize = 1024;
/// Below this many elements a call runs on the calling thread: handing work to the pool costs more.
pub const PARALLEL_MIN: usize = 1 << 15;

/// Pairwise sum of the lanes: fixed order, so results are reproducible.
#[inline(always)]
pub fn sum_lanes(acc: &[f32; LANES]) -> f32 {
    let a = [
        acc[0] + acc[4],
        acc[1] + acc[5],
        acc[2] + acc[6],
        acc[3] + acc[7],
    ];
    (a[0] + a[2]) + (a[1] + a[3])
}

/// `out = t(widen(src))`. `raw` is room for the widened values (`t` is applied out of place:
/// in place, "zero where negative" compiles to a slow masked store). f32 identity skips `raw`.
#[inline(always)]
pub fn widen_transformed<T: Element>(src: &[T], t: Transform, raw: &mut [f32], out: &mut [f32]) {
    let n = src.len();
    if t == Transform::Identity {
        T::widen(src, &mut out[..n]);
    } else {
        T::widen(src, &mut raw[..n]);
        t.apply_into(&raw[..n], &mut out[..n]);
    }
}

/// Work items `(tensor, start, len)` covering tensors of the given lengths in chunks of [`CHUNK`].
pub fn chunk_table(lens: &[usize]) -> Vec<(usize, usize, usize)> {
    let mut table = Vec::new();
    for (t, &len) in lens.iter().enumerate() {
        let mut start = 0;
        while start < len {
            let n = CHUNK.min(len - start);
            table.push((t, start, n));
            start += n;
        }
    }
    table
}
