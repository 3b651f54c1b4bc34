//! Orthonormalising directions given only their Gram matrix.
//!
//! A basis vector is held as coefficients over the original vectors, `q = Σ_j c_j v_j`, so that
//! `q·v_k = Σ_j c_j G[j][k]` needs no pass over memory.

/// Coefficients of an orthonormal basis of the span of `dirs`, taken in order; a direction whose
/// remainder outside the span of the kept ones is at most `dep_tol` of its norm is skipped (the
/// same rule as the K-direction row projection).
pub(crate) struct SpanBasis {
    /// One coefficient vector (length K, over all Gram entries) per kept direction.
    pub basis: Vec<Vec<f64>>,
}

impl SpanBasis {
    pub fn new(g: &dyn Fn(usize, usize) -> f64, k: usize, dirs: &[usize], dep_tol: f64) -> Self {
        let mut basis: Vec<Vec<f64>> = Vec::new();
        for &d in dirs {
            let mut c = vec![0.0; k];
            c[d] = 1.0;
            let n0 = g(d, d).max(0.0).sqrt();
            for _ in 0..2 {
                for q in &basis {
                    let proj = inner(g, &c, q);
                    c.iter_mut().zip(q).for_each(|(ci, qi)| *ci -= proj * qi);
                }
            }
            let n = inner(g, &c, &c).max(0.0).sqrt();
            let finite = n0.is_finite() && n.is_finite();
            if finite && n <= dep_tol * n0 {
                continue;
            }
            c.iter_mut().for_each(|ci| *ci /= n);
            basis.push(c);
        }
        Self { basis }
    }

    /// Coefficients `w` such that `Σ_j w_j v_j` is `v_target` minus its projection on the span.
    pub fn remove_from(
        &self,
        g: &dyn Fn(usize, usize) -> f64,
        k: usize,
        target: usize,
    ) -> Vec<f64> {
        let mut w = vec![0.0; k];
        w[target] = 1.0;
        let mut e = vec![0.0; k];
        e[target] = 1.0;
        for q in &self.basis {
            let proj = inner(g, &e, q);
            w.iter_mut().zip(q).for_each(|(wi, qi)| *wi -= proj * qi);
        }
        w
    }
}

/// `a·b` for vectors given as coefficients over the Gram's vectors.
fn inner(g: &dyn Fn(usize, usize) -> f64, a: &[f64], b: &[f64]) -> f64 {
    let mut s = 0.0;
    for (i, &ai) in a.iter().enumerate() {
        if ai == 0.0 {
            continue;
        }
        for (j, &bj) in b.iter().enumerate() {
            if bj != 0.0 {
                s += ai * bj * g(i, j);
            }
        }
    }
    s
}
