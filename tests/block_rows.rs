//! The layer's row-wise CUDA kernels (layer norm forward and backward, the MLP activations and
//! their derivatives) against their CPU twins (`ops::block::cpu_rows`) from the same rounded
//! inputs: f32, f16 and bf16, CLIP's widths and small ones, every activation. GPU cases, run in
//! a DGS_GPU_TESTS=1 build (docs/gpu.md).
#![cfg(feature = "cuda-kernels")]

mod common;

/// The GPU cases live in `cuda` so the GPU check's `cuda::` filter selects them.
mod cuda {
    use std::sync::Arc;

    use dgs::ops::block::Activation;
    use dgs::ops::block::cpu_rows;
    use dgs::ops::block::cuda::{BlockKernels, DeviceLayerNorm};
    use dgs::surgery::Element;
    use dgs::surgery::cuda::cudarc::driver::CudaStream;
    use dgs::surgery::rng::SplitMix64;
    use dgs::surgery::verify::{Magnitude, random_elems};

    use super::common;
    use crate::for_each_dtype;

    fn device() -> (BlockKernels, Arc<CudaStream>) {
        let backend = common::cuda_backend();
        let kernels = BlockKernels::with_context(backend.surgery().context().clone())
            .expect("layer kernels load");
        (kernels, backend.stream().clone())
    }

    fn widen<T: Element>(v: &[T]) -> Vec<f32> {
        v.iter().map(|e| e.to_f32()).collect()
    }

    /// `got` (rounded to `T`) against the f32 twin's `want`: two units of `T`'s last place
    /// relative, plus f32 summation-order noise at the row's scale.
    #[track_caller]
    fn assert_twin<T: Element>(what: &str, got: &[T], want: &[f32]) {
        let ulp = f64::from(match T::DTYPE {
            dgs::surgery::DType::F32 => f32::EPSILON,
            dgs::surgery::DType::F16 => 2f32.powi(-10),
            dgs::surgery::DType::BF16 => 2f32.powi(-7),
        });
        let scale = want.iter().fold(0f64, |m, v| m.max(f64::from(v.abs())));
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            let (g, w) = (g.to_f64(), f64::from(*w));
            let allowed = 2.0 * ulp * w.abs() + 1e-5 * scale + 1e-30;
            assert!(
                g.is_finite() == w.is_finite() && approx::abs_diff_eq!(g, w, epsilon = allowed),
                "{what} {}[{i}]: got {g}, want {w}, allowed |diff| {allowed:e}",
                T::DTYPE
            );
        }
    }

    const SHAPES: [(usize, usize); 6] =
        [(1, 8), (7, 512), (65, 768), (3, 1024), (2, 1280), (1, 2048)];

    fn check_layer_norm<T: Element>(k: &BlockKernels, s: &Arc<CudaStream>) {
        let mut rng = SplitMix64::new(3);
        for (rows, cols) in SHAPES {
            let n = rows * cols;
            let x: Vec<T> = random_elems(&mut rng, n, Magnitude::Normal(2.0));
            let w: Vec<T> = random_elems(&mut rng, cols, Magnitude::Normal(1.0));
            let b: Vec<T> = random_elems(&mut rng, cols, Magnitude::Normal(1.0));
            let dy: Vec<T> = random_elems(&mut rng, n, Magnitude::Normal(1.0));
            let dx0: Vec<T> = random_elems(&mut rng, n, Magnitude::Normal(1.0));
            let (mut want, mut want_stats) = (vec![0f32; n], vec![0f32; 2 * rows]);
            let (xf, wf, bf) = (widen(&x), widen(&w), widen(&b));
            cpu_rows::layer_norm(&xf, &wf, &bf, 1e-5, &mut want, &mut want_stats);
            let mut want_dx = widen(&dx0);
            cpu_rows::layer_norm_backward(&xf, &wf, &want_stats, &widen(&dy), &mut want_dx);

            let up = |v: &[T]| s.clone_htod(v).expect("upload");
            let (xd, wd, bd, dyd) = (up(&x), up(&w), up(&b), up(&dy));
            let (wv, bv) = (wd.slice(..), bd.slice(..));
            let ln = DeviceLayerNorm {
                weight: &wv,
                bias: &bv,
                eps: 1e-5,
            };
            let mut out = s.alloc_zeros::<T>(n).expect("alloc");
            let mut stats = s.alloc_zeros::<f32>(2 * rows).expect("alloc");
            k.layer_norm(
                s,
                &xd.slice(..),
                &ln,
                &mut out.slice_mut(..),
                Some(&mut stats.slice_mut(..)),
            )
            .expect("layer norm");
            let mut dx = up(&dx0);
            k.layer_norm_backward(
                s,
                &xd.slice(..),
                &wv,
                &stats.slice(..),
                &dyd.slice(..),
                &mut dx.slice_mut(..),
            )
            .expect("layer norm backward");
            let what = format!("{rows}x{cols}");
            assert_twin::<T>(
                &format!("LN {what}"),
                &s.clone_dtoh(&out).expect("down"),
                &want,
            );
            assert_twin::<f32>(
                &format!("LN stats {what}"),
                &s.clone_dtoh(&stats).expect("down"),
                &want_stats,
            );
            assert_twin::<T>(
                &format!("LN backward {what}"),
                &s.clone_dtoh(&dx).expect("down"),
                &want_dx,
            );
        }
    }

    fn check_activations<T: Element>(k: &BlockKernels, s: &Arc<CudaStream>) {
        let mut rng = SplitMix64::new(4);
        for act in [
            Activation::QuickGelu,
            Activation::Gelu,
            Activation::GeluTanh,
            Activation::Relu,
        ] {
            for n in [1, 7, 4096, 100_003] {
                let h: Vec<T> = random_elems(&mut rng, n, Magnitude::Normal(3.0));
                let g: Vec<T> = random_elems(&mut rng, n, Magnitude::Normal(1.0));
                let mut want = vec![0f32; n];
                cpu_rows::activation(act, &widen(&h), &mut want);
                let mut want_g = widen(&g);
                cpu_rows::activation_backward(act, &widen(&h), &mut want_g);
                let hd = s.clone_htod(&h).expect("upload");
                let mut out = s.alloc_zeros::<T>(n).expect("alloc");
                k.activation(s, act, &hd.slice(..), &mut out.slice_mut(..))
                    .expect("activation");
                let mut gd = s.clone_htod(&g).expect("upload");
                k.activation_backward(s, act, &hd.slice(..), &mut gd.slice_mut(..))
                    .expect("activation backward");
                assert_twin::<T>(
                    &format!("{act:?} n={n}"),
                    &s.clone_dtoh(&out).expect("down"),
                    &want,
                );
                assert_twin::<T>(
                    &format!("{act:?}' n={n}"),
                    &s.clone_dtoh(&gd).expect("down"),
                    &want_g,
                );
            }
        }
    }

    #[test]
    #[cfg_attr(
        not(dgs_gpu_tests),
        ignore = "skipped: no CUDA device (GPU cases run in a DGS_GPU_TESTS=1 build, see docs/gpu.md)"
    )]
    fn row_kernels_match_their_cpu_twins() {
        let (k, s) = device();
        for_each_dtype!(T => check_layer_norm::<T>(&k, &s));
        for_each_dtype!(T => check_activations::<T>(&k, &s));
    }

    #[test]
    #[cfg_attr(
        not(dgs_gpu_tests),
        ignore = "skipped: no CUDA device (GPU cases run in a DGS_GPU_TESTS=1 build, see docs/gpu.md)"
    )]
    fn unsupported_widths_are_refused() {
        let (k, stream) = device();
        let s = &stream;
        // Not whole 16-byte vectors of f32; wider than the kernel's register row.
        for cols in [10, 2056] {
            let x = s.alloc_zeros::<f32>(2 * cols).expect("alloc");
            let w = s.alloc_zeros::<f32>(cols).expect("alloc");
            let (wv, bv) = (w.slice(..), w.slice(..));
            let ln = DeviceLayerNorm {
                weight: &wv,
                bias: &bv,
                eps: 1e-5,
            };
            let mut out = s.alloc_zeros::<f32>(2 * cols).expect("alloc");
            let err = k
                .layer_norm(s, &x.slice(..), &ln, &mut out.slice_mut(..), None)
                .expect_err("refused");
            assert!(err.to_string().contains("16 bytes"), "{err}");
        }
    }

    #[test]
    #[cfg_attr(
        not(dgs_gpu_tests),
        ignore = "skipped: no CUDA device (GPU cases run in a DGS_GPU_TESTS=1 build, see docs/gpu.md)"
    )]
    fn misaligned_rows_are_refused_before_any_launch() {
        let (k, stream) = device();
        let s = &stream;
        let cols = 16;
        let x = s.alloc_zeros::<f32>(2 * cols + 1).expect("alloc");
        let w = s.alloc_zeros::<f32>(cols).expect("alloc");
        let (wv, bv) = (w.slice(..), w.slice(..));
        let ln = DeviceLayerNorm {
            weight: &wv,
            bias: &bv,
            eps: 1e-5,
        };
        let mut out = s.alloc_zeros::<f32>(2 * cols).expect("alloc");
        // Rows that start one element (4 bytes) past an aligned address.
        let err = k
            .layer_norm(s, &x.slice(1..), &ln, &mut out.slice_mut(..), None)
            .expect_err("refused");
        assert!(err.to_string().contains("16-byte aligned"), "{err}");
    }
}
