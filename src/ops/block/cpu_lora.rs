//! The adapters on q, k and v on the CPU: `qkvₚ += s · (drop(ln) Aₚᵀ) Bₚᵀ` forward; backward
//! `dBₚ = s · dqkvₚᵀ zₚ`, `dzₚ = s · dqkvₚ Bₚ`, `dAₚ = dzₚᵀ drop(ln)`, and the layer-norm
//! output's share `Σₚ drop'(dzₚ Aₚ)`. The dropout masks are redrawn from their key, never kept.

use std::borrow::Cow;

use rayon::prelude::*;

use super::Dropout;
use super::cpu_gemm::{Dst, Threads, View, matmul, product};
use super::cpu_rows::zeros;
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

/// Projection `p`'s dropout stream and the scale of what it keeps, `1 / (1 − p)`, in a training
/// pass.
fn mask_stream(lora: &Lora<'_>, p: usize) -> Option<(MaskStream, f32)> {
    let drop = lora.dropout?;
    let stream = MaskStream::new(drop.key, drop.layer, p, drop.p);
    Some((stream, 1.0 / (1.0 - drop.p)))
}

/// `v` (`[N, C]`) where projection `p`'s dropout keeps it, scaled by `1 / (1 − p)`, 0 where it
/// drops it: the adapter input from the layer-norm output, and the dropout's backward applied
/// to a gradient. The decisions are drawn again on each call (a pure function of the key),
/// rows in parallel.
fn dropped<'v>(d: Dims, lora: &Lora<'_>, p: usize, v: &'v [f32]) -> Cow<'v, [f32]> {
    let Some((stream, kept_scale)) = mask_stream(lora, p) else {
        return Cow::Borrowed(v);
    };
    let (c, rows) = (d.channels, ROWS_PER_TASK);
    let mut out = zeros(v.len());
    out.par_chunks_mut(rows * c)
        .zip(v.par_chunks(rows * c))
        .enumerate()
        .for_each(|(task, (out, v))| stream.apply((task * rows * c) as u64, v, kept_scale, out));
    Cow::Owned(out)
}

/// Projection `p`'s share of the layer-norm output's gradient, `drop'(dz Aₚ)`, written into
/// `dln` (`[N, C]`) for `p = 0` and added for the others: row by row in parallel, each row's
/// `dz Aₚ` (`r` scaled rows of `Aₚ`) and its dropout formed in two row buffers.
fn input_share(d: Dims, lora: &Lora<'_>, p: usize, dz: &[f32], dln: &mut [f32]) {
    let (c, r) = (d.channels, lora.rank);
    let a = &lora.a[p * r * c..(p + 1) * r * c];
    let stream = mask_stream(lora, p);
    let rows = ROWS_PER_TASK;
    dln.par_chunks_mut(rows * c)
        .zip(dz.par_chunks(rows * r))
        .enumerate()
        .for_each(|(task, (dln, dz))| {
            let (mut share, mut kept) = (vec![0.0f32; c], vec![0.0f32; c]);
            for (row, (dln, dz)) in dln.chunks_mut(c).zip(dz.chunks(r)).enumerate() {
                share.fill(0.0);
                for (coef, a_row) in dz.iter().zip(a.chunks(c)) {
                    share
                        .iter_mut()
                        .zip(a_row)
                        .for_each(|(s, a)| *s += coef * a);
                }
                let share = match stream {
                    None => &share,
                    Some((stream, kept_scale)) => {
                        let start = ((task * rows + row) * c) as u64;
                        stream.apply(start, &share, kept_scale, &mut kept);
                        &kept
                    }
                };
                match p {
                    0 => dln.copy_from_slice(share),
                    _ => dln.iter_mut().zip(share).for_each(|(o, s)| *o += s),
                }
            }
        });
}

/// Rows per parallel task of [`dropped`] and [`input_share`].
const ROWS_PER_TASK: usize = 8;

/// Adds the adapters' updates into `qkv` (`[N, 3C]`); returns the down-projections `z`
/// (`[3, N, r]`), which the backward needs.
pub fn forward(d: Dims, ln: &[f32], lora: &Lora<'_>, qkv: &mut [f32]) -> Vec<f32> {
    let (n, c, r) = (d.tokens(), d.channels, lora.rank);
    let mut z = vec![0.0; 3 * n * r];
    for (p, z) in z.chunks_mut(n * r).enumerate() {
        let input = dropped(d, lora, p, ln);
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
        let input = dropped(d, lora, p, ln);
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
            input_share(d, lora, p, &dz, dln);
        }
    }
    (da, db)
}
