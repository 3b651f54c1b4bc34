//! Attention on the CPU, per (image, head) on the rayon pool: scores `S = s·Q Kᵀ` and the
//! softmax in one scratch tile, `O = P V`; the backward recomputes `P = exp(S − lse)` from the
//! saved row log-sum-exp and returns the q/k/v gradients in the fused `[N, 3C]` layout.

use rayon::prelude::*;

use super::BlockConfig;
use super::cpu_gemm::{Threads, View, product};
use super::cpu_rows as rows;
use super::dims::Dims;
use super::outputs::Outputs;

/// One head's `rows × d` slice of q (`part` 0), k (1) or v (2) in the fused `[N, 3C]` rows,
/// starting at position `from` of image `image`.
fn head<'a>(
    d: Dims,
    qkv: &'a [f32],
    at: (usize, usize),
    part: usize,
    rows: (usize, usize),
) -> View<'a> {
    let (c, hd) = (d.channels, d.head_dim());
    let ((image, h), (from, count)) = (at, rows);
    let offset = (image * d.seq + from) * 3 * c + part * c + h * hd;
    View::block(qkv, count, hd, offset, 3 * c)
}

/// Head `at.1` of image `at.0`: its queries at the output rows, its keys and values at every row.
fn head_views<'a>(
    d: Dims,
    qkv: &'a [f32],
    at: (usize, usize),
    outputs: Outputs<'_>,
) -> [View<'a>; 3] {
    let q_rows = outputs.per_image(d.seq);
    [
        head(d, qkv, at, 0, (outputs.first(at.0), q_rows)),
        head(d, qkv, at, 1, (0, d.seq)),
        head(d, qkv, at, 2, (0, d.seq)),
    ]
}

/// The query positions of image `image`'s output rows.
fn positions(outputs: Outputs<'_>, d: Dims, image: usize) -> Vec<usize> {
    let first = outputs.first(image);
    (first..first + outputs.per_image(d.seq)).collect()
}

fn scale(d: Dims) -> f32 {
    (d.head_dim() as f32).powf(-0.5)
}

/// The attention output at the output rows (`[R, C]`, heads merged) and the log-sum-exp of
/// each (image, head, output row).
pub fn forward(
    cfg: &BlockConfig,
    d: Dims,
    qkv: &[f32],
    outputs: Outputs<'_>,
) -> (Vec<f32>, Vec<f32>) {
    let (t, hd, q_rows) = (d.seq, d.head_dim(), outputs.per_image(d.seq));
    let per_head: Vec<(Vec<f32>, Vec<f32>)> = (0..d.batch * d.heads)
        .into_par_iter()
        .map(|job| {
            let at = (job / d.heads, job % d.heads);
            let [q, k, v] = head_views(d, qkv, at, outputs);
            let mut s = product(q, k.t(), scale(d), Threads::Caller);
            let mut lse = vec![0.0; q_rows];
            rows::softmax_rows(
                &mut s,
                t,
                cfg.causal.then(|| positions(outputs, d, at.0)).as_deref(),
                &mut lse,
            );
            let o = product(View::rows(&s, q_rows, t), v, 1.0, Threads::Caller);
            (o, lse)
        })
        .collect();
    let c = d.channels;
    let mut out = rows::zeros(d.batch * q_rows * c);
    // Heads merged image by image on the pool.
    out.par_chunks_mut(q_rows * c)
        .zip(per_head.par_chunks(d.heads))
        .for_each(|(image_out, heads)| {
            for (h, (o, _)) in heads.iter().enumerate() {
                scatter(o, hd, image_out, c, h * hd);
            }
        });
    let lse = per_head.into_iter().flat_map(|(_, l)| l).collect();
    (out, lse)
}

/// Copy a `[rows, width]` block into rows `row_len` apart starting at `offset`.
fn scatter(block: &[f32], width: usize, dst: &mut [f32], row_len: usize, offset: usize) {
    for (r, src) in block.chunks(width).enumerate() {
        let at = offset + r * row_len;
        dst[at..at + width].copy_from_slice(src);
    }
}

/// The q/k/v gradient `[N, 3C]` from the gradient at the attention output's rows (`[R, C]`).
pub fn backward(
    cfg: &BlockConfig,
    d: Dims,
    qkv: &[f32],
    lse: &[f32],
    d_o: &[f32],
    outputs: Outputs<'_>,
) -> Vec<f32> {
    let (t, c, hd, q_rows) = (d.seq, d.channels, d.head_dim(), outputs.per_image(d.seq));
    let per_head: Vec<[Vec<f32>; 3]> = (0..d.batch * d.heads)
        .into_par_iter()
        .map(|job| {
            let at = (job / d.heads, job % d.heads);
            let [q, k, v] = head_views(d, qkv, at, outputs);
            let g = View::block(d_o, q_rows, hd, at.0 * q_rows * c + at.1 * hd, c);
            let mut p = product(q, k.t(), scale(d), Threads::Caller);
            let causal = cfg.causal.then(|| positions(outputs, d, at.0));
            rows::probabilities_again(
                &mut p,
                t,
                causal.as_deref(),
                &lse[job * q_rows..(job + 1) * q_rows],
            );
            let p_view = View::rows(&p, q_rows, t);
            let dv = product(p_view.t(), g, 1.0, Threads::Caller);
            let mut ds = product(g, v.t(), 1.0, Threads::Caller);
            rows::softmax_backward_rows(&p, &mut ds, t);
            let ds_view = View::rows(&ds, q_rows, t);
            let dq = product(ds_view, k, scale(d), Threads::Caller);
            let dk = product(ds_view.t(), q, scale(d), Threads::Caller);
            [dq, dk, dv]
        })
        .collect();
    let mut dqkv = rows::zeros(d.tokens() * 3 * c);
    // Heads merged image by image on the pool.
    dqkv.par_chunks_mut(t * 3 * c)
        .zip(per_head.par_chunks(d.heads))
        .enumerate()
        .for_each(|(image, (image_grad, heads))| {
            for (h, [dq, dk, dv]) in heads.iter().enumerate() {
                let at = |row: usize, part: usize| row * 3 * c + part * c + h * hd;
                scatter(dq, hd, image_grad, 3 * c, at(outputs.first(image), 0));
                scatter(dk, hd, image_grad, 3 * c, at(0, 1));
                scatter(dv, hd, image_grad, 3 * c, at(0, 2));
            }
        });
    dqkv
}
