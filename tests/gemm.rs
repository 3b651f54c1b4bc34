//! The layer's matrix products through cuBLASLt (`ops::block::cuda::Gemms`) against a float64
//! product of the same rounded operands: f32 (no TF32), f16 and bf16; every transpose; with and
//! without the bias epilogue and the β = 1 residual; CLIP's shapes and awkward ones; plans reused
//! across calls. GPU cases, run in a DGS_GPU_TESTS=1 build (docs/gpu.md).
#![cfg(feature = "cuda-kernels")]

mod common;

/// The GPU cases live in `cuda` so the GPU check's `cuda::` filter selects them.
mod cuda {
    use std::sync::Arc;

    use dgs::ops::block::cuda::{BlockKernels, GemmOperands, GemmShape, Gemms};
    use dgs::surgery::Element;
    use dgs::surgery::rng::SplitMix64;
    use dgs::surgery::verify::{Magnitude, random_elems};

    use super::common;
    use crate::for_each_dtype;

    fn gemms() -> Gemms {
        let backend = common::cuda_backend();
        let ctx = backend.surgery().context().clone();
        let kernels = Arc::new(BlockKernels::with_context(ctx).expect("layer kernels load"));
        Gemms::new(backend.stream().clone(), kernels).expect("cuBLASLt loads")
    }

    /// Element `(r, c)` of a row-major `[rows, cols]` matrix stored transposed or not.
    fn at(v: &[f64], transposed: bool, rows: usize, cols: usize, r: usize, c: usize) -> f64 {
        if transposed {
            v[c * rows + r]
        } else {
            v[r * cols + c]
        }
    }

    fn check<T: Element>(g: &Gemms, shape: GemmShape, bias: bool, residual: bool, seed: u64) {
        let GemmShape {
            m,
            n,
            k,
            a_transposed,
            b_transposed,
        } = shape;
        let s = g.stream();
        let mut rng = SplitMix64::new(seed);
        let a: Vec<T> = random_elems(&mut rng, m * k, Magnitude::Normal(1.0));
        let b: Vec<T> = random_elems(&mut rng, k * n, Magnitude::Normal(1.0));
        let bias_v: Vec<T> = random_elems(&mut rng, n, Magnitude::Normal(1.0));
        let res_v: Vec<T> = random_elems(&mut rng, m * n, Magnitude::Normal(1.0));
        let wide = |v: &[T]| v.iter().map(|e| e.to_f64()).collect::<Vec<_>>();
        let (af, bf, biasf, resf) = (wide(&a), wide(&b), wide(&bias_v), wide(&res_v));
        let up = |v: &[T]| s.clone_htod(v).expect("upload");
        let (ad, bd, biasd, resd) = (up(&a), up(&b), up(&bias_v), up(&res_v));
        let (av, bv, biasv, resv) = (ad.slice(..), bd.slice(..), biasd.slice(..), resd.slice(..));
        let ops = GemmOperands {
            a: &av,
            b: &bv,
            bias: bias.then_some(&biasv),
            residual: residual.then_some(&resv),
        };
        let mut out = s.alloc_zeros::<T>(m * n).expect("alloc");
        for _ in 0..2 {
            // Twice: the second call reuses the cached plan.
            g.matmul(shape, &ops, &mut out.slice_mut(..))
                .expect("matmul");
        }
        let got = wide(&s.clone_dtoh(&out).expect("download"));
        let ulp = match T::DTYPE {
            dgs::surgery::DType::F32 => f64::from(f32::EPSILON),
            dgs::surgery::DType::F16 => 2f64.powi(-10),
            dgs::surgery::DType::BF16 => 2f64.powi(-7),
        };
        for r in 0..m {
            for c in 0..n {
                let (mut want, mut scale) = (0.0, 0.0);
                for j in 0..k {
                    let p = at(&af, a_transposed, m, k, r, j) * at(&bf, b_transposed, k, n, j, c);
                    want += p;
                    scale += p.abs();
                }
                if bias {
                    want += biasf[c];
                    scale += biasf[c].abs();
                }
                if residual {
                    want += resf[r * n + c];
                    scale += resf[r * n + c].abs();
                }
                let allowed = 2.0 * ulp * want.abs() + 1e-5 * scale + 1e-30;
                let g = got[r * n + c];
                assert!(
                    approx::abs_diff_eq!(g, want, epsilon = allowed),
                    "{} {shape:?} bias {bias} residual {residual} [{r}, {c}]: got {g}, want {want}, \
                     allowed {allowed:e}",
                    T::DTYPE
                );
            }
        }
    }

    #[test]
    #[cfg_attr(
        not(dgs_gpu_tests),
        ignore = "skipped: no CUDA device (GPU cases run in a DGS_GPU_TESTS=1 build, see docs/gpu.md)"
    )]
    fn products_match_float64() {
        let g = gemms();
        let shapes = [
            (1, 1, 8),
            (7, 16, 24),
            (50, 768, 768),
            (257, 64, 128),
            (77, 512, 2048),
        ];
        for (i, (m, n, k)) in shapes.into_iter().enumerate() {
            for (a_transposed, b_transposed) in [(false, true), (false, false), (true, false)] {
                let shape = GemmShape {
                    m,
                    n,
                    k,
                    a_transposed,
                    b_transposed,
                };
                for (bias, residual) in [(false, false), (true, false), (true, true), (false, true)]
                {
                    for_each_dtype!(T => check::<T>(&g, shape, bias, residual, i as u64));
                }
            }
        }
    }

    #[test]
    #[cfg_attr(
        not(dgs_gpu_tests),
        ignore = "skipped: no CUDA device (GPU cases run in a DGS_GPU_TESTS=1 build, see docs/gpu.md)"
    )]
    fn mis_sized_operands_are_refused_before_any_call() {
        let g = gemms();
        let s = g.stream();
        let a = s.alloc_zeros::<f32>(6).expect("alloc");
        let b = s.alloc_zeros::<f32>(6).expect("alloc");
        let mut out = s.alloc_zeros::<f32>(5).expect("alloc");
        let (av, bv) = (a.slice(..), b.slice(..));
        let ops = GemmOperands {
            a: &av,
            b: &bv,
            bias: None,
            residual: None,
        };
        let shape = GemmShape {
            m: 2,
            n: 2,
            k: 3,
            a_transposed: false,
            b_transposed: true,
        };
        let err = g
            .matmul(shape, &ops, &mut out.slice_mut(..))
            .expect_err("out is short");
        assert!(err.to_string().contains("`out`"), "{err}");
    }
}
