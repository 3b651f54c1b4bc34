//! Adam's update on the CPU, the twin of the multi-tensor CUDA kernel (`kernels/adam.cu`): for
//! each parameter, its gradient and both moments are read once and written once. The arithmetic
//! is PyTorch's, in f32, in this order: `m ← β₁m + (1 − β₁)g`, `v ← β₂v + (1 − β₂)g²`,
//! `p ← p − (m / (√v / √(1 − β₂ᵗ) + ε)) · step`; each operation rounded once (Rust does not
//! contract them into fused multiply-adds, and the kernel is written not to), so the two give the
//! same bits.

use rayon::prelude::*;

/// One step's constants.
#[derive(Clone, Copy, Debug)]
pub struct AdamStep {
    pub beta1: f32,
    pub beta2: f32,
    /// `1 − β₁` and `1 − β₂`, computed in f64 and rounded once (as PyTorch passes them).
    pub one_minus_beta1: f32,
    pub one_minus_beta2: f32,
    /// `lr / (1 − β₁ᵗ)`.
    pub step_size: f32,
    /// `√(1 − β₂ᵗ)`.
    pub bias2_sqrt: f32,
    pub eps: f32,
    /// Multiplies every gradient first (loss scaling's `1/scale`; 1 otherwise).
    pub grad_scale: f32,
}

/// Elements per parallel task.
const CHUNK: usize = 16 * 1024;

/// The update of one parameter, in place over f32 slices of one length.
pub fn update(s: &AdamStep, p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32]) {
    p.par_chunks_mut(CHUNK)
        .zip(m.par_chunks_mut(CHUNK).zip(v.par_chunks_mut(CHUNK)))
        .zip(g.par_chunks(CHUNK))
        .for_each(|((p, (m, v)), g)| {
            for (((p, m), v), g) in p.iter_mut().zip(m).zip(v).zip(g) {
                let g = if s.grad_scale == 1.0 {
                    *g
                } else {
                    g * s.grad_scale
                };
                *m = *m * s.beta1 + g * s.one_minus_beta1;
                *v = *v * s.beta2 + g * g * s.one_minus_beta2;
                *p -= *m / (v.sqrt() / s.bias2_sqrt + s.eps) * s.step_size;
            }
        });
}
