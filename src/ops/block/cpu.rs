//! The layer's forward and backward on the CPU, in f32: the decomposition of [`super`] written
//! out over slices, GEMMs through [`cpu_gemm`](super::cpu_gemm), row work through
//! [`cpu_rows`](super::cpu_rows), attention in [`cpu_attention`](super::cpu_attention), the
//! adapters in [`cpu_lora`](super::cpu_lora).

use std::borrow::Cow;

use super::cpu_attention as attention;
use super::cpu_gemm::{Dst, Threads, View, matmul, product};
use super::cpu_lora::{self as lora_ops, Lora};
use super::cpu_rows as rows;
use super::dims::Dims;
use super::outputs::Outputs;
use super::weights::ForwardProjections;
use super::{BlockConfig, Saved};

/// The frozen weights of one layer as f32 slices (torch layout: `[out, in]`), and the
/// projections transposed for the forward's products.
pub struct Weights<'a> {
    pub ln1: (&'a [f32], &'a [f32]),
    pub qkv: (&'a [f32], &'a [f32]),
    pub out: (&'a [f32], &'a [f32]),
    pub ln2: (&'a [f32], &'a [f32]),
    pub fc1: (&'a [f32], &'a [f32]),
    pub fc2: (&'a [f32], &'a [f32]),
    pub forward: &'a ForwardProjections,
}

impl<'a> Weights<'a> {
    /// From the twelve slices in [`LayerWeights`](super::LayerWeights)' order.
    pub fn from_slices(w: &'a [Cow<'a, [f32]>], forward: &'a ForwardProjections) -> Self {
        let pair = |i: usize| (&*w[2 * i], &*w[2 * i + 1]);
        Self {
            ln1: pair(0),
            qkv: pair(1),
            out: pair(2),
            ln2: pair(3),
            fc1: pair(4),
            fc2: pair(5),
            forward,
        }
    }
}

/// What one call computes: its sizes, output rows, and adapters.
pub struct Call<'a> {
    pub cfg: BlockConfig,
    pub d: Dims,
    pub outputs: Outputs<'a>,
    pub lora: Option<Lora<'a>>,
    /// The adapters act on (and the forward keeps rows of) the first `adapted` images only;
    /// `d.batch` for every image.
    pub adapted: usize,
}

/// `y = a · wᵀ` added into `y` (rows `m`), on the pool; `wt` is `wᵀ` stored `[k, n]`.
fn add_product(y: &mut [f32], a: &[f32], wt: &[f32], (m, k, n): (usize, usize, usize)) {
    matmul(
        Dst::rows(y, m, n),
        View::rows(a, m, k),
        View::rows(wt, k, n),
        1.0,
        true,
        Threads::Pool,
    );
}

/// `g · w` (`g` `[m, n]`, `w` `[n, k]`) into a new `[m, k]`, on the pool.
fn input_grad(g: &[f32], w: &[f32], (m, n, k): (usize, usize, usize)) -> Vec<f32> {
    product(View::rows(g, m, n), View::rows(w, n, k), 1.0, Threads::Pool)
}

/// The rows of `x` (`[N, C]`) at the output rows, borrowed when they are all of them.
fn at_outputs<'x>(call: &Call<'_>, x: &'x [f32]) -> Cow<'x, [f32]> {
    let (d, c) = (call.d, call.d.channels);
    match call.outputs {
        Outputs::All => Cow::Borrowed(x),
        pooled => Cow::Owned(
            pooled
                .token_rows(d.batch, d.seq)
                .into_iter()
                .flat_map(|r| x[r * c..(r + 1) * c].iter().copied())
                .collect(),
        ),
    }
}

/// The output (`[R, C]` at the output rows) and, when `keep`, what the backward needs.
pub fn forward(
    call: &Call<'_>,
    x: &[f32],
    w: &Weights<'_>,
    keep: bool,
) -> (Vec<f32>, Option<Saved>) {
    let (cfg, d) = (&call.cfg, call.d);
    let (n, c, i) = (d.tokens(), d.channels, d.intermediate);
    let r = d.batch * call.outputs.per_image(d.seq);
    let mut ln = rows::zeros(n * c);
    let mut stats1 = vec![0.0; n * 2];
    rows::layer_norm(x, w.ln1.0, w.ln1.1, cfg.eps, &mut ln, &mut stats1);
    let mut qkv = rows::bias_rows(w.qkv.1, n);
    add_product(&mut qkv, &ln, &w.forward.qkv, (n, c, 3 * c));
    // The adapted images' rows are a prefix of every row-major buffer.
    let adapted = Dims {
        batch: call.adapted,
        ..d
    };
    let (rows_in, cols) = (adapted.tokens(), 3 * c);
    let z = call
        .lora
        .as_ref()
        .map(|l| lora_ops::forward(adapted, &ln[..rows_in * c], l, &mut qkv[..rows_in * cols]));

    let (o, lse) = attention::forward(cfg, d, &qkv, call.outputs);
    let mut res1 = rows::bias_plus(w.out.1, &at_outputs(call, x));
    add_product(&mut res1, &o, &w.forward.out, (r, c, c));
    drop(o);

    let mut stats2 = vec![0.0; r * 2];
    ln.truncate(r * c);
    rows::layer_norm(&res1, w.ln2.0, w.ln2.1, cfg.eps, &mut ln, &mut stats2);
    let mut h = rows::bias_rows(w.fc1.1, r);
    add_product(&mut h, &ln, &w.forward.fc1, (r, c, i));
    drop(ln);
    let mut act = rows::zeros(r * i);
    rows::activation(cfg.activation, &h, &mut act);
    let mut out = rows::bias_plus(w.fc2.1, &res1);
    add_product(&mut out, &act, &w.forward.fc2, (r, i, c));

    let saved = keep.then(|| {
        let saved = Saved {
            stats1,
            qkv,
            z: z.unwrap_or_default(),
            lse,
            res1,
            stats2,
            h,
        };
        saved.of_first_images(call.adapted, d, call.outputs.per_image(d.seq))
    });
    (out, saved)
}

impl Saved {
    /// What was kept for the first `images` images only (every buffer is image-major), the
    /// rest freed.
    fn of_first_images(mut self, images: usize, d: Dims, per_image: usize) -> Self {
        if images == d.batch {
            return self;
        }
        let (tokens, outputs) = (images * d.seq, images * per_image);
        let keep = |v: &mut Vec<f32>, len: usize| {
            v.truncate(len);
            v.shrink_to_fit();
        };
        keep(&mut self.stats1, tokens * 2);
        keep(&mut self.qkv, tokens * 3 * d.channels);
        keep(&mut self.lse, images * d.heads * per_image);
        keep(&mut self.res1, outputs * d.channels);
        keep(&mut self.stats2, outputs * 2);
        keep(&mut self.h, outputs * d.intermediate);
        self
    }
}

/// What the backward returns: the input gradient (when asked for) and the adapters' gradients
/// (`[3, r, C]` and `[3, C, r]`, when the layer has adapters).
pub struct Backward {
    pub dx: Option<Vec<f32>>,
    pub da: Vec<f32>,
    pub db: Vec<f32>,
}

/// `dy` is the gradient at the output rows; `x` the layer's input; `s` what the forward kept.
pub fn backward(
    call: &Call<'_>,
    x: &[f32],
    w: &Weights<'_>,
    s: &Saved,
    dy: &[f32],
    want_dx: bool,
) -> Backward {
    let (cfg, d) = (&call.cfg, call.d);
    let (n, c, i) = (d.tokens(), d.channels, d.intermediate);
    let r = d.batch * call.outputs.per_image(d.seq);
    // MLP: dh = (dy · W2) ⊙ act'(h); the residual stream's gradient gets LN2's input gradient.
    let mut dh = input_grad(dy, w.fc2.0, (r, c, i));
    rows::activation_backward(cfg.activation, &s.h, &mut dh);
    let dln2 = input_grad(&dh, w.fc1.0, (r, i, c));
    drop(dh);
    let mut dres1 = dy.to_vec();
    rows::layer_norm_backward(&s.res1, w.ln2.0, &s.stats2, &dln2, &mut dres1);

    let d_o = input_grad(&dres1, w.out.0, (r, c, c));
    let dqkv = attention::backward(cfg, d, &s.qkv, &s.lse, &d_o, call.outputs);
    drop(d_o);

    let mut dln = dln2;
    dln.resize(n * c, 0.0);
    let (mut da, mut db) = (Vec::new(), Vec::new());
    if let Some(l) = &call.lora {
        let mut ln = rows::zeros(n * c);
        rows::layer_norm_again(x, w.ln1.0, w.ln1.1, &s.stats1, &mut ln);
        (da, db) = lora_ops::backward(d, &ln, l, &s.z, &dqkv, want_dx.then_some(&mut dln[..]));
    }
    if !want_dx {
        return Backward { dx: None, da, db };
    }
    let (g, wqkv) = (View::rows(&dqkv, n, 3 * c), View::rows(w.qkv.0, 3 * c, c));
    matmul(
        Dst::rows(&mut dln, n, c),
        g,
        wqkv,
        1.0,
        call.lora.is_some(),
        Threads::Pool,
    );
    let mut dx = scatter_outputs(call, dres1);
    rows::layer_norm_backward(x, w.ln1.0, &s.stats1, &dln, &mut dx);
    Backward {
        dx: Some(dx),
        da,
        db,
    }
}

/// The residual stream's gradient at the output rows placed into `[N, C]` (zero elsewhere).
fn scatter_outputs(call: &Call<'_>, at_rows: Vec<f32>) -> Vec<f32> {
    let (d, c) = (call.d, call.d.channels);
    if call.outputs == Outputs::All {
        return at_rows;
    }
    let mut full = rows::zeros(d.tokens() * c);
    for (k, row) in call
        .outputs
        .token_rows(d.batch, d.seq)
        .into_iter()
        .enumerate()
    {
        full[row * c..(row + 1) * c].copy_from_slice(&at_rows[k * c..(k + 1) * c]);
    }
    full
}
