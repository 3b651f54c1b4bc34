//! Dropout on the device (written, and added into an output) against the CPU's masks
//! (`MaskStream`), bit for bit: every storage type, lengths and stream offsets on either side of a
//! generator call's four elements, run twice, and the argument checks. GPU cases, run in a
//! DGS_GPU_TESTS=1 build (docs/gpu.md).
#![cfg(feature = "cuda-kernels")]

mod common;

/// The GPU cases live in `cuda` so the GPU check's `cuda::` filter selects them.
mod cuda {
    use super::common;
    use crate::for_each_dtype;
    use std::sync::Arc;

    use dgs::ops::block::cuda::{BlockKernels, DeviceDropout};
    use dgs::ops::block::{DropoutKey, MaskStream};
    use dgs::surgery::cuda::CudaSurgeryError;
    use dgs::surgery::cuda::cudarc::driver::CudaStream;
    use dgs::surgery::rng::SplitMix64;
    use dgs::surgery::verify::{Magnitude, random_elems};
    use dgs::surgery::{Element, SurgeryError};

    fn device() -> (BlockKernels, Arc<CudaStream>) {
        let backend = common::cuda_backend();
        let ctx = backend.surgery().context().clone();
        let kernels = BlockKernels::with_context(ctx).expect("layer kernels load");
        (kernels, backend.stream().clone())
    }

    /// What the CPU layer does: the mask from `MaskStream`, kept values times `1 / (1 − p)` in f32.
    fn cpu_dropout<T: Element>(x: &[T], d: &DeviceDropout) -> Vec<T> {
        let stream = MaskStream::new(d.key, d.layer, d.projection, d.p);
        let mut keep = vec![false; x.len()];
        stream.fill(d.start, &mut keep);
        let kept_scale = 1.0f32 / (1.0 - d.p);
        x.iter()
            .zip(keep)
            .map(|(v, k)| T::from_f32(if k { v.to_f32() * kept_scale } else { 0.0 }))
            .collect()
    }

    fn bits<T: Element>(v: &[T]) -> Vec<u32> {
        v.iter().map(|e| e.to_f32().to_bits()).collect()
    }

    fn check_dtype<T: Element>(kernels: &BlockKernels, stream: &Arc<CudaStream>) {
        let mut rng = SplitMix64::new(11);
        for (n, start) in [
            (1, 0),
            (3, 1),
            (4, 4),
            (7, 3),
            (4099, 5),
            (1 << 20, 123_457),
        ] {
            for p in [0.0f32, 0.1, 0.8] {
                let d = DeviceDropout {
                    key: DropoutKey {
                        seed: 0x1234_5678_9abc_def0,
                        step: 17,
                    },
                    layer: 11,
                    projection: 2,
                    p,
                    start,
                };
                let x: Vec<T> = random_elems(&mut rng, n, Magnitude::Normal(1.0));
                let want = bits(&cpu_dropout(&x, &d));
                let xd = stream.clone_htod(&x).expect("upload");
                let mut out = stream.alloc_zeros::<T>(n).expect("alloc");
                kernels
                    .dropout(stream, &xd.slice(..), &mut out.slice_mut(..), &d)
                    .expect("launch");
                let got = stream.clone_dtoh(&out).expect("download");
                assert_eq!(bits(&got), want, "{} n={n} start={start} p={p}", T::DTYPE);
                // A second launch gives the same bits.
                kernels
                    .dropout(stream, &xd.slice(..), &mut out.slice_mut(..), &d)
                    .expect("launch");
                let again = stream.clone_dtoh(&out).expect("download");
                assert_eq!(
                    bits(&again),
                    want,
                    "{} n={n} start={start} p={p}, twice",
                    T::DTYPE
                );
                // Added into an output: kept elements become out + x·scale (rounded once),
                // dropped ones keep their bits.
                let before: Vec<T> = random_elems(&mut rng, n, Magnitude::Normal(1.0));
                let mut sum = stream.clone_htod(&before).expect("upload");
                kernels
                    .dropout_add(stream, &xd.slice(..), &mut sum.slice_mut(..), &d)
                    .expect("launch");
                let mut keep = vec![false; n];
                MaskStream::new(d.key, d.layer, d.projection, d.p).fill(d.start, &mut keep);
                let kept_scale = 1.0f32 / (1.0 - d.p);
                let want_sum: Vec<T> = before
                    .iter()
                    .zip(&x)
                    .zip(keep)
                    .map(|((o, v), k)| match k {
                        true => T::from_f32(o.to_f32() + v.to_f32() * kept_scale),
                        false => *o,
                    })
                    .collect();
                let got_sum = stream.clone_dtoh(&sum).expect("download");
                assert_eq!(
                    bits(&got_sum),
                    bits(&want_sum),
                    "{} n={n} p={p}, added",
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
    fn device_masks_equal_the_cpu_masks() {
        let (kernels, stream) = device();
        for_each_dtype!(T => check_dtype::<T>(&kernels, &stream));
    }

    #[test]
    #[cfg_attr(
        not(dgs_gpu_tests),
        ignore = "skipped: no CUDA device (GPU cases run in a DGS_GPU_TESTS=1 build, see docs/gpu.md)"
    )]
    fn bad_arguments_are_refused_before_any_launch() {
        let (kernels, stream) = device();
        let x = stream.alloc_zeros::<f32>(8).expect("alloc");
        let mut out = stream.alloc_zeros::<f32>(7).expect("alloc");
        let d = DeviceDropout {
            key: DropoutKey { seed: 1, step: 0 },
            layer: 0,
            projection: 0,
            p: 0.5,
            start: 0,
        };
        let err = kernels
            .dropout(&stream, &x.slice(..), &mut out.slice_mut(..), &d)
            .expect_err("mismatched lengths");
        assert!(matches!(
            err,
            CudaSurgeryError::Arguments(SurgeryError::LengthMismatch { arg: "out", .. })
        ));
        let mut out = stream.alloc_zeros::<f32>(8).expect("alloc");
        for p in [1.0, -0.1, f32::NAN] {
            let err = kernels
                .dropout(
                    &stream,
                    &x.slice(..),
                    &mut out.slice_mut(..),
                    &DeviceDropout { p, ..d },
                )
                .expect_err("p out of range");
            assert!(matches!(
                err,
                CudaSurgeryError::Arguments(SurgeryError::InvalidValue { arg: "p", .. })
            ));
        }
    }
}
