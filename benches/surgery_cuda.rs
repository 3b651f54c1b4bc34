//! GPU surgery throughput (feature `cuda-kernels`; run on a GPU machine, see docs/gpu.md).
//!
//! Every group times, in one run and on one stream (`iter_custom`, the stream synchronised
//! inside the timed region): our fused kernel, the unfused multi-kernel version of the same math,
//! a device-to-device copy moving the same number of bytes, and — for the launch-bound paper-size
//! row op — an empty kernel launch. `Throughput::Bytes` is the fused op's traffic for all of them,
//! so `scripts/bench-summary.py` turns the times into fractions of copy bandwidth.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use dgs::half::{bf16, f16};
use dgs::surgery::cuda::cudarc::driver::{CudaSlice, CudaStream, CudaView};
use dgs::surgery::cuda::{
    CudaSurgery, DeviceRowProjection, DeviceRowStats, OutputList, PcGradScratch, TensorLists,
};
use dgs::surgery::rng::SplitMix64;
use dgs::surgery::verify::{Magnitude, random_elems};
use dgs::surgery::{Element, Gram, Reduction, Transform, solve};

#[path = "surgery_cuda/baseline.rs"]
mod baseline;
#[path = "common/cuda_timing.rs"]
mod cuda_timing;

use baseline::{Baselines, DOT_BLOCKS, flatten_into};
use cuda_timing::timed;

struct Gpu {
    surgery: CudaSurgery,
    base: Baselines,
    stream: Arc<CudaStream>,
}

/// `cuda_timing::group` with the fused op's bytes as the throughput.
fn group(
    c: &mut Criterion,
    name: String,
    bytes: usize,
) -> criterion::BenchmarkGroup<'_, criterion::measurement::WallTime> {
    cuda_timing::group(c, name, Throughput::Bytes(bytes as u64))
}

/// A device copy of `bytes / 2` bytes (so its read + write traffic equals `bytes`).
fn copy_of(gpu: &Gpu, bytes: usize) -> (CudaSlice<u8>, CudaSlice<u8>) {
    let n = (bytes / 2).max(1);
    (
        gpu.stream.alloc_zeros(n).expect("alloc"),
        gpu.stream.alloc_zeros(n).expect("alloc"),
    )
}

fn upload<T: Element>(gpu: &Gpu, n: usize, seed: u64) -> CudaSlice<T> {
    // Uniform values: cheap to draw for hundreds of millions of elements.
    let v: Vec<T> = random_elems(&mut SplitMix64::new(seed), n, Magnitude::Band(0.0, 1.0));
    gpu.stream.clone_htod(&v).expect("upload")
}

fn rows_bench<T: Element>(c: &mut Criterion, gpu: &Gpu) {
    let s = &gpu.stream;
    for (rows, dim) in [(32usize, 768usize), (65_536, 768)] {
        let n = rows * dim;
        let bytes = 3 * n * size_of::<T>();
        let mut x = upload::<T>(gpu, n, 1);
        let h = upload::<T>(gpu, n, 2);
        let mut g = group(c, format!("cuda_rowwise/{}/{rows}x{dim}", T::DTYPE), bytes);
        g.bench_function("fused", |b| {
            timed(b, s, || {
                let p = DeviceRowProjection::new(rows, dim, h.slice(..));
                gpu.surgery
                    .dgs_rows(s, &mut x.slice_mut(..), &p, DeviceRowStats::default())
                    .expect("launch");
            })
        });
        let (mut tmp, mut norms, mut dots) = (
            s.alloc_zeros::<f32>(n).expect("alloc"),
            s.alloc_zeros::<f32>(rows).expect("alloc"),
            s.alloc_zeros::<f32>(rows).expect("alloc"),
        );
        g.bench_function("unfused", |b| {
            timed(b, s, || {
                gpu.base
                    .dgs_rows_unfused(
                        s,
                        &mut x.slice_mut(..),
                        &h.slice(..),
                        rows,
                        dim,
                        1e-6,
                        &mut tmp,
                        &mut norms,
                        &mut dots,
                    )
                    .expect("launch")
            })
        });
        g.bench_function("empty_kernel", |b| {
            timed(b, s, || gpu.base.empty(s).expect("launch"))
        });
        let (src, mut dst) = copy_of(gpu, bytes);
        g.bench_function("d2d_copy", |b| {
            timed(b, s, || s.memcpy_dtod(&src, &mut dst).expect("copy"))
        });
        g.finish();
    }
}

fn multi_dir_bench<T: Element>(c: &mut Criterion, gpu: &Gpu) {
    let s = &gpu.stream;
    let (rows, dim, k) = (1024usize, 768usize, 4usize);
    let n = rows * dim;
    let bytes = (k + 2) * n * size_of::<T>(); // read x and K directions, write x
    let mut x = upload::<T>(gpu, n, 1);
    let directions: Vec<CudaSlice<T>> =
        (0..k).map(|i| upload::<T>(gpu, n, 10 + i as u64)).collect();
    let mut g = group(
        c,
        format!("cuda_multi_dir/{}/{rows}x{dim}xK{k}", T::DTYPE),
        bytes,
    );
    g.bench_function("fused", |b| {
        timed(b, s, || {
            gpu.surgery
                .project_rows_multi(
                    s,
                    &mut x.slice_mut(..),
                    rows,
                    dim,
                    &views(&directions),
                    Transform::Identity,
                    None,
                    None,
                )
                .expect("launch");
        })
    });
    let (src, mut dst) = copy_of(gpu, bytes);
    g.bench_function("d2d_copy", |b| {
        timed(b, s, || s.memcpy_dtod(&src, &mut dst).expect("copy"))
    });
    g.finish();
}

/// ~300 tensors adding up to about `total` elements.
fn tensor_lens(total: usize) -> Vec<usize> {
    let mut rng = SplitMix64::new(9);
    let w: Vec<f64> = (0..300).map(|_| rng.uniform(0.1, 2.0)).collect();
    let sum: f64 = w.iter().sum();
    w.iter()
        .map(|v| ((v / sum) * total as f64) as usize + 1)
        .collect()
}

struct Lists<T> {
    lens: Vec<usize>,
    n: usize,
    tensors: Vec<Vec<CudaSlice<T>>>,
    flat: Vec<CudaSlice<T>>,
}

fn lists<T: Element>(gpu: &Gpu, k: usize, total: usize) -> Lists<T> {
    let lens = tensor_lens(total);
    let n = lens.iter().sum();
    let tensors = (0..k)
        .map(|i| {
            lens.iter()
                .enumerate()
                .map(|(t, &l)| upload::<T>(gpu, l, (i * 1000 + t) as u64))
                .collect()
        })
        .collect();
    let flat = (0..k)
        .map(|_| gpu.stream.alloc_zeros::<T>(n).expect("alloc"))
        .collect();
    Lists {
        lens,
        n,
        tensors,
        flat,
    }
}

/// Flatten every list (one copy per tensor), then one two-launch dot product per pair.
fn unfused_gram<T: Element>(
    gpu: &Gpu,
    tensors: &[Vec<CudaSlice<T>>],
    flats: &mut [CudaSlice<T>],
    gram: &mut CudaSlice<f32>,
    partials: &mut CudaSlice<f32>,
) {
    let s = &gpu.stream;
    let k = tensors.len();
    for (list, flat) in tensors.iter().zip(flats.iter_mut()) {
        flatten_into(s, &views(list), flat).expect("flatten");
    }
    for i in 0..k {
        for j in i..k {
            let mut out = gram.slice_mut(i * k + j..i * k + j + 1);
            gpu.base
                .dot(
                    s,
                    &flats[i].slice(..),
                    &flats[j].slice(..),
                    partials,
                    &mut out,
                )
                .expect("dot");
        }
    }
}

fn views<T>(l: &[CudaSlice<T>]) -> Vec<CudaView<'_, T>> {
    l.iter().map(|t| t.slice(..)).collect()
}

fn multi_tensor_bench<T: Element>(c: &mut Criterion, gpu: &Gpu, k: usize, totals: &[usize]) {
    let s = &gpu.stream;
    for &total in totals {
        let mut l = lists::<T>(gpu, k, total);
        let tag = format!("{}/K{k}x{}M", T::DTYPE, l.n >> 20);
        let v: Vec<Vec<CudaView<'_, T>>> = l.tensors.iter().map(|t| views(t)).collect();
        let refs: Vec<&[CudaView<'_, T>]> = v.iter().map(Vec::as_slice).collect();
        let mut table = TensorLists::new(&gpu.surgery, s, &refs).expect("table");
        let transforms = vec![Transform::Identity; k];
        let mut gram = s.alloc_zeros::<f32>(k * k).expect("alloc");
        let mut partials = s.alloc_zeros::<f32>(DOT_BLOCKS).expect("alloc");

        let gram_bytes = k * l.n * size_of::<T>();
        let mut g = group(c, format!("cuda_gram/{tag}"), gram_bytes);
        g.bench_function("fused", |b| {
            timed(b, s, || {
                gpu.surgery
                    .gram(s, &mut table, &transforms, &mut gram.slice_mut(..))
                    .expect("gram")
            })
        });
        g.bench_function("unfused", |b| {
            timed(b, s, || {
                unfused_gram(gpu, &l.tensors, &mut l.flat, &mut gram, &mut partials);
            })
        });
        let (src, mut dst) = copy_of(gpu, gram_bytes);
        g.bench_function("d2d_copy", |b| {
            timed(b, s, || s.memcpy_dtod(&src, &mut dst).expect("copy"))
        });
        g.finish();

        let combine_bytes = (k + 1) * l.n * size_of::<T>();
        let mut out: Vec<CudaSlice<T>> = l
            .lens
            .iter()
            .map(|&n| s.alloc_zeros::<T>(n).expect("alloc"))
            .collect();
        let weights_host = vec![0.5f32; k];
        let weights = s.clone_htod(&weights_host).expect("upload");
        let mut g = group(c, format!("cuda_combine/{tag}"), combine_bytes);
        {
            let mut out_views: Vec<_> = out.iter_mut().map(|t| t.slice_mut(..)).collect();
            let mut out_list = OutputList::new(&gpu.surgery, s, &mut out_views).expect("out");
            g.bench_function("fused", |b| {
                timed(b, s, || {
                    gpu.surgery
                        .combine(
                            s,
                            &mut out_list,
                            None,
                            &table,
                            &transforms,
                            &weights.slice(..),
                        )
                        .expect("combine")
                })
            });
        }
        let mut out_flat = s.alloc_zeros::<T>(l.n).expect("alloc");
        g.bench_function("unfused", |b| {
            timed(b, s, || {
                s.memset_zeros(&mut out_flat).expect("memset");
                for (flat, &w) in l.flat.iter().zip(&weights_host) {
                    gpu.base
                        .axpy(s, &mut out_flat.slice_mut(..), &flat.slice(..), w)
                        .expect("axpy");
                }
            })
        });
        let (src, mut dst) = copy_of(gpu, combine_bytes);
        g.bench_function("d2d_copy", |b| {
            timed(b, s, || s.memcpy_dtod(&src, &mut dst).expect("copy"))
        });
        g.finish();
        drop(table);
        black_box(&mut l);
    }
}

/// PCGrad, 4 tasks: ours (Gram → device solve → combine, no host round trip) against the usual
/// implementation (flatten, one dot per pair, solve on the host after reading the dots back,
/// one axpy per task). Traffic counted as our two passes: read K·N, then read K·N and write N.
fn pcgrad_bench<T: Element>(c: &mut Criterion, gpu: &Gpu, total: usize) {
    let s = &gpu.stream;
    let k = 4;
    let mut l = lists::<T>(gpu, k, total);
    let v: Vec<Vec<CudaView<'_, T>>> = l.tensors.iter().map(|t| views(t)).collect();
    let refs: Vec<&[CudaView<'_, T>]> = v.iter().map(Vec::as_slice).collect();
    let mut table = TensorLists::new(&gpu.surgery, s, &refs).expect("table");
    let bytes = (2 * k + 1) * l.n * size_of::<T>();
    let mut g = group(
        c,
        format!("cuda_pcgrad/{}/K{k}x{}M", T::DTYPE, l.n >> 20),
        bytes,
    );
    let mut out: Vec<CudaSlice<T>> = l
        .lens
        .iter()
        .map(|&n| s.alloc_zeros::<T>(n).expect("alloc"))
        .collect();
    let mut scratch = PcGradScratch::new(s, k).expect("scratch");
    {
        let mut out_views: Vec<_> = out.iter_mut().map(|t| t.slice_mut(..)).collect();
        let mut out_list = OutputList::new(&gpu.surgery, s, &mut out_views).expect("out");
        g.bench_function("fused", |b| {
            timed(b, s, || {
                gpu.surgery
                    .pcgrad(
                        s,
                        &mut table,
                        &mut out_list,
                        7,
                        Reduction::Mean,
                        &mut scratch,
                    )
                    .expect("pcgrad")
            })
        });
    }
    let mut gram_d = s.alloc_zeros::<f32>(k * k).expect("alloc");
    let mut partials = s.alloc_zeros::<f32>(DOT_BLOCKS).expect("alloc");
    let mut out_flat = s.alloc_zeros::<T>(l.n).expect("alloc");
    g.bench_function("unfused", |b| {
        timed(b, s, || {
            unfused_gram(gpu, &l.tensors, &mut l.flat, &mut gram_d, &mut partials);
            let mut g = s.clone_dtoh(&gram_d).expect("read back");
            for i in 0..k {
                for j in 0..i {
                    g[i * k + j] = g[j * k + i];
                }
            }
            let plan = solve::pcgrad(
                &Gram::from_row_major(k, g).expect("gram"),
                7,
                Reduction::Mean,
            )
            .expect("solve");
            s.memset_zeros(&mut out_flat).expect("memset");
            for (flat, &w) in l.flat.iter().zip(&plan.weights) {
                gpu.base
                    .axpy(s, &mut out_flat.slice_mut(..), &flat.slice(..), w)
                    .expect("axpy");
            }
        })
    });
    let (src, mut dst) = copy_of(gpu, bytes);
    g.bench_function("d2d_copy", |b| {
        timed(b, s, || s.memcpy_dtod(&src, &mut dst).expect("copy"))
    });
    g.finish();
    drop(table);
    black_box(&mut l);
}

fn benches(c: &mut Criterion) {
    let surgery = match CudaSurgery::new(0) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("skipped: no CUDA device ({e})");
            return;
        }
    };
    let base = Baselines::new(&surgery).expect("baseline kernels");
    let stream = surgery.context().new_stream().expect("stream");
    let gpu = Gpu {
        surgery,
        base,
        stream,
    };
    eprintln!("device: {}", gpu.surgery.device_name());
    rows_bench::<f32>(c, &gpu);
    rows_bench::<f16>(c, &gpu);
    rows_bench::<bf16>(c, &gpu);
    multi_dir_bench::<bf16>(c, &gpu);
    multi_tensor_bench::<f32>(c, &gpu, 4, &[1 << 20, 50 << 20]);
    multi_tensor_bench::<f16>(c, &gpu, 4, &[1 << 20, 100 << 20]);
    multi_tensor_bench::<bf16>(c, &gpu, 4, &[100 << 20]);
    pcgrad_bench::<f16>(c, &gpu, 100 << 20);
}

criterion_group!(surgery_cuda, benches);
criterion_main!(surgery_cuda);
