//! `dgs self-check`: every surgery op against the float64 reference, at sizes the user picks.

use std::time::Instant;

use clap::Args as ClapArgs;

use dgs::dispatch_dtype;
use dgs::surgery::compare::Report;
use dgs::surgery::verify::{
    Magnitude, check_combine, check_dgs_rows, check_gram, check_pcgrad, check_project_rows_multi,
};
use dgs::surgery::{CpuBackend, DType, Element, HostBackend, Reduction, SurgeryError, Transform};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Device {
    Cpu,
    /// The CUDA kernels on device 0 (needs a build with `--features cuda-kernels`).
    Cuda,
}

#[derive(Debug, ClapArgs)]
pub struct Args {
    /// Backend to check against the float64 reference.
    #[arg(long, value_enum, default_value = "cpu")]
    pub device: Device,
    /// Storage types to check (comma separated): f32, f16, bf16.
    #[arg(long, value_delimiter = ',', default_values = ["f32", "f16", "bf16"])]
    pub dtype: Vec<DType>,
    /// Row counts B of the feature-space ops (comma separated).
    #[arg(long, value_delimiter = ',', default_values_t = [1, 32, 257])]
    pub rows: Vec<usize>,
    /// Row lengths D of the feature-space ops (comma separated).
    #[arg(long, value_delimiter = ',', default_values_t = [7, 768, 4099])]
    pub dim: Vec<usize>,
    /// Number of tensors in each list of the parameter-space ops.
    #[arg(long, default_value_t = 64)]
    pub tensors: usize,
    /// Largest tensor length in those lists (lengths vary from 1 up to this).
    #[arg(long, default_value_t = 70_000)]
    pub max_len: usize,
    /// Directions of the K-direction projection and tasks of PCGrad.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u8).range(1..=8))]
    pub k: u8,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

struct Row {
    op: String,
    dtype: DType,
    shape: String,
    report: Report,
    millis: f64,
}

/// Returns whether every comparison passed.
pub fn run(args: &Args) -> Result<bool, SurgeryError> {
    match args.device {
        Device::Cpu => run_on(&CpuBackend, args),
        Device::Cuda => run_cuda(args),
    }
}

#[cfg(feature = "cuda-kernels")]
fn run_cuda(args: &Args) -> Result<bool, SurgeryError> {
    let backend = dgs::surgery::cuda::CudaBackend::new(0).map_err(|e| SurgeryError::Backend {
        backend: "cuda",
        source: dgs::surgery::error::BackendFailure::new(e),
    })?;
    println!("device: {}", backend.surgery().device_name());
    run_on(&backend, args)
}

#[cfg(not(feature = "cuda-kernels"))]
fn run_cuda(_: &Args) -> Result<bool, SurgeryError> {
    Err(SurgeryError::BackendMissing {
        backend: "cuda",
        why: "this dgs was built without CUDA support; rebuild with `--features cuda-kernels` \
              (see docs/gpu.md)",
    })
}

fn run_on<B: HostBackend>(b: &B, args: &Args) -> Result<bool, SurgeryError> {
    let start = Instant::now();
    let mut rows = Vec::new();
    for &dtype in &args.dtype {
        dispatch_dtype!(dtype, T => check_dtype::<T, B>(b, args, &mut rows)?);
    }
    print_table(&rows);
    let failed = rows.iter().filter(|r| !r.report.passed()).count();
    println!(
        "\n{} passed, {} failed ({:.1} s; backend: {}, {} CPU threads)",
        rows.len() - failed,
        failed,
        start.elapsed().as_secs_f64(),
        b.name(),
        rayon::current_num_threads()
    );
    for r in rows.iter().filter(|r| !r.report.passed()) {
        println!("FAILED {} {} {}: {}", r.op, r.dtype, r.shape, r.report);
    }
    Ok(failed == 0)
}

fn timed<R>(f: impl FnOnce() -> Result<R, SurgeryError>) -> Result<(R, f64), SurgeryError> {
    let t = Instant::now();
    let r = f()?;
    Ok((r, t.elapsed().as_secs_f64() * 1e3))
}

fn check_dtype<T: Element, B: HostBackend>(
    b: &B,
    args: &Args,
    out: &mut Vec<Row>,
) -> Result<(), SurgeryError> {
    let k = usize::from(args.k);
    let mut seed = args.seed;
    let mut next_seed = || {
        seed = seed.wrapping_add(1);
        seed
    };
    let mut push = |op: &str, shape: String, (report, millis): (Report, f64)| {
        out.push(Row {
            op: op.to_string(),
            dtype: T::DTYPE,
            shape,
            report,
            millis,
        })
    };
    for &rows in &args.rows {
        for &dim in &args.dim {
            for help in [false, true] {
                let s = next_seed();
                let (r, ms) = timed(|| {
                    check_dgs_rows::<T, _>(b, rows, dim, help, Magnitude::Normal(1.0), s)
                })?;
                let op = if help { "dgs_rows+help" } else { "dgs_rows" };
                push(op, format!("{rows}x{dim}"), (r.out, ms));
                push("  row coef", format!("{rows}x{dim}"), (r.coef, 0.0));
            }
            let s = next_seed();
            let ((r, _), ms) = timed(|| {
                check_project_rows_multi::<T, _>(b, rows, dim, k, Transform::Identity, s)
            })?;
            push("project_rows_multi", format!("{rows}x{dim} K={k}"), (r, ms));
        }
    }
    let mut lens_rng = dgs::surgery::rng::SplitMix64::new(args.seed);
    let lens: Vec<usize> = (0..args.tensors)
        .map(|_| 1 + lens_rng.below(args.max_len.max(1)))
        .collect();
    let total: usize = lens.iter().sum();
    let shape = format!("{} tensors, {total} el.", lens.len());
    let transforms = [
        Transform::Identity,
        Transform::Relu,
        Transform::NegativePart,
    ];
    let s = next_seed();
    push(
        "gram",
        format!("K={k}, {shape}"),
        timed(|| check_gram::<T, _>(b, &lens, k, &transforms, s))?,
    );
    let s = next_seed();
    push(
        "combine",
        format!("K={k}, {shape}"),
        timed(|| check_combine::<T, _>(b, &lens, k, true, s))?,
    );
    let s = next_seed();
    push(
        "pcgrad",
        format!("{k} tasks, {shape}"),
        timed(|| check_pcgrad::<T, _>(b, &lens, k, Reduction::Mean, s))?,
    );
    Ok(())
}

fn print_table(rows: &[Row]) {
    println!(
        "{:<20} {:<5} {:<34} {:>10} {:>14} {:>9}  result",
        "op", "dtype", "shape", "values", "worst err/tol", "check ms"
    );
    for r in rows {
        let ms = if r.millis > 0.0 {
            format!("{:.1}", r.millis)
        } else {
            String::new()
        };
        println!(
            "{:<20} {:<5} {:<34} {:>10} {:>14.3} {:>9}  {}",
            r.op,
            r.dtype,
            r.shape,
            r.report.compared,
            r.report.worst_ratio,
            ms,
            if r.report.passed() { "ok" } else { "FAILED" }
        );
    }
}
