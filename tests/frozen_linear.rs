//! `dgs::ops::frozen_linear`: candle-nn's forward exactly, the input gradient of plain autograd
//! (against a float64 reference), and no weight or bias gradient computed — on the CPU and (in a
//! DGS_GPU_TESTS=1 build with `--features cuda`) on CUDA, one test body for both.

use approx::abs_diff_eq;
use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Module, Tensor, Var};
use candle_nn::Linear;
use dgs::surgery::rng::SplitMix64;

fn random(shape: &[usize], seed: u64) -> Tensor {
    let mut rng = SplitMix64::new(seed);
    let n: usize = shape.iter().product();
    let v: Vec<f64> = (0..n).map(|_| rng.normal()).collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

fn on(t: &Tensor, dtype: DType, device: &Device) -> Tensor {
    t.to_dtype(dtype).and_then(|t| t.to_device(device)).unwrap()
}

/// Largest absolute difference, in f64 (NaN if either holds one).
fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    let d = (a.to_dtype(DType::F64).unwrap() - b.to_dtype(DType::F64).unwrap()).unwrap();
    let v = d
        .flatten_all()
        .unwrap()
        .to_device(&Device::Cpu)
        .unwrap()
        .to_vec1::<f64>()
        .unwrap();
    v.iter().fold(0.0, |m: f64, x| {
        if m.is_nan() || x.is_nan() {
            f64::NAN
        } else {
            m.max(x.abs())
        }
    })
}

/// Gradients whose shape is the weight's (either orientation): what plain autograd wastes.
fn weight_shaped(grads: &GradStore, out: usize, inp: usize) -> usize {
    grads
        .get_ids()
        .filter_map(|id| grads.get_id(*id))
        .filter(|t| t.dims() == [out, inp] || t.dims() == [inp, out])
        .count()
}

fn case(device: &Device) {
    // (input shape, out features): 1, odd, rank 2 and 3, a ViT-ish tile.
    let cases: [(&[usize], usize); 5] = [
        (&[1, 1], 1),
        (&[5, 3], 7),
        (&[2, 3, 33], 17),
        (&[3, 31, 64], 96),
        (&[2, 257, 40], 24),
    ];
    for dtype in [DType::F32, DType::F16, DType::BF16] {
        if device.is_cpu() && dtype == DType::BF16 {
            continue; // candle's CPU matmul has no bf16
        }
        let (atol, rtol) = match dtype {
            DType::F32 => (1e-5, 1e-4),
            DType::F16 => (2e-2, 2e-2),
            _ => (1e-1, 5e-2),
        };
        for (i, (shape, out)) in cases.into_iter().enumerate() {
            let inp = *shape.last().unwrap();
            let seed = 10 * i as u64;
            let (x64, w64, b64) = (
                random(shape, seed),
                random(&[out, inp], seed + 1),
                random(&[out], seed + 2),
            );
            let mut gshape = shape.to_vec();
            *gshape.last_mut().unwrap() = out;
            let g64 = random(&gshape, seed + 3);
            for bias in [true, false] {
                let tag = format!("{dtype:?} {shape:?}→{out} bias {bias}");
                let layer = |dt: DType, dev: &Device| {
                    Linear::new(on(&w64, dt, dev), bias.then(|| on(&b64, dt, dev)))
                };
                // float64 reference: plain candle autograd.
                let xr =
                    Var::from_tensor(&on(&x64, dtype, &Device::Cpu).to_dtype(DType::F64).unwrap())
                        .unwrap();
                let lr = Linear::new(
                    on(&w64, dtype, &Device::Cpu).to_dtype(DType::F64).unwrap(),
                    bias.then(|| on(&b64, dtype, &Device::Cpu).to_dtype(DType::F64).unwrap()),
                );
                let yr = lr.forward(xr.as_tensor()).unwrap();
                let gr = (&yr * &g64).unwrap().sum_all().unwrap().backward().unwrap();
                assert!(
                    weight_shaped(&gr, out, inp) >= 1 || out == inp,
                    "{tag}: the check can see waste"
                );

                let l = layer(dtype, device);
                let x = Var::from_tensor(&on(&x64, dtype, device)).unwrap();
                let y = dgs::ops::frozen_linear(&l, x.as_tensor()).unwrap();
                let plain = l.forward(&x.as_tensor().detach()).unwrap();
                assert_eq!(
                    max_diff(&y, &plain),
                    0.0,
                    "{tag}: the forward is candle-nn's"
                );
                let untracked = dgs::ops::frozen_linear(&l, &x.as_tensor().detach()).unwrap();
                assert!(!untracked.track_op());
                assert_eq!(
                    max_diff(&untracked, &plain),
                    0.0,
                    "{tag}: the untracked forward is candle-nn's"
                );
                let g = on(&g64, DType::F32, device);
                let grads = (y.to_dtype(DType::F32).unwrap() * g)
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .backward()
                    .unwrap();
                if out != inp {
                    assert_eq!(
                        weight_shaped(&grads, out, inp),
                        0,
                        "{tag}: no weight gradient"
                    );
                }
                let dx = grads.get(x.as_tensor()).expect("an input gradient");
                let want = gr
                    .get(xr.as_tensor())
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1::<f64>()
                    .unwrap();
                let got = dx
                    .to_dtype(DType::F64)
                    .and_then(|t| t.to_device(&Device::Cpu))
                    .and_then(|t| t.flatten_all())
                    .and_then(|t| t.to_vec1::<f64>())
                    .unwrap();
                let scale = want.iter().fold(1e-30f64, |m, v| m.max(v.abs()));
                for (k, (a, b)) in got.iter().zip(&want).enumerate() {
                    let epsilon = scale * (atol + rtol * (b / scale).abs());
                    assert!(
                        a.is_finite() && abs_diff_eq!(*a, *b, epsilon = epsilon),
                        "{tag}: dx[{k}] = {a}, want {b}, allowed |diff| {epsilon:e}"
                    );
                }
            }
        }
    }
}

#[test]
fn untracked_inputs_take_the_plain_path_and_trainable_weights_keep_their_gradients() {
    let dev = Device::Cpu;
    let w = Tensor::ones((3, 2), DType::F32, &dev).unwrap();
    let x = Tensor::ones((4, 2), DType::F32, &dev).unwrap();
    let y = dgs::ops::frozen_linear(&Linear::new(w.clone(), None), &x).unwrap();
    assert!(!y.track_op());
    assert_eq!(y.to_vec2::<f32>().unwrap(), vec![vec![2.0f32; 3]; 4]);
    let trainable = Var::ones((3, 2), DType::F32, &dev).unwrap();
    let xv = Var::ones((4, 2), DType::F32, &dev).unwrap();
    let layer = Linear::new(trainable.as_tensor().clone(), None);
    let y = dgs::ops::frozen_linear(&layer, xv.as_tensor()).unwrap();
    let grads = y.sum_all().unwrap().backward().unwrap();
    let gw = grads
        .get(trainable.as_tensor())
        .expect("a trainable weight keeps its gradient");
    assert_eq!(gw.to_vec2::<f32>().unwrap(), vec![vec![4.0f32; 2]; 3]);
    assert!(grads.get(xv.as_tensor()).is_some());
}

#[test]
fn cpu_matches_plain_autograd_without_weight_gradients() {
    case(&Device::Cpu);
}

#[cfg(feature = "cuda")]
mod cuda {
    #[test]
    #[cfg_attr(
        not(dgs_gpu_tests),
        ignore = "skipped: no CUDA device (GPU cases run in a DGS_GPU_TESTS=1 build, see docs/gpu.md)"
    )]
    fn matches_plain_autograd_without_weight_gradients() {
        super::case(&candle_core::Device::new_cuda(0).expect("a CUDA device"));
    }
}
