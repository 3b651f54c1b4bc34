//! Scaled dot-product attention and its backward in float64, one (image, head) at a time: the
//! oracle the fused attention kernel is tested against. Inputs are the kernel's own (already
//! rounded) q, k, v and output gradient widened to f64; nothing here is rounded, so the only
//! error a comparison sees is the kernel's.
//!
//! Forward: `S = s · Q Kᵀ` (keys after the query's position masked when causal),
//! `lse = log Σⱼ exp Sᵢⱼ`, `P = exp(S − lse)`, `O = P V`.
//! Backward from `dO`: `dV = Pᵀ dO`, `dP = dO Vᵀ`, `dS = P ⊙ (dP − rowsum(dO ⊙ O))`,
//! `dQ = s · dS K`, `dK = s · dSᵀ Q` — with the row term from `O`, as a flash kernel computes it.

/// One head's operands: `t` rows of `d` values each, row-major.
#[derive(Clone, Copy, Debug)]
pub struct Head<'a> {
    pub q: &'a [f64],
    pub k: &'a [f64],
    pub v: &'a [f64],
    pub t: usize,
    pub d: usize,
}

/// The settings every head shares.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Attention {
    pub scale: f64,
    pub causal: bool,
}

/// The output `O` (`[t, d]`) and each row's log-sum-exp (`[t]`).
pub struct Forward {
    pub o: Vec<f64>,
    pub lse: Vec<f64>,
}

/// The three input gradients, each `[t, d]`.
pub struct Gradients {
    pub dq: Vec<f64>,
    pub dk: Vec<f64>,
    pub dv: Vec<f64>,
}

impl Head<'_> {
    fn row<'s>(&self, m: &'s [f64], i: usize) -> &'s [f64] {
        &m[i * self.d..(i + 1) * self.d]
    }

    /// Keys query row `i` sees.
    fn live(&self, a: &Attention, i: usize) -> usize {
        if a.causal { i + 1 } else { self.t }
    }

    /// Row `i` of the probabilities (zero past the live keys) and its log-sum-exp.
    fn probabilities(&self, a: &Attention, i: usize) -> (Vec<f64>, f64) {
        let dot = |x: &[f64], y: &[f64]| x.iter().zip(y).map(|(x, y)| x * y).sum::<f64>();
        let live = self.live(a, i);
        let s: Vec<f64> = (0..live)
            .map(|j| a.scale * dot(self.row(self.q, i), self.row(self.k, j)))
            .collect();
        let max = s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let lse = max + s.iter().map(|v| (v - max).exp()).sum::<f64>().ln();
        let mut p: Vec<f64> = s.iter().map(|v| (v - lse).exp()).collect();
        p.resize(self.t, 0.0);
        (p, lse)
    }
}

pub fn forward(a: &Attention, h: &Head<'_>) -> Forward {
    let mut o = vec![0.0; h.t * h.d];
    let mut lse = vec![0.0; h.t];
    for i in 0..h.t {
        let (p, l) = h.probabilities(a, i);
        lse[i] = l;
        for (j, pj) in p.iter().enumerate() {
            for (o, v) in o[i * h.d..(i + 1) * h.d].iter_mut().zip(h.row(h.v, j)) {
                *o += pj * v;
            }
        }
    }
    Forward { o, lse }
}

/// The gradients of `Σ O ⊙ dO`.
pub fn backward(a: &Attention, h: &Head<'_>, d_o: &[f64]) -> Gradients {
    let (t, d) = (h.t, h.d);
    let o = forward(a, h).o;
    let (mut dq, mut dk, mut dv) = (vec![0.0; t * d], vec![0.0; t * d], vec![0.0; t * d]);
    for i in 0..t {
        let (p, _) = h.probabilities(a, i);
        let g = h.row(d_o, i);
        let row_term: f64 = g.iter().zip(h.row(&o, i)).map(|(g, o)| g * o).sum();
        for j in 0..h.live(a, i) {
            let dp: f64 = g.iter().zip(h.row(h.v, j)).map(|(g, v)| g * v).sum();
            let ds = p[j] * (dp - row_term);
            for c in 0..d {
                dv[j * d + c] += p[j] * g[c];
                dq[i * d + c] += a.scale * ds * h.k[j * d + c];
                dk[j * d + c] += a.scale * ds * h.q[i * d + c];
            }
        }
    }
    Gradients { dq, dk, dv }
}
