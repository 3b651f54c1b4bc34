//! PCGrad (Yu et al. 2020) expressed on the Gram matrix.
//!
//! Task `i` starts as `g_i` and, visiting the other tasks `j` in a seeded random order, loses its
//! component along the original `g_j` whenever the two conflict: `g_i ← g_i − (g_i·g_j / ‖g_j‖²) g_j`
//! if `g_i·g_j < 0`. Every intermediate `g_i` is a combination `Σ_k c_k g_k`, and
//! `(Σ_k c_k g_k)·g_j = Σ_k c_k G[k][j]`, so the whole procedure runs on the K×K Gram matrix and ends
//! in one combine pass over the gradients.

use super::gram::Gram;
use crate::surgery::error::Result;
use crate::surgery::rng::SplitMix64;

/// How the projected task gradients are merged.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Reduction {
    #[default]
    Sum,
    Mean,
}

/// The result of the PCGrad solve.
#[derive(Clone, Debug, PartialEq)]
pub struct PcGradPlan {
    pub tasks: usize,
    /// Row `i` holds the coefficients of projected task `i` over the original gradients, K×K.
    pub coefficients: Vec<f64>,
    /// Combine weights of the merged gradient: column sums of `coefficients` (divided by K for
    /// [`Reduction::Mean`]).
    pub weights: Vec<f32>,
}

/// The order in which task `task` visits the others: a Fisher–Yates shuffle drawn from
/// [`SplitMix64`] seeded with `seed` and the task index. Every backend uses this order.
///
/// The official implementation shuffles all tasks, `task` itself included; projecting a task off
/// its own original gradient only happens if it has turned against it, so we leave it out.
pub fn pcgrad_visit_order(seed: u64, tasks: usize, task: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..tasks).filter(|&j| j != task).collect();
    let stream = seed ^ (task as u64 + 1).wrapping_mul(0xD1B5_4A32_D192_ED03);
    SplitMix64::new(stream).shuffle(&mut order);
    order
}

/// Solve PCGrad on `gram` (the Gram matrix of the K task gradients, identity transforms).
///
/// A task with a zero gradient (`G[j][j] = 0`) never causes a projection. NaN entries make the
/// comparisons false, so they skip projections but still reach the weights through the other
/// terms: check the Gram matrix for finiteness first if that matters to the caller.
pub fn pcgrad(gram: &Gram, seed: u64, reduction: Reduction) -> Result<PcGradPlan> {
    let k = gram.k();
    let mut coefficients = vec![0.0f64; k * k];
    for i in 0..k {
        let c = &mut coefficients[i * k..(i + 1) * k];
        c[i] = 1.0;
        for j in pcgrad_visit_order(seed, k, i) {
            let along: f64 = (0..k).map(|m| c[m] * gram.get_f64(m, j)).sum();
            let norm_sq = gram.get_f64(j, j);
            if along < 0.0 && norm_sq > 0.0 {
                c[j] -= along / norm_sq;
            }
        }
    }
    let scale = match reduction {
        Reduction::Sum => 1.0,
        Reduction::Mean if k > 0 => 1.0 / k as f64,
        Reduction::Mean => 0.0,
    };
    let weights = (0..k)
        .map(|m| ((0..k).map(|i| coefficients[i * k + m]).sum::<f64>() * scale) as f32)
        .collect();
    Ok(PcGradPlan {
        tasks: k,
        coefficients,
        weights,
    })
}
