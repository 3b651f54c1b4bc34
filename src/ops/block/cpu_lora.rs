//! The adapters on q, k and v on the CPU: `qkvₚ += s · (drop(ln) Aₚᵀ) Bₚᵀ` forward; backward
//! `dBₚ = s · dqkvₚᵀ zₚ`, `dzₚ = s · dqkvₚ Bₚ`, `dAₚ = dzₚᵀ drop(ln)`, and the layer-norm
//! output's share `Σₚ drop'(dzₚ Aₚ)`. The dropout masks are redrawn from their key, never kept.

use std::borrow::Cow;

use rayon::prelude::*;

use super::Dropout;
use super::cpu_gemm::{Dst, Threads, View, matmul, product};
use super::dims::Dims;
use super::philox::MaskStream;

/// The adapters of q, k and v: `a` is `[3, r, C]`, `b` is `[3, C, r]`.
pub struct Lora<'a> {
    pub a: &'a [f32],
    pub b: &'a [f32],
    pub rank: usize,
    pub scale: f32,
    /// The dropout on the adapters' input in a training pass.
    pub dropout: Option<Dropout>,
}

/// Projection `p`'s dropout keep mask over `[N, C]`, in a training pass.
fn mask(d: Dims, lora: &Lora<'_>, p: usize) -> Option<Vec<bool>> {
    let drop = lora.dropout?;
    let stream = MaskStream::new(drop.key, drop.layer, p, drop.p);
    let c = d.channels;
    let mut keep = vec![false; d.tokens() * c];
    keep.par_chunks_mut(c)
        .enumerate()
        .for_each(|(row, keep)| stream.fill((row * c) as u64, keep));
    Some(keep)
}

/// `v` (`[N, C]`) where kept, scaled by `1 / (1 − p)`, 0 where dropped: the adapter input from
/// the layer-norm output, and the dropout's backward applied to a gradient.
fn dropped<'v>(v: &'v [f32], mask: Option<&[bool]>, lora: &Lora<'_>) -> Cow<'v, [f32]> {
    let (Some(mask), Some(drop)) = (mask, lora.dropout) else {
        return Cow::Borrowed(v);
    };
    let kept_scale = 1.0 / (1.0 - drop.p);
    let out = v
        .par_iter()
        .zip(mask.par_iter())
        .map(|(v, k)| if *k { v * kept_scale } else { 0.0 })
        .collect();
    Cow::Owned(out)
}

/// Adds the adapters' updates into `qkv` (`[N, 3C]`); returns the down-projections `z`
/// (`[3, N, r]`), which the backward needs.
pub fn forward(d: Dims, ln: &[f32], lora: &Lora<'_>, qkv: &mut [f32]) -> Vec<f32> {
    let (n, c, r) = (d.tokens(), d.channels, lora.rank);
    let mut z = vec![0.0; 3 * n * r];
    for (p, z) in z.chunks_mut(n * r).enumerate() {
        let input = dropped(ln, mask(d, lora, p).as_deref(), lora);
        let a = View::block(lora.a, r, c, p * r * c, c);
        matmul(
            Dst::rows(z, n, r),
            View::rows(&input, n, c),
            a.t(),
            1.0,
            false,
            Threads::Pool,
        );
        let b = View::block(lora.b, c, r, p * c * r, r);
        let dst = Dst::block(qkv, n, c, p * c, 3 * c);
        matmul(
            dst,
            View::rows(z, n, r),
            b.t(),
            lora.scale,
            true,
            Threads::Pool,
        );
    }
    z
}

/// The adapters' gradients `([3, r, C], [3, C, r])`; when `dln` is given, their share of the
/// layer-norm output's gradient is written into it (overwriting it).
pub fn backward(
    d: Dims,
    ln: &[f32],
    lora: &Lora<'_>,
    z: &[f32],
    dqkv: &[f32],
    mut dln: Option<&mut [f32]>,
) -> (Vec<f32>, Vec<f32>) {
    let (n, c, r) = (d.tokens(), d.channels, lora.rank);
    let mut da = vec![0.0; 3 * r * c];
    let mut db = vec![0.0; 3 * c * r];
    for p in 0..3 {
        let g = View::block(dqkv, n, c, p * c, 3 * c);
        let zp = View::block(z, n, r, p * n * r, r);
        matmul(
            Dst::block(&mut db, c, r, p * c * r, r),
            g.t(),
            zp,
            lora.scale,
            false,
            Threads::Pool,
        );
        let bp = View::block(lora.b, c, r, p * c * r, r);
        let dz = product(g, bp, lora.scale, Threads::Pool);
        let keep = mask(d, lora, p);
        let input = dropped(ln, keep.as_deref(), lora);
        let dst = Dst::block(&mut da, r, c, p * r * c, c);
        matmul(
            dst,
            View::rows(&dz, n, r).t(),
            View::rows(&input, n, c),
            1.0,
            false,
            Threads::Pool,
        );
        if let Some(dln) = dln.as_deref_mut() {
            let ap = View::block(lora.a, r, c, p * r * c, c);
            let dinput = product(View::rows(&dz, n, r), ap, 1.0, Threads::Pool);
            let dinput = dropped(&dinput, keep.as_deref(), lora);
            for (o, di) in dln.iter_mut().zip(dinput.iter()) {
                *o = if p == 0 { *di } else { *o + di };
            }
        }
    }
    (da, db)
}
