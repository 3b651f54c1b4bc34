//! The DGS hook as a candle op: identity forward, projected backward, on the CPU.

use approx::abs_diff_eq;
use candle_core::{DType, Device, Tensor, Var};
use dgs::ops::{orthogonal_suppression, project_off_harm};

fn rand(shape: (usize, usize), seed: u64) -> Tensor {
    let mut rng = dgs::surgery::rng::SplitMix64::new(seed);
    let v: Vec<f32> = (0..shape.0 * shape.1)
        .map(|_| rng.normal() as f32)
        .collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

/// `w − (w·ĥ) ĥ` per row, in f64 tensor ops: the formula the backward must equal.
fn projected(w: &Tensor, harm: &Tensor, eps: f64) -> Tensor {
    let (w, h) = (
        w.to_dtype(DType::F64).unwrap(),
        harm.to_dtype(DType::F64).unwrap(),
    );
    let r = h.relu().unwrap();
    let norm = r.sqr().unwrap().sum_keepdim(1).unwrap().sqrt().unwrap();
    let hhat = r.broadcast_div(&(norm + eps).unwrap()).unwrap();
    let along = (&w * &hhat).unwrap().sum_keepdim(1).unwrap();
    (w - hhat.broadcast_mul(&along).unwrap()).unwrap()
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    let d = (a.to_dtype(DType::F64).unwrap() - b.to_dtype(DType::F64).unwrap()).unwrap();
    d.abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f64>()
        .unwrap()
}

#[test]
fn forward_is_the_identity_and_backward_is_the_hook() {
    for (rows, dim) in [(1, 1), (7, 33), (32, 768)] {
        let f = Var::from_tensor(&rand((rows, dim), 1)).unwrap();
        let harm = rand((rows, dim), 2);
        let w = rand((rows, dim), 3);
        let out = orthogonal_suppression(f.as_tensor(), &harm, 1e-6).unwrap();
        assert_eq!(max_abs_diff(&out, f.as_tensor()), 0.0);
        let loss = (&out * &w).unwrap().sum_all().unwrap();
        let grads = loss.backward().unwrap();
        let g = grads.get(f.as_tensor()).expect("features get a gradient");
        let expected = projected(&w, &harm, 1e-6);
        assert!(
            max_abs_diff(g, &expected) < 1e-5,
            "{rows}x{dim}: {}",
            max_abs_diff(g, &expected)
        );
        assert!(
            grads.get(&harm).is_none(),
            "harm must not receive a gradient"
        );
    }
}

/// The gradient the hook delivers for a linear loss `Σ w·f` is the true gradient of the
/// projected objective `f ↦ Σ w·P(f)`: check that by central finite differences.
#[test]
fn backward_matches_finite_differences_of_the_projected_objective() {
    let (rows, dim) = (3, 17);
    let f0 = rand((rows, dim), 4);
    let harm = rand((rows, dim), 5);
    let w = rand((rows, dim), 6);
    let objective = |f: &Tensor| -> f64 {
        let p = project_off_harm(&f.to_dtype(DType::F32).unwrap(), &harm, 1e-6).unwrap();
        (p.to_dtype(DType::F64).unwrap() * w.to_dtype(DType::F64).unwrap())
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f64>()
            .unwrap()
    };
    let f = Var::from_tensor(&f0).unwrap();
    let loss = (orthogonal_suppression(f.as_tensor(), &harm, 1e-6).unwrap() * &w)
        .unwrap()
        .sum_all()
        .unwrap();
    let hook_grad = loss.backward().unwrap().get(f.as_tensor()).unwrap().clone();
    let hook: Vec<f32> = hook_grad.flatten_all().unwrap().to_vec1().unwrap();
    let base: Vec<f32> = f0.flatten_all().unwrap().to_vec1().unwrap();
    let h = 1e-2f32;
    for i in [0, 5, 17, 40, rows * dim - 1] {
        let mut plus = base.clone();
        let mut minus = base.clone();
        plus[i] += h;
        minus[i] -= h;
        let t = |v: Vec<f32>| Tensor::from_vec(v, (rows, dim), &Device::Cpu).unwrap();
        let fd = (objective(&t(plus)) - objective(&t(minus))) / (2.0 * f64::from(h));
        assert!(
            abs_diff_eq!(fd, f64::from(hook[i]), epsilon = 2e-3),
            "element {i}: fd {fd}, hook {}",
            hook[i]
        );
    }
    // The projection's own backward (used for double differentiation) is the same map.
    let g = Var::from_tensor(&f0).unwrap();
    let l = (project_off_harm(g.as_tensor(), &harm, 1e-6).unwrap() * &w)
        .unwrap()
        .sum_all()
        .unwrap();
    let pg = l.backward().unwrap().get(g.as_tensor()).unwrap().clone();
    assert!(max_abs_diff(&pg, &hook_grad) < 1e-6);
}

#[test]
fn half_precision_and_leading_dimensions() {
    let f = rand((6, 40), 7).reshape((2, 3, 40)).unwrap();
    let harm = rand((6, 40), 8).reshape((2, 3, 40)).unwrap();
    for dt in [DType::F16, DType::BF16] {
        let (fd, hd) = (f.to_dtype(dt).unwrap(), harm.to_dtype(dt).unwrap());
        let p = project_off_harm(&fd, &hd, 1e-6).unwrap();
        assert_eq!(p.dtype(), dt);
        let expected = projected(
            &fd.reshape((6, 40)).unwrap(),
            &hd.reshape((6, 40)).unwrap(),
            1e-6,
        );
        let tol = if dt == DType::F16 { 1e-2 } else { 5e-2 };
        assert!(
            max_abs_diff(&p.reshape((6, 40)).unwrap(), &expected) < tol,
            "{dt:?}"
        );
    }
}

#[test]
fn bad_inputs_are_clear_errors() {
    let f = rand((4, 8), 9);
    let e = project_off_harm(&f, &rand((4, 7), 10), 1e-6)
        .unwrap_err()
        .to_string();
    assert!(e.contains("must match"), "{e}");
    let e = project_off_harm(
        &f.to_dtype(DType::U8).unwrap(),
        &f.to_dtype(DType::U8).unwrap(),
        1e-6,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("expected f32, f16 or bf16"), "{e}");
    let e = project_off_harm(&f, &f.to_dtype(DType::F16).unwrap(), 1e-6)
        .unwrap_err()
        .to_string();
    assert!(e.contains("of one dtype"), "{e}");
    let e = project_off_harm(&f, &f, -1.0).unwrap_err().to_string();
    assert!(e.contains("eps"), "{e}");
    let e = project_off_harm(&f.t().unwrap(), &f.t().unwrap(), 1e-6)
        .unwrap_err()
        .to_string();
    assert!(e.contains("contiguous"), "{e}");
}

/// The stock-op chain (the benchmark's comparison path) computes the same surgery.
#[test]
fn the_op_chain_matches_the_fused_op() {
    for (rows, dim) in [(1, 1), (5, 33), (32, 768)] {
        let f = Var::from_tensor(&rand((rows, dim), 21)).unwrap();
        let harm = rand((rows, dim), 22);
        let w = rand((rows, dim), 23);
        let y = dgs::ops::orthogonal_suppression_op_chain(f.as_tensor(), &harm, 1e-6).unwrap();
        assert!(
            max_abs_diff(&y, f.as_tensor()) < 1e-5,
            "forward is f up to rounding"
        );
        let g = (y * &w).unwrap().sum_all().unwrap().backward().unwrap();
        let want = projected(&w, &harm, 1e-6);
        let got = g.get(f.as_tensor()).unwrap();
        assert!(max_abs_diff(got, &want) < 1e-5, "{rows}×{dim}");
    }
}
