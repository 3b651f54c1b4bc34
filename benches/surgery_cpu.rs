//! CPU surgery throughput. Each group holds the fused op, a naive multi-pass version of the same
//! math (one full pass per formula step, the way eager frameworks run it) and a parallel memory
//! copy moving the same number of bytes, all with `Throughput::Bytes` set to the op's traffic
//! (bytes read + written), so the GB/s figures compare directly: the op's figure over the copy's is
//! its fraction of copy bandwidth. `scripts/bench-summary.py` prints those ratios.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use dgs::half::{bf16, f16};
use dgs::surgery::rng::SplitMix64;
use dgs::surgery::verify::{Magnitude, as_slices, random_elems, random_list};
use dgs::surgery::{Element, MultiProjection, Operand, RowProjection, RowStatsMut, Transform, cpu};
use rayon::prelude::*;

const COPY_CHUNK: usize = 1 << 16;

/// A copy of `src` into `dst` split over the thread pool, like the ops themselves.
fn parallel_copy<T: Element>(src: &[T], dst: &mut [T]) {
    if dst.len() < COPY_CHUNK {
        dst.copy_from_slice(src);
        return;
    }
    dst.par_chunks_mut(COPY_CHUNK)
        .zip(src.par_chunks(COPY_CHUNK))
        .for_each(|(d, s)| d.copy_from_slice(s));
}

/// The row op as five separate passes over memory with f32 temporaries.
fn naive_dgs_rows<T: Element>(
    x: &mut [T],
    h: &[T],
    dim: usize,
    eps: f32,
    tmp: &mut [f32],
    norms: &mut [f32],
) {
    tmp.par_iter_mut()
        .zip(h.par_iter())
        .for_each(|(t, v)| *t = v.to_f32().max(0.0));
    norms
        .par_iter_mut()
        .zip(tmp.par_chunks(dim))
        .for_each(|(n, r)| {
            *n = r.iter().map(|v| v * v).sum::<f32>().sqrt();
        });
    tmp.par_chunks_mut(dim)
        .zip(norms.par_iter())
        .for_each(|(r, n)| {
            r.iter_mut().for_each(|v| *v /= n + eps);
        });
    norms
        .par_iter_mut()
        .zip(tmp.par_chunks(dim))
        .zip(x.par_chunks(dim))
        .for_each(|((d, r), xr)| {
            *d = r.iter().zip(xr).map(|(a, b)| a * b.to_f32()).sum();
        });
    x.par_chunks_mut(dim)
        .zip(tmp.par_chunks(dim))
        .zip(norms.par_iter())
        .for_each(|((xr, r), d)| {
            xr.iter_mut()
                .zip(r)
                .for_each(|(xv, hv)| *xv = T::from_f32(xv.to_f32() - d * hv));
        });
}

fn configure(
    c: &mut Criterion,
    name: String,
) -> criterion::BenchmarkGroup<'_, criterion::measurement::WallTime> {
    let mut g = c.benchmark_group(name);
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    g
}

fn rows_group<T: Element>(c: &mut Criterion) {
    for (rows, dim) in [(32, 768), (1024, 768), (16384, 768)] {
        let n = rows * dim;
        let mut rng = SplitMix64::new(1);
        let mut x: Vec<T> = random_elems(&mut rng, n, Magnitude::Normal(1.0));
        let h: Vec<T> = random_elems(&mut rng, n, Magnitude::Normal(1.0));
        let bytes = 3 * n * size_of::<T>(); // read x and h, write x
        let mut g = configure(c, format!("rowwise/{}/{rows}x{dim}", T::DTYPE));
        g.throughput(Throughput::Bytes(bytes as u64));
        let p = RowProjection::new(rows, dim, &h);
        g.bench_function("fused", |b| {
            b.iter(|| cpu::dgs_rows(black_box(&mut x), &p, RowStatsMut::default()).unwrap())
        });
        let (mut tmp, mut norms) = (vec![0.0f32; n], vec![0.0f32; rows]);
        g.bench_function("naive", |b| {
            b.iter(|| naive_dgs_rows(black_box(&mut x), &h, dim, 1e-6, &mut tmp, &mut norms))
        });
        let src: Vec<T> =
            random_elems(&mut rng, bytes / 2 / size_of::<T>(), Magnitude::Normal(1.0));
        let mut dst = src.clone();
        g.bench_function("memcpy", |b| {
            b.iter(|| parallel_copy(black_box(&src), &mut dst))
        });
        g.finish();
    }
}

fn multi_dir_group<T: Element>(c: &mut Criterion) {
    let (rows, dim, k) = (1024, 768, 4);
    let n = rows * dim;
    let mut rng = SplitMix64::new(4);
    let mut x: Vec<T> = random_elems(&mut rng, n, Magnitude::Normal(1.0));
    let directions: Vec<Vec<T>> = (0..k)
        .map(|_| random_elems(&mut rng, n, Magnitude::Normal(1.0)))
        .collect();
    let slices = as_slices(&directions);
    let bytes = (k + 2) * n * size_of::<T>(); // read x and K directions, write x
    let mut g = configure(c, format!("multi_dir/{}/{rows}x{dim}xK{k}", T::DTYPE));
    g.throughput(Throughput::Bytes(bytes as u64));
    let p = MultiProjection::new(rows, dim, &slices);
    g.bench_function("fused", |b| {
        b.iter(|| cpu::project_rows_multi(black_box(&mut x), &p, None).unwrap())
    });
    let src: Vec<T> = random_elems(&mut rng, bytes / 2 / size_of::<T>(), Magnitude::Normal(1.0));
    let mut dst = src.clone();
    g.bench_function("memcpy", |b| {
        b.iter(|| parallel_copy(black_box(&src), &mut dst))
    });
    g.finish();
}

/// ~300 tensors of assorted sizes adding up to about `total` elements.
fn tensor_lens(total: usize) -> Vec<usize> {
    let mut rng = SplitMix64::new(2);
    let weights: Vec<f64> = (0..300).map(|_| rng.uniform(0.1, 2.0)).collect();
    let sum: f64 = weights.iter().sum();
    weights
        .iter()
        .map(|w| ((w / sum) * total as f64) as usize + 1)
        .collect()
}

fn multi_tensor_group<T: Element>(c: &mut Criterion) {
    let k = 4;
    for total in [1 << 20, 16 << 20] {
        let lens = tensor_lens(total);
        let n: usize = lens.iter().sum();
        let mut rng = SplitMix64::new(3);
        let lists: Vec<Vec<Vec<T>>> = (0..k)
            .map(|_| random_list(&mut rng, &lens, Magnitude::Normal(1.0)))
            .collect();
        let slices: Vec<Vec<&[T]>> = lists.iter().map(|l| as_slices(l)).collect();
        let ops: Vec<Operand<'_, T>> = slices
            .iter()
            .map(|s| Operand::new(s, Transform::Identity))
            .collect();
        let flat: Vec<Vec<T>> = lists.iter().map(|l| l.concat()).collect();
        let src: Vec<T> = flat.concat();

        let gram_bytes = k * n * size_of::<T>();
        let mut g = configure(c, format!("gram/{}/K{k}x{}M", T::DTYPE, n >> 20));
        g.throughput(Throughput::Bytes(gram_bytes as u64));
        g.bench_function("fused", |b| b.iter(|| cpu::gram(black_box(&ops)).unwrap()));
        g.bench_function("naive", |b| {
            b.iter(|| {
                // One flattened dot per pair, as per-pair PCGrad implementations do.
                let mut s = 0.0f32;
                for i in 0..k {
                    for j in i..k {
                        s += flat[i]
                            .par_iter()
                            .zip(&flat[j])
                            .map(|(a, b)| a.to_f32() * b.to_f32())
                            .sum::<f32>();
                    }
                }
                black_box(s)
            })
        });
        let mut dst = vec![T::from_f32(0.0); gram_bytes / 2 / size_of::<T>()];
        g.bench_function("memcpy", |b| {
            b.iter(|| parallel_copy(&src[..dst.len()], black_box(&mut dst)))
        });
        g.finish();

        let combine_bytes = (k + 1) * n * size_of::<T>();
        let weights = vec![0.5f32; k];
        let mut out: Vec<Vec<T>> = lens.iter().map(|&l| vec![T::from_f32(0.0); l]).collect();
        let mut g = configure(c, format!("combine/{}/K{k}x{}M", T::DTYPE, n >> 20));
        g.throughput(Throughput::Bytes(combine_bytes as u64));
        g.bench_function("fused", |b| {
            b.iter(|| {
                let mut refs: Vec<&mut [T]> = out.iter_mut().map(Vec::as_mut_slice).collect();
                cpu::combine(&mut refs, None, black_box(&ops), &weights).unwrap()
            })
        });
        let mut acc = vec![0.0f32; n];
        let mut flat_out = vec![T::from_f32(0.0); n];
        g.bench_function("naive", |b| {
            b.iter(|| {
                acc.par_iter_mut().for_each(|v| *v = 0.0);
                for (f, w) in flat.iter().zip(&weights) {
                    acc.par_iter_mut()
                        .zip(f.par_iter())
                        .for_each(|(a, v)| *a += w * v.to_f32());
                }
                flat_out
                    .par_iter_mut()
                    .zip(acc.par_iter())
                    .for_each(|(o, a)| *o = T::from_f32(*a));
            })
        });
        let mut dst = vec![T::from_f32(0.0); combine_bytes / 2 / size_of::<T>()];
        g.bench_function("memcpy", |b| {
            b.iter(|| parallel_copy(&src[..dst.len()], black_box(&mut dst)))
        });
        g.finish();
    }
}

fn benches(c: &mut Criterion) {
    rows_group::<f32>(c);
    rows_group::<f16>(c);
    rows_group::<bf16>(c);
    multi_dir_group::<f32>(c);
    multi_dir_group::<bf16>(c);
    multi_tensor_group::<f32>(c);
    multi_tensor_group::<f16>(c);
    multi_tensor_group::<bf16>(c);
}

criterion_group!(surgery, benches);
criterion_main!(surgery);
