//! The fused transformer ops with a backward pass (`dgs::ops::{layer_norm, softmax_last_dim}`)
//! against a float64 reference, forward and input gradient, on the CPU and (in a DGS_GPU_TESTS=1
//! build with `--features cuda`) on CUDA: one test body for both.

use approx::abs_diff_eq;
use candle_core::{DType, Device, Tensor, Var};
use dgs::surgery::rng::SplitMix64;

/// Per-dtype `atol + rtol·|ref|` (bf16 and f16 keep 8 and 11 significant bits; the CUDA softmax
/// kernel also rounds each exponential to the dtype before the f32 sum).
fn tolerance(dtype: DType) -> (f64, f64) {
    match dtype {
        DType::F32 => (2e-5, 2e-4),
        DType::F16 => (3e-3, 8e-3),
        _ => (2e-2, 4e-2),
    }
}

fn random(n: usize, scale: f64, seed: u64) -> Vec<f64> {
    let mut rng = SplitMix64::new(seed);
    (0..n).map(|_| scale * rng.normal()).collect()
}

/// `values` rounded to `dtype`, as an f64 CPU tensor (what the op actually sees).
fn rounded(values: &[f64], shape: (usize, usize), dtype: DType) -> Tensor {
    Tensor::from_vec(values.to_vec(), shape, &Device::Cpu)
        .and_then(|t| t.to_dtype(dtype))
        .and_then(|t| t.to_dtype(DType::F64))
        .unwrap()
}

fn assert_close(what: &str, got: &Tensor, want: &Tensor, (atol, rtol): (f64, f64)) {
    let got: Vec<f64> = got
        .to_dtype(DType::F64)
        .and_then(|t| t.to_device(&Device::Cpu))
        .and_then(|t| t.flatten_all())
        .and_then(|t| t.to_vec1())
        .unwrap();
    let want: Vec<f64> = want.flatten_all().and_then(|t| t.to_vec1()).unwrap();
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        let epsilon = atol + rtol * w.abs();
        assert!(
            g.is_finite() == w.is_finite() && abs_diff_eq!(*g, *w, epsilon = epsilon),
            "{what}: element {i}: got {g}, want {w}, allowed |diff| {epsilon:e}"
        );
    }
}

/// Forward and input gradient of `op` on `device` in `dtype` against `reference` in f64 on the
/// CPU; the loss is `Σ y ⊙ w` with a fixed random `w`.
fn check(
    what: &str,
    device: &Device,
    dtype: DType,
    shape: (usize, usize),
    scale: f64,
    op: &dyn Fn(&Tensor) -> candle_core::Result<Tensor>,
    reference: &dyn Fn(&Tensor) -> candle_core::Result<Tensor>,
) {
    let n = shape.0 * shape.1;
    let x = rounded(&random(n, scale, 1), shape, dtype);
    let w = rounded(&random(n, 1.0, 2), shape, dtype);

    let xr = Var::from_tensor(&x).unwrap();
    let yr = reference(xr.as_tensor()).unwrap();
    let gr = (&yr * &w).unwrap().sum_all().unwrap().backward().unwrap();
    let gr = gr.get(xr.as_tensor()).unwrap();

    let xd = Var::from_tensor(&x.to_dtype(dtype).unwrap().to_device(device).unwrap()).unwrap();
    let wd = w
        .to_dtype(DType::F32)
        .and_then(|t| t.to_device(device))
        .unwrap();
    let yd = op(xd.as_tensor()).unwrap();
    assert_eq!(yd.dtype(), dtype);
    let loss = (yd.to_dtype(DType::F32).unwrap() * &wd)
        .unwrap()
        .sum_all()
        .unwrap();
    let gd = loss.backward().unwrap();
    let gd = gd.get(xd.as_tensor()).expect("a gradient for the input");
    let tag = format!("{what} {dtype:?} {shape:?} ×{scale}");
    let (atol, rtol) = tolerance(dtype);
    assert_close(&format!("{tag} forward"), &yd, &yr, (atol, rtol));
    // The gradient's scale is that of `w` times the op's Jacobian: compare relative to its peak.
    // Both backwards start from the output saved in the dtype (as PyTorch's do), whose rounding
    // the `g − Σ g ⊙ y` and `mean` cancellations amplify: half types get 4× the forward bound.
    let peak = gr
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f64>()
        .unwrap();
    let gr_scaled = (gr / peak.max(1e-30)).unwrap();
    let gd_scaled = (gd
        .to_dtype(DType::F64)
        .unwrap()
        .to_device(&Device::Cpu)
        .unwrap()
        / peak.max(1e-30))
    .unwrap();
    let k = if dtype == DType::F32 { 1.0 } else { 4.0 };
    assert_close(
        &format!("{tag} gradient"),
        &gd_scaled,
        &gr_scaled,
        (k * atol, k * rtol),
    );
}

const SHAPES: [(usize, usize); 9] = [
    (1, 1),
    (3, 7),
    (5, 31),
    (4, 32),
    (4, 33),
    (2, 257),
    (3, 1023),
    (2, 1024),
    (2, 1025),
];

fn softmax_case(device: &Device) {
    let reference = |x: &Tensor| candle_nn::ops::softmax(x, candle_core::D::Minus1);
    for dtype in [DType::F32, DType::F16, DType::BF16] {
        for shape in SHAPES {
            for scale in [1.0, 30.0] {
                check(
                    "softmax",
                    device,
                    dtype,
                    shape,
                    scale,
                    &dgs::ops::softmax_last_dim,
                    &reference,
                );
            }
        }
    }
}

fn layer_norm_case(device: &Device) {
    for dtype in [DType::F32, DType::F16, DType::BF16] {
        for shape in SHAPES {
            let cols = shape.1;
            let gamma = random(cols, 1.0, 3);
            let beta = random(cols, 0.5, 4);
            let (g64, b64) = (
                rounded(&gamma, (1, cols), dtype).reshape(cols).unwrap(),
                rounded(&beta, (1, cols), dtype).reshape(cols).unwrap(),
            );
            let on = |t: &Tensor| t.to_dtype(dtype).and_then(|t| t.to_device(device)).unwrap();
            let (gd, bd) = (on(&g64), on(&b64));
            let op = |x: &Tensor| dgs::ops::layer_norm(x, &gd, &bd, 1e-5);
            let reference = |x: &Tensor| {
                let mean = x.mean_keepdim(candle_core::D::Minus1)?;
                let c = x.broadcast_sub(&mean)?;
                let var = c.sqr()?.mean_keepdim(candle_core::D::Minus1)?;
                c.broadcast_div(&(var + 1e-5)?.sqrt()?)?
                    .broadcast_mul(&g64)?
                    .broadcast_add(&b64)
            };
            // A one-column row normalises to 0 whatever its value: its gradient is 0 too.
            for scale in [1.0, 1e3] {
                check("layer norm", device, dtype, shape, scale, &op, &reference);
            }
        }
    }
}

#[test]
fn layer_norm_rejects_trainable_weights_and_mixed_dtypes() {
    let x = Tensor::ones((2, 4), DType::F32, &Device::Cpu).unwrap();
    let w = Var::ones(4, DType::F32, &Device::Cpu).unwrap();
    let b = Tensor::zeros(4, DType::F32, &Device::Cpu).unwrap();
    let e = dgs::ops::layer_norm(&x, w.as_tensor(), &b, 1e-5).unwrap_err();
    assert!(e.to_string().contains("trainable"), "{e}");
    let w16 = Tensor::ones(4, DType::F16, &Device::Cpu).unwrap();
    let e = dgs::ops::layer_norm(&x, &w16, &b, 1e-5).unwrap_err();
    assert!(e.to_string().contains("dtypes must match"), "{e}");
    let w5 = Tensor::ones(5, DType::F32, &Device::Cpu).unwrap();
    let b5 = Tensor::zeros(5, DType::F32, &Device::Cpu).unwrap();
    let e = dgs::ops::layer_norm(&x, &w5, &b5, 1e-5).unwrap_err();
    assert!(e.to_string().contains("rows of 4"), "{e}");
}

mod cpu {
    #[test]
    fn softmax_matches_the_f64_reference() {
        super::softmax_case(&candle_core::Device::Cpu);
    }

    #[test]
    fn layer_norm_matches_the_f64_reference() {
        super::layer_norm_case(&candle_core::Device::Cpu);
    }
}

#[cfg(feature = "cuda")]
mod cuda {
    fn device() -> candle_core::Device {
        candle_core::Device::new_cuda(0).expect("a CUDA device")
    }

    #[test]
    #[cfg_attr(
        not(dgs_gpu_tests),
        ignore = "skipped: no CUDA device (GPU cases run in a DGS_GPU_TESTS=1 build, see docs/gpu.md)"
    )]
    fn softmax_matches_the_f64_reference() {
        super::softmax_case(&device());
    }

    #[test]
    #[cfg_attr(
        not(dgs_gpu_tests),
        ignore = "skipped: no CUDA device (GPU cases run in a DGS_GPU_TESTS=1 build, see docs/gpu.md)"
    )]
    fn layer_norm_matches_the_f64_reference() {
        super::layer_norm_case(&device());
    }
}
