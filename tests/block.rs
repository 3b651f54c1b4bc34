//! The layer op (`dgs::ops::block`) against the transformer layer written as plain candle tensor
//! ops in float64 under candle's autograd (the model's previous CPU path, kept here as the
//! reference): output, input gradient and every adapter gradient; with and without dropout (the
//! reference applies the same Philox masks), vision-like odd lengths, several head counts, the
//! causal text layer, f32 and f16/bf16 operands; and finite differences of the adapter gradients.

mod common;

use std::sync::Arc;

use approx::{assert_relative_eq, relative_eq};
use candle_core::{D, DType, Device, Tensor, Var};
use dgs::ops::block::{
    Activation, Adapters, BlockConfig, Dropout, DropoutKey, LayerWeights, MaskStream, block,
};

/// A layer's sizes and settings for one case.
#[derive(Clone, Copy, Debug)]
struct Case {
    batch: usize,
    seq: usize,
    channels: usize,
    heads: usize,
    rank: usize,
    causal: bool,
    dropout: f32,
    activation: Activation,
}

const BASE: Case = Case {
    batch: 2,
    seq: 17,
    channels: 24,
    heads: 4,
    rank: 3,
    causal: false,
    dropout: 0.0,
    activation: Activation::QuickGelu,
};

fn randn(seed: u64, shape: &[usize], std: f64) -> Tensor {
    // A seeded stream: SplitMix64 through Box–Muller, so every run draws the same inputs.
    let n: usize = shape.iter().product();
    let mut rng = dgs::surgery::rng::SplitMix64::new(seed);
    let v: Vec<f64> = (0..n)
        .map(|_| {
            let (u1, u2) = (rng.next_f64().max(1e-300), rng.next_f64());
            std * (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
        })
        .collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

/// Weights (f64), adapters (f64) and an input for `case`.
struct Inputs {
    w: LayerWeights,
    a: Tensor,
    b: Tensor,
    x: Tensor,
    /// The output's cotangent: the loss is `Σ out ⊙ g`.
    g: Tensor,
}

fn inputs(case: Case, seed: u64) -> Inputs {
    let (c, i, r) = (case.channels, 4 * case.channels, case.rank);
    let s = 1.0 / (c as f64).sqrt();
    let pair = |k: u64, o: usize, n: usize, std: f64| {
        (
            randn(seed + k, &[o, n], std),
            randn(seed + k + 100, &[o], 0.1),
        )
    };
    let norm = |k: u64| {
        let w = (randn(seed + k, &[c], 0.1) + 1.0).unwrap();
        (w, randn(seed + k + 100, &[c], 0.1))
    };
    Inputs {
        w: LayerWeights::new(
            norm(1),
            pair(2, 3 * c, c, s),
            pair(3, c, c, s),
            norm(4),
            pair(5, i, c, s),
            pair(6, c, i, 1.0 / (i as f64).sqrt()),
        ),
        a: randn(seed + 7, &[3, r, c], s),
        b: randn(seed + 8, &[3, c, r], 0.3),
        x: randn(seed + 9, &[case.batch, case.seq, c], 1.0),
        g: randn(seed + 10, &[case.batch, case.seq, c], 1.0),
    }
}

fn cast_weights(w: &LayerWeights, dtype: DType) -> LayerWeights {
    let p = |(a, b): &(Tensor, Tensor)| (a.to_dtype(dtype).unwrap(), b.to_dtype(dtype).unwrap());
    LayerWeights::new(
        p(&w.ln1),
        p(&w.qkv),
        p(&w.out),
        p(&w.ln2),
        p(&w.fc1),
        p(&w.fc2),
    )
}

const SCALE: f64 = 1.5;

fn dropout_of(case: Case) -> Option<Dropout> {
    (case.dropout > 0.0).then_some(Dropout {
        key: DropoutKey { seed: 11, step: 4 },
        layer: 2,
        p: case.dropout,
    })
}

fn layer_norm(x: &Tensor, (w, b): &(Tensor, Tensor)) -> Tensor {
    let mean = x.mean_keepdim(D::Minus1).unwrap();
    let centred = x.broadcast_sub(&mean).unwrap();
    let var = centred.sqr().unwrap().mean_keepdim(D::Minus1).unwrap();
    let normed = centred
        .broadcast_div(&(var + 1e-5).unwrap().sqrt().unwrap())
        .unwrap();
    normed.broadcast_mul(w).unwrap().broadcast_add(b).unwrap()
}

fn linear(x: &Tensor, (w, b): &(Tensor, Tensor)) -> Tensor {
    x.broadcast_matmul(&w.t().unwrap())
        .unwrap()
        .broadcast_add(b)
        .unwrap()
}

fn activation(act: Activation, x: &Tensor) -> Tensor {
    match act {
        Activation::QuickGelu => {
            (x * candle_nn::ops::sigmoid(&(x * 1.702).unwrap()).unwrap()).unwrap()
        }
        Activation::Gelu => x.gelu_erf().unwrap(),
        Activation::GeluTanh => x.gelu().unwrap(),
        Activation::Relu => x.relu().unwrap(),
    }
}

/// The dropout mask of projection `p` as `[B, T, C]` f64 (already scaled by `1 / (1 − p)`).
fn mask(case: Case, drop: Dropout, p: usize) -> Tensor {
    let n = case.batch * case.seq * case.channels;
    let mut keep = vec![false; n];
    MaskStream::new(drop.key, drop.layer, p, drop.p).fill(0, &mut keep);
    let scale = 1.0 / (1.0 - f64::from(drop.p));
    let v: Vec<f64> = keep.iter().map(|k| if *k { scale } else { 0.0 }).collect();
    Tensor::from_vec(v, (case.batch, case.seq, case.channels), &Device::Cpu).unwrap()
}

/// The layer as tensor ops (f64, autograd).
fn reference(case: Case, w: &LayerWeights, x: &Tensor, a: &Tensor, b: &Tensor) -> Tensor {
    let (bsz, t, c) = x.dims3().unwrap();
    let (h, hd) = (case.heads, c / case.heads);
    let ln1 = layer_norm(x, &w.ln1);
    let qkv: Vec<Tensor> = (0..3)
        .map(|p| {
            let wp = w.qkv.0.narrow(0, p * c, c).unwrap();
            let bp = w.qkv.1.narrow(0, p * c, c).unwrap();
            let base = linear(&ln1, &(wp, bp));
            let input = match dropout_of(case) {
                Some(drop) => (&ln1 * mask(case, drop, p)).unwrap(),
                None => ln1.clone(),
            };
            let (ap, bp) = (a.get(p).unwrap(), b.get(p).unwrap());
            let low = input
                .broadcast_matmul(&ap.t().unwrap())
                .unwrap()
                .broadcast_matmul(&bp.t().unwrap())
                .unwrap();
            (base + (low * SCALE).unwrap()).unwrap()
        })
        .collect();
    let split = |y: &Tensor| {
        y.reshape((bsz, t, h, hd))
            .unwrap()
            .transpose(1, 2)
            .unwrap()
            .contiguous()
            .unwrap()
    };
    let q = (split(&qkv[0]) * (hd as f64).powf(-0.5)).unwrap();
    let (k, v) = (split(&qkv[1]), split(&qkv[2]));
    let mut s = q.matmul(&k.t().unwrap()).unwrap();
    if case.causal {
        s = s.broadcast_add(&common::causal_mask_f64(t)).unwrap();
    }
    let p = candle_nn::ops::softmax(&s, D::Minus1).unwrap();
    let o = p
        .matmul(&v)
        .unwrap()
        .transpose(1, 2)
        .unwrap()
        .reshape((bsz, t, c))
        .unwrap();
    let r = (x + linear(&o, &w.out)).unwrap();
    let hidden = activation(case.activation, &linear(&layer_norm(&r, &w.ln2), &w.fc1));
    (&r + linear(&hidden, &w.fc2)).unwrap()
}

/// Output, input gradient, A and B gradients, all as f64 vectors.
struct Results {
    out: Vec<f64>,
    dx: Vec<f64>,
    da: Vec<f64>,
    db: Vec<f64>,
}

fn flat(t: &Tensor) -> Vec<f64> {
    t.to_dtype(DType::F64)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

fn run_reference(case: Case, inp: &Inputs) -> Results {
    let (x, a, b) = (
        Var::from_tensor(&inp.x).unwrap(),
        Var::from_tensor(&inp.a).unwrap(),
        Var::from_tensor(&inp.b).unwrap(),
    );
    let out = reference(case, &inp.w, &x, &a, &b);
    let grads = (&out * &inp.g)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    let g = |v: &Var| flat(grads.get(v).expect("a gradient"));
    Results {
        out: flat(&out),
        dx: g(&x),
        da: g(&a),
        db: g(&b),
    }
}

/// The op's settings for `case`.
fn config(case: Case) -> BlockConfig {
    BlockConfig {
        heads: case.heads,
        eps: 1e-5,
        activation: case.activation,
        causal: case.causal,
    }
}

/// The op's operands from `inp`: weights and input in `dtype`, adapters in f32 (as the model
/// keeps them), each operand a variable.
struct Operands {
    w: Arc<LayerWeights>,
    x: Var,
    a: Var,
    b: Var,
}

impl Operands {
    fn new(inp: &Inputs, dtype: DType) -> Self {
        let var = |t: &Tensor, d: DType| Var::from_tensor(&t.to_dtype(d).unwrap()).unwrap();
        Self {
            w: Arc::new(cast_weights(&inp.w, dtype)),
            x: var(&inp.x, dtype),
            a: var(&inp.a, DType::F32),
            b: var(&inp.b, DType::F32),
        }
    }

    fn adapters(&self, dropout: Option<Dropout>) -> Option<Adapters<'_>> {
        Some(Adapters {
            a: &self.a,
            b: &self.b,
            scale: SCALE,
            dropout,
            images: None,
        })
    }
}

/// The op with operands in `dtype` (adapters in f32, as the model keeps them).
fn run_op(case: Case, inp: &Inputs, dtype: DType) -> Results {
    let ops = Operands::new(inp, dtype);
    let (x, a, b) = (&ops.x, &ops.a, &ops.b);
    let out = block(x, &ops.w, config(case), ops.adapters(dropout_of(case))).unwrap();
    let g = inp.g.to_dtype(dtype).unwrap();
    let loss = (out.to_dtype(DType::F64).unwrap() * g.to_dtype(DType::F64).unwrap()).unwrap();
    let grads = loss.sum_all().unwrap().backward().unwrap();
    let get = |v: &Var| flat(grads.get(v).expect("a gradient"));
    Results {
        out: flat(&out),
        dx: get(x),
        da: get(a),
        db: get(b),
    }
}

/// `got` within `tol · max|want|` of `want` everywhere, NaN/inf where and only where `want` has
/// them.
#[track_caller]
fn assert_close(what: &str, got: &[f64], want: &[f64], tol: f64) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    let scale = want
        .iter()
        .filter(|v| v.is_finite())
        .fold(0.0f64, |m, v| m.max(v.abs()));
    let epsilon = tol * scale.max(1e-30);
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            g.is_finite() == w.is_finite()
                && relative_eq!(*g, *w, epsilon = epsilon, max_relative = 0.0),
            "{what}[{i}]: got {g}, want {w}, allowed |diff| {epsilon:e}"
        );
    }
}

/// The op's results (operands of `dtype`) against the f64 reference from the same rounded inputs.
fn check(case: Case, dtype: DType, tol: f64) {
    let mut inp = inputs(case, 42);
    // Round the inputs the op sees, so both sides start from the same numbers.
    let round = |t: &Tensor, d: DType| t.to_dtype(d).unwrap().to_dtype(DType::F64).unwrap();
    inp.w = cast_weights(&cast_weights(&inp.w, dtype), DType::F64);
    (inp.x, inp.g) = (round(&inp.x, dtype), round(&inp.g, dtype));
    (inp.a, inp.b) = (round(&inp.a, DType::F32), round(&inp.b, DType::F32));
    let (got, want) = (run_op(case, &inp, dtype), run_reference(case, &inp));
    let what = format!("{case:?} {dtype:?}");
    assert_close(&format!("{what}: output"), &got.out, &want.out, tol);
    assert_close(&format!("{what}: input gradient"), &got.dx, &want.dx, tol);
    assert_close(&format!("{what}: A gradient"), &got.da, &want.da, tol);
    assert_close(&format!("{what}: B gradient"), &got.db, &want.db, tol);
}

/// f32 arithmetic in the op: errors of a few ulps of the largest value, summed over C ≤ 96 terms.
const F32_TOL: f64 = 2e-5;

#[test]
fn vision_layer_matches_the_reference() {
    for (seq, heads) in [(17, 4), (1, 2), (50, 3), (65, 6)] {
        check(Case { seq, heads, ..BASE }, DType::F32, F32_TOL);
    }
}

#[test]
fn causal_text_layer_matches_the_reference() {
    for seq in [1, 7, 77] {
        check(
            Case {
                seq,
                causal: true,
                heads: 2,
                ..BASE
            },
            DType::F32,
            F32_TOL,
        );
    }
}

#[test]
fn dropout_uses_the_philox_masks() {
    for causal in [false, true] {
        check(
            Case {
                dropout: 0.8,
                causal,
                ..BASE
            },
            DType::F32,
            F32_TOL,
        );
    }
}

#[test]
fn every_activation() {
    for activation in [Activation::Gelu, Activation::GeluTanh, Activation::Relu] {
        check(Case { activation, ..BASE }, DType::F32, F32_TOL);
    }
}

#[test]
fn half_precision_operands() {
    // The op widens f16/bf16 operands to f32 and rounds its output once: the error is the
    // output's rounding plus the gradients' (half-ulp of the largest value: 2⁻¹¹, 2⁻⁸).
    check(
        Case {
            dropout: 0.5,
            ..BASE
        },
        DType::F16,
        2e-3,
    );
    check(
        Case {
            dropout: 0.5,
            ..BASE
        },
        DType::BF16,
        1e-2,
    );
}

/// Central differences of `Σ out ⊙ g` in f64 through the op's own f32 forward, on a handful of
/// adapter entries.
#[test]
fn adapter_gradients_match_finite_differences() {
    let case = Case {
        dropout: 0.5,
        seq: 9,
        ..BASE
    };
    let inp = inputs(case, 7);
    let got = run_op(case, &inp, DType::F32);
    let loss_with = |a: &Tensor, b: &Tensor| -> f64 {
        let inp = Inputs {
            a: a.clone(),
            b: b.clone(),
            ..inputs(case, 7)
        };
        let r = run_op(case, &inp, DType::F32);
        r.out.iter().zip(flat(&inp.g)).map(|(o, g)| o * g).sum()
    };
    let h = 1e-2;
    for (which, grad) in [(0usize, &got.da), (1, &got.db)] {
        let t = if which == 0 { &inp.a } else { &inp.b };
        let mut v = flat(t);
        for idx in [0, 5, v.len() / 2, v.len() - 1] {
            let orig = v[idx];
            let mut at = |x: f64| {
                v[idx] = x;
                let moved = Tensor::from_vec(v.clone(), t.shape(), &Device::Cpu).unwrap();
                match which {
                    0 => loss_with(&moved, &inp.b),
                    _ => loss_with(&inp.a, &moved),
                }
            };
            let fd = (at(orig + h) - at(orig - h)) / (2.0 * h);
            v[idx] = orig;
            assert_relative_eq!(grad[idx], fd, epsilon = 2e-2, max_relative = 2e-2);
        }
    }
}

/// The same key draws the same masks (a resumed run repeats), another step other masks.
#[test]
fn dropout_is_reproducible_and_keyed_by_step() {
    let case = Case {
        dropout: 0.8,
        ..BASE
    };
    let inp = inputs(case, 3);
    let first = run_op(case, &inp, DType::F32);
    let again = run_op(case, &inp, DType::F32);
    assert_eq!(first.out, again.out);
    assert_eq!(first.da, again.da);
    let ops = Operands::new(&inp, DType::F32);
    let mut drop = dropout_of(case).unwrap();
    drop.key.step += 1;
    let other = flat(&block(&ops.x, &ops.w, config(case), ops.adapters(Some(drop))).unwrap());
    assert_ne!(first.out, other);
}

/// An input that carries no gradient (the first layer's) gets none, and the adapters' gradients
/// do not change.
#[test]
fn untracked_input_skips_its_gradient() {
    let case = BASE;
    let inp = inputs(case, 5);
    let ops = Operands::new(&inp, DType::F32);
    let (a, b) = (&ops.a, &ops.b);
    let x = ops.x.as_tensor().detach();
    let out = block(&x, &ops.w, config(case), ops.adapters(None)).unwrap();
    let loss = (out.to_dtype(DType::F64).unwrap() * &inp.g)
        .unwrap()
        .sum_all()
        .unwrap();
    let grads = loss.backward().unwrap();
    assert!(grads.get(&x).is_none());
    let full = run_op(case, &inp, DType::F32);
    assert_eq!(flat(grads.get(a).unwrap()), full.da);
    assert_eq!(flat(grads.get(b).unwrap()), full.db);
}

/// One output row per image equals those rows of the full layer, and so do the gradients of a
/// loss that only reads those rows (vision: the class token; causal text: any position).
#[test]
fn pooled_rows_equal_the_full_layer_at_those_rows() {
    for (causal, rows) in [(false, vec![0, 0]), (true, vec![16, 3]), (true, vec![0, 9])] {
        let case = Case {
            causal,
            dropout: 0.5,
            ..BASE
        };
        let inp = inputs(case, 21);
        let ops = Operands::new(&inp, DType::F32);
        let (w, cfg) = (&ops.w, config(case));
        let (x, a, b) = (&ops.x, &ops.a, &ops.b);
        let ad = || ops.adapters(dropout_of(case));
        let g = inp.g.to_dtype(DType::F32).unwrap();
        let g_rows: Vec<Tensor> = rows
            .iter()
            .enumerate()
            .map(|(i, r)| g.get(i).unwrap().get(*r).unwrap())
            .collect();
        let g_rows = Tensor::stack(&g_rows, 0).unwrap().unsqueeze(1).unwrap();

        let full = block(x, w, cfg, ad()).unwrap();
        let picked: Vec<Tensor> = rows
            .iter()
            .enumerate()
            .map(|(i, r)| full.get(i).unwrap().get(*r).unwrap())
            .collect();
        let picked = Tensor::stack(&picked, 0).unwrap().unsqueeze(1).unwrap();
        let full_grads = (&picked * &g_rows)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();

        let pooled = dgs::ops::block::block_pooled(x, w, cfg, ad(), &rows).unwrap();
        assert_eq!(pooled.dims(), &[2, 1, case.channels]);
        let grads = (&pooled * &g_rows)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let what = format!("pooled rows {rows:?}, causal {causal}");
        assert_close(
            &format!("{what}: output"),
            &flat(&pooled),
            &flat(&picked),
            F32_TOL,
        );
        for (name, v) in [("input", x), ("A", a), ("B", b)] {
            let (got, want) = (
                flat(grads.get(v).unwrap()),
                flat(full_grads.get(v).unwrap()),
            );
            assert_close(&format!("{what}: {name} gradient"), &got, &want, F32_TOL);
        }
    }
}

/// Without adapters the layer still passes the input's gradient (a frozen layer between
/// trainable ones): equal to the reference's with zero adapters.
#[test]
fn a_layer_without_adapters_passes_the_input_gradient() {
    let case = Case {
        causal: true,
        ..BASE
    };
    let mut inp = inputs(case, 31);
    (inp.a, inp.b) = (inp.a.zeros_like().unwrap(), inp.b.zeros_like().unwrap());
    let want = run_reference(case, &inp);
    let ops = Operands::new(&inp, DType::F32);
    let out = block(&ops.x, &ops.w, config(case), None).unwrap();
    let loss = (out.to_dtype(DType::F64).unwrap() * &inp.g)
        .unwrap()
        .sum_all()
        .unwrap();
    let dx = flat(
        loss.backward()
            .unwrap()
            .get(&ops.x)
            .expect("an input gradient"),
    );
    assert_close("no adapters: output", &flat(&out), &want.out, F32_TOL);
    assert_close("no adapters: input gradient", &dx, &want.dx, F32_TOL);
}

/// The CPU forward keeps a transposed copy of the projections: a clone whose weights are then
/// replaced must compute with the new weights, not the copy the original made.
#[test]
fn a_clone_with_new_weights_does_not_reuse_the_copy() {
    let case = BASE;
    let (first, second) = (inputs(case, 41), inputs(case, 42));
    let ops = Operands::new(&first, DType::F32);
    block(&ops.x, &ops.w, config(case), None).unwrap();
    let mut cloned = (*ops.w).clone();
    let new = cast_weights(&second.w, DType::F32);
    (cloned.ln1, cloned.qkv, cloned.out) = (new.ln1, new.qkv, new.out);
    (cloned.ln2, cloned.fc1, cloned.fc2) = (new.ln2, new.fc1, new.fc2);
    let fresh = Arc::new(cast_weights(&second.w, DType::F32));
    let (cloned, x) = (Arc::new(cloned), ops.x.as_tensor());
    let got = flat(&block(x, &cloned, config(case), None).unwrap());
    let want = flat(&block(x, &fresh, config(case), None).unwrap());
    assert!(
        got == want,
        "the clone computed with the original's projections"
    );
}

/// Operands of the wrong shape are refused with what was expected.
#[test]
fn mis_shaped_operands_are_refused() {
    let inp = inputs(BASE, 1);
    let ops = Operands::new(&inp, DType::F32);
    let (w, cfg) = (&ops.w, config(BASE));
    let (x, a) = (ops.x.as_tensor(), ops.a.as_tensor());
    // B given as [3, r, C], the shape of A: same element count, wrong layout.
    let ad = Adapters {
        a,
        b: a,
        scale: 1.0,
        dropout: None,
        images: None,
    };
    let e = block(x, w, cfg, Some(ad)).unwrap_err().to_string();
    assert!(e.contains("expected [3, r, 24] and [3, 24, r]"), "{e}");
    for images in [0, 3] {
        let ad = Adapters {
            images: Some(images),
            ..ops.adapters(None).expect("adapters")
        };
        let e = block(x, w, cfg, Some(ad)).unwrap_err().to_string();
        assert!(
            e.contains(&format!("adapters on {images} images of a batch of 2")),
            "{e}"
        );
    }
    let bad_heads = BlockConfig { heads: 5, ..cfg };
    let e = block(x, w, bad_heads, None).unwrap_err().to_string();
    assert!(e.contains("24 channels, 5 heads"), "{e}");
    let narrow = x.narrow(2, 0, 20).unwrap();
    let e = block(&narrow, w, cfg, ops.adapters(None))
        .unwrap_err()
        .to_string();
    assert!(e.contains("expected"), "{e}");
    let e = dgs::ops::block::block_pooled(x, w, cfg, None, &[0, 17])
        .unwrap_err()
        .to_string();
    assert!(e.contains("pooled rows [0, 17]"), "{e}");
}

#[cfg(feature = "cuda")]
#[path = "block/cuda.rs"]
mod cuda;
#[path = "block/pair.rs"]
mod pair;
