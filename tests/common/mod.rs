//! Shared by the integration tests: sizes, the dtype loop and the assertion that prints the
//! worst mismatches.
#![allow(dead_code)]

use dgs::surgery::compare::Report;

pub const ROWS: [usize; 5] = [0, 1, 7, 32, 1000];
pub const DIMS: [usize; 5] = [1, 7, 768, 769, 4099];
/// Either side of the 64-element block, the 65536-element chunk, and a single element.
pub const AWKWARD_LENS: [usize; 9] = [1, 7, 63, 64, 65, 65535, 65536, 65537, 131_073];

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
/// Device backends add their own module here, skipping with a printed line when no device exists.
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
    };
}
