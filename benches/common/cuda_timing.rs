//! How the CUDA benchmarks time work on a stream (shared by the bench binaries).

use std::time::{Duration, Instant};

use criterion::{Bencher, Criterion, Throughput};
use dgs::surgery::cuda::cudarc::driver::CudaStream;

/// Time `iters` calls of `f` on the stream, synchronising once at the end.
pub fn timed(b: &mut Bencher<'_>, stream: &CudaStream, mut f: impl FnMut()) {
    b.iter_custom(|iters| {
        stream.synchronize().expect("stream");
        let t = Instant::now();
        for _ in 0..iters {
            f();
        }
        stream.synchronize().expect("stream");
        t.elapsed()
    });
}

/// A short criterion group (10 samples, 1 s) reporting `throughput` per iteration.
pub fn group(
    c: &mut Criterion,
    name: String,
    throughput: Throughput,
) -> criterion::BenchmarkGroup<'_, criterion::measurement::WallTime> {
    let mut g = c.benchmark_group(name);
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
        .throughput(throughput);
    g
}
