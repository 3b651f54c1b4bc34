//! Shared by the integration tests: sizes, the dtype loop and the assertion that prints the
//! worst mismatches.
#![allow(dead_code)]

pub mod cli;

use candle_core::Tensor;
use dgs::surgery::compare::Report;

pub const ROWS: [usize; 5] = [0, 1, 7, 32, 1000];
pub const DIMS: [usize; 5] = [1, 7, 768, 769, 4099];
/// Either side of the 64-element block, the 65536-element chunk, and a single element.
pub const AWKWARD_LENS: [usize; 9] = [1, 7, 63, 64, 65, 65535, 65536, 65537, 131_073];

/// The causal attention mask `[t, t]` in f64: 0 where a query may see the key (at or before its
/// own position), −∞ after it.
pub fn causal_mask_f64(t: usize) -> Tensor {
    let m: Vec<f64> = (0..t * t)
        .map(|i| {
            if i % t > i / t {
                f64::NEG_INFINITY
            } else {
                0.0
            }
        })
        .collect();
    Tensor::from_vec(m, (t, t), &candle_core::Device::Cpu).expect("a [t, t] mask")
}

/// The largest absolute elementwise difference of two tensors of one shape.
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .and_then(|d| d.abs()?.flatten_all()?.max(0)?.to_scalar())
        .expect("tensors of one shape")
}

#[track_caller]
pub fn assert_passed(report: &Report, what: &str) {
    assert!(report.passed(), "{what}: {report}");
}

/// `f` run in a one-thread pool and in a two-thread pool: for checking that results do not depend
/// on how the work was split.
pub fn on_one_and_two_threads<R: Send>(f: impl Fn() -> R + Send + Sync) -> (R, R) {
    let pool = |n| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build()
            .expect("thread pool")
    };
    (pool(1).install(&f), pool(2).install(&f))
}

/// Run a generic body once per storage type: `for_each_dtype!(T => body)`.
#[macro_export]
macro_rules! for_each_dtype {
    ($t:ident => $body:expr) => {{
        {
            type $t = f32;
            $body
        }
        {
            type $t = dgs::half::f16;
            $body
        }
        {
            type $t = dgs::half::bf16;
            $body
        }
    }};
}

/// Stamp one `#[test]` per backend for each generic test body `fn name<B: HostBackend>(&B)`.
///
/// The CUDA cases exist with the `cuda-kernels` feature. They are reported as ignored ("skipped:
/// no CUDA device") unless the tests were built with `DGS_GPU_TESTS=1` (the GPU machine's build,
/// see docs/gpu.md), where a missing device is a failure: a skipped GPU case never counts as a pass.
#[macro_export]
macro_rules! backend_tests {
    ($($name:ident),* $(,)?) => {
        mod cpu {
            $(
                #[test]
                fn $name() {
                    super::$name(&dgs::surgery::CpuBackend);
                }
            )*
        }

        #[cfg(feature = "cuda-kernels")]
        mod cuda {
            $(
                #[test]
                #[cfg_attr(
                    not(dgs_gpu_tests),
                    ignore = "skipped: no CUDA device (GPU cases run in a DGS_GPU_TESTS=1 build, see docs/gpu.md)"
                )]
                fn $name() {
                    super::$name(&$crate::common::cuda_backend());
                }
            )*
        }
    };
}

/// The CUDA backend on device 0; in a GPU test build its absence is a test failure.
#[cfg(feature = "cuda-kernels")]
pub fn cuda_backend() -> dgs::surgery::cuda::CudaBackend {
    match dgs::surgery::cuda::CudaBackend::new(0) {
        Ok(b) => b,
        Err(e) => panic!("this build runs the GPU cases (DGS_GPU_TESTS=1) but: {e}"),
    }
}
