//! Spectral entropy of a square patch, as the official transform scores patches: the grayscale
//! patch `0.299 R + 0.587 G + 0.114 B` (on [0, 1] values), its 2-D DFT power `|F|²`,
//! `p = |F|² / (Σ|F|² + 1e-12)`, `H = −Σ p log₂(p + 1e-12)`. (The official code shifts the
//! spectrum first; a permutation of `p` leaves `H` unchanged.)

use std::sync::Arc;

use rustfft::num_complex::Complex64;
use rustfft::{Fft, FftPlanner};

/// A reusable scorer for `n × n` patches (plan and scratch made once).
pub struct SpectralEntropy {
    n: usize,
    fft: Arc<dyn Fft<f64>>,
    buf: Vec<Complex64>,
    col: Vec<Complex64>,
    scratch: Vec<Complex64>,
}

impl SpectralEntropy {
    pub fn new(n: usize) -> Self {
        let fft = FftPlanner::new().plan_fft_forward(n);
        let scratch = vec![Complex64::default(); fft.get_inplace_scratch_len()];
        Self {
            n,
            fft,
            buf: vec![Complex64::default(); n * n],
            col: vec![Complex64::default(); n],
            scratch,
        }
    }

    /// `gray` is the patch row-major, `n × n` values.
    pub fn entropy(&mut self, gray: &[f64]) -> f64 {
        let n = self.n;
        assert_eq!(gray.len(), n * n, "patch must be {n}×{n}");
        for (b, &g) in self.buf.iter_mut().zip(gray) {
            *b = Complex64::new(g, 0.0);
        }
        // Rows, then columns.
        self.fft
            .process_with_scratch(&mut self.buf, &mut self.scratch);
        for x in 0..n {
            for y in 0..n {
                self.col[y] = self.buf[y * n + x];
            }
            self.fft
                .process_with_scratch(&mut self.col, &mut self.scratch);
            for y in 0..n {
                self.buf[y * n + x] = self.col[y];
            }
        }
        let total: f64 = self.buf.iter().map(|c| c.norm_sqr()).sum::<f64>() + 1e-12;
        -self
            .buf
            .iter()
            .map(|c| {
                let p = c.norm_sqr() / total;
                p * (p + 1e-12).log2()
            })
            .sum::<f64>()
    }
}
