//! The layer's matrix products through cuBLASLt (`ops::block::cuda::Gemms`) against a float64
//! product of the same rounded operands: f32 (no TF32), f16 and bf16; every transpose; with and
//! without the bias epilogue and the β = 1 residual; CLIP's shapes and awkward ones; plans reused
//! across calls. GPU cases, run in a DGS_GPU_TESTS=1 build (docs/gpu.md).
#![cfg(feature = "cuda-kernels")]

mod common;

/// The GPU cases live in `cuda` so the GPU check's `cuda::` filter selects them.
mod cuda {
    use std::sync::Arc;

    use dgs::ops::block::cuda::{BlockKernels, GemmOperands, GemmShape, Gemms, LeadingDims};
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
            ..
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
            bias: bias.then_some(&biasv),
            residual: residual.then_some(&resv),
            ..GemmOperands::new(&av, &bv)
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
                    a_transposed,
                    b_transposed,
                    ..GemmShape::linear(m, n, k)
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
        let ops = GemmOperands::new(&av, &bv);
        let shape = GemmShape::linear(2, 2, 3);
        let err = g
            .matmul(shape, &ops, &mut out.slice_mut(..))
            .expect_err("out is short");
        assert!(err.to_string().contains("`out`"), "{err}");
    }

    /// Column block `block` (of `blocks`, each `width` wide) of a row-major `[rows, blocks·width]`.
    fn column_block(v: &[f64], rows: usize, width: usize, blocks: usize, block: usize) -> Vec<f64> {
        (0..rows)
            .flat_map(|r| {
                let at = r * blocks * width + block * width;
                v[at..at + width].iter().copied()
            })
            .collect()
    }

    /// The layer's adapter products: a column block of a wider matrix as A (the q/k/v gradient's
    /// columns) and as D accumulated in place with α (the up-projection into q/k/v).
    fn check_strided<T: Element>(g: &Gemms, (n, c, r): (usize, usize, usize), seed: u64) {
        let s = g.stream();
        let mut rng = SplitMix64::new(seed);
        let wide_m: Vec<T> = random_elems(&mut rng, n * 3 * c, Magnitude::Normal(1.0));
        let z: Vec<T> = random_elems(&mut rng, n * r, Magnitude::Normal(1.0));
        let bmat: Vec<T> = random_elems(&mut rng, c * r, Magnitude::Normal(1.0));
        let wide = |v: &[T]| v.iter().map(|e| e.to_f64()).collect::<Vec<_>>();
        let (wf, zf, bf) = (wide(&wide_m), wide(&z), wide(&bmat));
        let (zd, bd) = (
            s.clone_htod(&z).expect("up"),
            s.clone_htod(&bmat).expect("up"),
        );
        let alpha = 0.75f32;
        for block in 0..3 {
            // D[:, block] += α · z Bᵀ, in place inside the [n, 3c] matrix.
            let mut wd = s.clone_htod(&wide_m).expect("up");
            let shape = GemmShape {
                ld: Some(LeadingDims {
                    a: r,
                    b: r,
                    d: 3 * c,
                }),
                ..GemmShape::linear(n, c, r)
            };
            let (zv, bv) = (zd.slice(..), bd.slice(..));
            let ops = GemmOperands {
                accumulate: true,
                alpha,
                ..GemmOperands::new(&zv, &bv)
            };
            g.matmul(shape, &ops, &mut wd.slice_mut(block * c..))
                .expect("accumulating product");
            let got = wide(&s.clone_dtoh(&wd).expect("down"));
            for row in 0..n {
                for col in 0..3 * c {
                    let mut want = wf[row * 3 * c + col];
                    let mut scale = want.abs();
                    if col / c == block {
                        for j in 0..r {
                            let p = f64::from(alpha) * zf[row * r + j] * bf[(col % c) * r + j];
                            want += p;
                            scale += p.abs();
                        }
                    }
                    let got = got[row * 3 * c + col];
                    let allowed = 4.0 * unit::<T>() * scale + 1e-30;
                    assert!(
                        approx::abs_diff_eq!(got, want, epsilon = allowed),
                        "{} accumulate block {block} [{row}, {col}]: got {got}, want {want}",
                        T::DTYPE
                    );
                }
            }
            // dz = G[:, block] · B: the column block as A.
            let gd = s.clone_htod(&wide_m).expect("up");
            let mut dz = s.alloc_zeros::<T>(n * r).expect("alloc");
            let shape = GemmShape {
                b_transposed: false,
                ld: Some(LeadingDims {
                    a: 3 * c,
                    b: r,
                    d: r,
                }),
                ..GemmShape::linear(n, r, c)
            };
            let (gv, bv) = (gd.slice(block * c..), bd.slice(..));
            g.matmul(shape, &GemmOperands::new(&gv, &bv), &mut dz.slice_mut(..))
                .expect("strided A");
            let got = wide(&s.clone_dtoh(&dz).expect("down"));
            let gblock = column_block(&wf, n, c, 3, block);
            for row in 0..n {
                for j in 0..r {
                    let terms = (0..c).map(|k| gblock[row * c + k] * bf[k * r + j]);
                    let (want, scale) = terms.fold((0.0, 0.0), |(w, s), p| (w + p, s + p.abs()));
                    let got = got[row * r + j];
                    let allowed = 4.0 * unit::<T>() * scale + 1e-30;
                    assert!(
                        approx::abs_diff_eq!(got, want, epsilon = allowed),
                        "{} strided A block {block} [{row}, {j}]: got {got}, want {want}",
                        T::DTYPE
                    );
                }
            }
        }
    }

    /// One rounding unit of the storage type.
    fn unit<T: Element>() -> f64 {
        match T::DTYPE {
            dgs::surgery::DType::F32 => f64::from(f32::EPSILON),
            dgs::surgery::DType::F16 => 2f64.powi(-10),
            dgs::surgery::DType::BF16 => 2f64.powi(-7),
        }
    }

    #[test]
    #[cfg_attr(
        not(dgs_gpu_tests),
        ignore = "skipped: no CUDA device (GPU cases run in a DGS_GPU_TESTS=1 build, see docs/gpu.md)"
    )]
    fn column_blocks_and_in_place_accumulation_match_float64() {
        let g = gemms();
        for (i, dims) in [(5, 8, 4), (77, 64, 6), (257, 768, 6)]
            .into_iter()
            .enumerate()
        {
            for_each_dtype!(T => check_strided::<T>(&g, dims, 100 + i as u64));
        }
    }

    #[test]
    #[cfg_attr(
        not(dgs_gpu_tests),
        ignore = "skipped: no CUDA device (GPU cases run in a DGS_GPU_TESTS=1 build, see docs/gpu.md)"
    )]
    fn bad_strides_and_double_addends_are_refused() {
        let g = gemms();
        let s = g.stream();
        let a = s.alloc_zeros::<f32>(64).expect("alloc");
        let b = s.alloc_zeros::<f32>(64).expect("alloc");
        let mut out = s.alloc_zeros::<f32>(64).expect("alloc");
        let (av, bv) = (a.slice(..), b.slice(..));
        let narrow = GemmShape {
            ld: Some(LeadingDims { a: 3, b: 4, d: 4 }),
            ..GemmShape::linear(2, 4, 4)
        };
        let err = g
            .matmul(narrow, &GemmOperands::new(&av, &bv), &mut out.slice_mut(..))
            .expect_err("lda 3 < k 4");
        assert!(err.to_string().contains("row stride"), "{err}");
        let (a16, b16, c16) = (a.slice(..16), b.slice(..16), b.slice(16..32));
        let shape = GemmShape::linear(4, 4, 4);
        let both = GemmOperands {
            accumulate: true,
            residual: Some(&c16),
            ..GemmOperands::new(&a16, &b16)
        };
        let err = g
            .matmul(shape, &both, &mut out.slice_mut(..16))
            .expect_err("accumulate and residual");
        assert!(err.to_string().contains("accumulate"), "{err}");
    }
}
