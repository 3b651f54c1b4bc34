//! The layer's row-wise pieces on the CPU, in f32, parallel over rows: layer norm forward (with
//! its row statistics saved) and backward (added into the residual's gradient), the MLP
//! activations and their derivatives, and the attention softmax that also gives each row's
//! log-sum-exp, from which the backward recomputes the probabilities.

use rayon::prelude::*;

use super::activation::{self, Activation};
use super::fast_exp::exp;

/// Rows at least this many elements long go to the pool one by one; shorter ones in groups.
const MIN_PARALLEL_ELEMENTS: usize = 4096;

fn rows_per_task(cols: usize) -> usize {
    (MIN_PARALLEL_ELEMENTS / cols.max(1)).max(1)
}

/// `len` zeros, written on the pool. `vec![0.0; len]` zeroes reused heap memory on the calling
/// thread alone (the allocator's calloc), a serial pass that leaves the other cores idle
/// between two products.
pub fn zeros(len: usize) -> Vec<f32> {
    let mut v = Vec::new();
    rayon::iter::repeat_n(0.0f32, len)
        .with_min_len(MIN_PARALLEL_ELEMENTS)
        .collect_into_vec(&mut v);
    v
}

/// Layer norm of each `cols`-long row of `x` into `out`; the row's mean and 1/σ into `stats`
/// (`[rows, 2]`). Statistics in f32, two passes (mean, then centred squares), as the composite
/// form computes them.
pub fn layer_norm(x: &[f32], w: &[f32], b: &[f32], eps: f32, out: &mut [f32], stats: &mut [f32]) {
    let cols = w.len();
    let group = rows_per_task(cols);
    out.par_chunks_mut(cols * group)
        .zip(stats.par_chunks_mut(2 * group))
        .zip(x.par_chunks(cols * group))
        .for_each(|((out, stats), x)| {
            for ((y, s), x) in out
                .chunks_mut(cols)
                .zip(stats.chunks_mut(2))
                .zip(x.chunks(cols))
            {
                let mean = x.iter().sum::<f32>() / cols as f32;
                let var = x.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / cols as f32;
                let rstd = 1.0 / (var + eps).sqrt();
                for (((y, x), w), b) in y.iter_mut().zip(x).zip(w).zip(b) {
                    *y = (x - mean) * rstd * w + b;
                }
                s.copy_from_slice(&[mean, rstd]);
            }
        });
}

/// Recompute the layer norm output of `x` from saved statistics (no new reduction).
pub fn layer_norm_again(x: &[f32], w: &[f32], b: &[f32], stats: &[f32], out: &mut [f32]) {
    let cols = w.len();
    let group = rows_per_task(cols);
    out.par_chunks_mut(cols * group)
        .zip(stats.par_chunks(2 * group))
        .zip(x.par_chunks(cols * group))
        .for_each(|((out, stats), x)| {
            for ((y, s), x) in out
                .chunks_mut(cols)
                .zip(stats.chunks(2))
                .zip(x.chunks(cols))
            {
                for (((y, x), w), b) in y.iter_mut().zip(x).zip(w).zip(b) {
                    *y = (x - s[0]) * s[1] * w + b;
                }
            }
        });
}

/// `dx += rstd · (g − mean(g) − x̂ · mean(g ⊙ x̂))` with `g = dy ⊙ w`, `x̂ = (x − mean) · rstd`:
/// the layer norm's input gradient, added into `dx` (the residual stream's gradient).
pub fn layer_norm_backward(x: &[f32], w: &[f32], stats: &[f32], dy: &[f32], dx: &mut [f32]) {
    let cols = w.len();
    let group = rows_per_task(cols);
    dx.par_chunks_mut(cols * group)
        .zip(stats.par_chunks(2 * group))
        .zip(x.par_chunks(cols * group).zip(dy.par_chunks(cols * group)))
        .for_each(|((dx, stats), (x, dy))| {
            let rows = dx.chunks_mut(cols).zip(stats.chunks(2));
            for ((dx, s), (x, dy)) in rows.zip(x.chunks(cols).zip(dy.chunks(cols))) {
                let (mean, rstd) = (s[0], s[1]);
                let (mut sum_g, mut sum_gx) = (0.0f32, 0.0f32);
                for ((x, dy), w) in x.iter().zip(dy).zip(w) {
                    let g = dy * w;
                    sum_g += g;
                    sum_gx += g * (x - mean) * rstd;
                }
                let (m1, m2) = (sum_g / cols as f32, sum_gx / cols as f32);
                for (((dx, x), dy), w) in dx.iter_mut().zip(x).zip(dy).zip(w) {
                    let xhat = (x - mean) * rstd;
                    *dx += rstd * (dy * w - m1 - xhat * m2);
                }
            }
        });
}

/// `out = act(h)`.
pub fn activation(act: Activation, h: &[f32], out: &mut [f32]) {
    out.par_chunks_mut(MIN_PARALLEL_ELEMENTS)
        .zip(h.par_chunks(MIN_PARALLEL_ELEMENTS))
        .for_each(|(out, h)| activation::apply(act, h, out, false));
}

/// `g ← g ⊙ act'(h)`: the gradient through the activation, in place.
pub fn activation_backward(act: Activation, h: &[f32], g: &mut [f32]) {
    g.par_chunks_mut(MIN_PARALLEL_ELEMENTS)
        .zip(h.par_chunks(MIN_PARALLEL_ELEMENTS))
        .for_each(|(g, h)| activation::apply(act, h, g, true));
}

/// Keys a query row may see: all `t`, or up to and including its own position when causal.
fn live_keys(t: usize, causal_positions: Option<&[usize]>, row: usize) -> usize {
    causal_positions.map_or(t, |p| p[row] + 1)
}

/// Each row of `s` (`[rows, t]` scores of one head, already scaled) becomes its softmax, with
/// keys after the row's position masked out when `causal_positions` gives the positions;
/// `lse[r]` gets the row's log-sum-exp.
pub fn softmax_rows(s: &mut [f32], t: usize, causal_positions: Option<&[usize]>, lse: &mut [f32]) {
    for (r, (row, lse)) in s.chunks_mut(t).zip(lse.iter_mut()).enumerate() {
        let live = live_keys(t, causal_positions, r);
        let max = row[..live]
            .iter()
            .copied()
            .fold(f32::NEG_INFINITY, f32::max);
        let mut sum = 0.0f32;
        for v in &mut row[..live] {
            *v = exp(*v - max);
            sum += *v;
        }
        let inv = 1.0 / sum;
        row[..live].iter_mut().for_each(|v| *v *= inv);
        row[live..].iter_mut().for_each(|v| *v = 0.0);
        *lse = max + sum.ln();
    }
}

/// Scores `s` (scaled) back to probabilities `exp(s − lse)` with the saved log-sum-exp.
pub fn probabilities_again(
    s: &mut [f32],
    t: usize,
    causal_positions: Option<&[usize]>,
    lse: &[f32],
) {
    for (r, (row, lse)) in s.chunks_mut(t).zip(lse).enumerate() {
        let live = live_keys(t, causal_positions, r);
        row[..live].iter_mut().for_each(|v| *v = exp(*v - lse));
        row[live..].iter_mut().for_each(|v| *v = 0.0);
    }
}

/// `dP` (`[t, t]`) becomes the scores' gradient `P ⊙ (dP − Σⱼ P ⊙ dP)`, row by row.
pub fn softmax_backward_rows(p: &[f32], dp: &mut [f32], t: usize) {
    for (p, dp) in p.chunks(t).zip(dp.chunks_mut(t)) {
        let dot: f32 = p.iter().zip(dp.iter()).map(|(p, d)| p * d).sum();
        for (d, p) in dp.iter_mut().zip(p) {
            *d = p * (*d - dot);
        }
    }
}

/// `rows` copies of `bias`, one after the other (the destination a product then adds into).
/// Written on the pool: a serial pass here leaves the other cores idle between two products.
pub fn bias_rows(bias: &[f32], rows: usize) -> Vec<f32> {
    let cols = bias.len();
    let mut out = zeros(rows * cols);
    out.par_chunks_mut(cols * rows_per_task(cols))
        .for_each(|group| {
            group
                .chunks_mut(cols)
                .for_each(|row| row.copy_from_slice(bias))
        });
    out
}

/// `base + bias` row by row (`base` is `[rows, bias.len()]`).
pub fn bias_plus(bias: &[f32], base: &[f32]) -> Vec<f32> {
    let cols = bias.len();
    let group = rows_per_task(cols);
    let mut out = zeros(base.len());
    out.par_chunks_mut(cols * group)
        .zip(base.par_chunks(cols * group))
        .for_each(|(out, base)| {
            for (o, (x, b)) in out.iter_mut().zip(base.iter().zip(bias.iter().cycle())) {
                *o = x + b;
            }
        });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The pool-written buffers hold what their serial forms would, at lengths around the task
    /// size (one task, a partial last task, many tasks).
    #[test]
    fn pool_written_buffers() {
        for len in [0, 1, 4095, 4096, 4097, 3 * 4096 + 17] {
            assert_eq!(zeros(len), vec![0.0f32; len], "zeros({len})");
        }
        let bias: Vec<f32> = (0..771).map(|i| i as f32 * 0.5 - 7.0).collect();
        for rows in [0, 1, 5, 13] {
            let want: Vec<f32> = (0..rows).flat_map(|_| bias.iter().copied()).collect();
            assert_eq!(bias_rows(&bias, rows), want, "bias_rows({rows})");
        }
    }
}
