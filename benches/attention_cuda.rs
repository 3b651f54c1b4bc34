//! The fused attention kernels on the GPU (feature `cuda-kernels`; run on a GPU machine, see
//! docs/gpu.md), at CLIP's training shapes in bf16: forward, and forward + backward. Throughput
//! is in FLOPs ("elements" in criterion's output): 4·B·H·T²·64 for the forward (half of it when
//! causal) and 3.5× that for forward + backward (the backward's five products), so `Gelem/s`
//! reads as GFLOP/s. `scripts/torch_reference.py` times PyTorch's `scaled_dot_product_attention`
//! on the same shapes in the same GPU check.

use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use dgs::half::bf16;
use dgs::ops::attention::cuda::{AttentionKernels, AttentionShape, HEAD_DIM, HeadLayout, Heads};
use dgs::surgery::cuda::CudaSurgery;
use dgs::surgery::cuda::cudarc::driver::{CudaSlice, CudaStream, CudaView};
use dgs::surgery::rng::SplitMix64;
use dgs::surgery::verify::{Magnitude, random_elems};

#[path = "common/cuda_timing.rs"]
mod cuda_timing;

use cuda_timing::{group, timed};

/// (name, batch, heads, t, causal): ViT-L/14's and ViT-B/32's vision layers, the text tower.
const SHAPES: [(&str, usize, usize, usize, bool); 3] = [
    ("vit-l14", 32, 16, 257, false),
    ("vit-b32", 32, 12, 50, false),
    ("text", 32, 12, 77, true),
];

fn upload(stream: &Arc<CudaStream>, n: usize, seed: u64) -> CudaSlice<bf16> {
    let v: Vec<bf16> = random_elems(&mut SplitMix64::new(seed), n, Magnitude::Normal(1.0));
    stream.clone_htod(&v).expect("upload")
}

fn operand<'a>(data: &'a CudaView<'a, bf16>, layout: HeadLayout) -> Heads<'a, bf16> {
    Heads { data, layout }
}

fn bench_shape(
    c: &mut Criterion,
    kernels: &AttentionKernels,
    stream: &Arc<CudaStream>,
    spec: (&str, usize, usize, usize, bool),
) {
    let (name, batch, heads, t, causal) = spec;
    let shape = AttentionShape {
        batch,
        heads,
        t,
        scale: 0.125,
        causal,
    };
    let n = batch * heads * t * HEAD_DIM;
    let rows = batch * heads * t;
    let l = HeadLayout::contiguous(heads, t);
    let [q, k, v, d_o] = [1, 2, 3, 4].map(|seed| upload(stream, n, seed));
    let (qv, kv, vv, dov) = (q.slice(..), k.slice(..), v.slice(..), d_o.slice(..));
    let mut o = stream.alloc_zeros::<bf16>(n).expect("alloc");
    let mut lse = stream.alloc_zeros::<f32>(rows).expect("alloc");
    let mut grads: Vec<CudaSlice<bf16>> = (0..3)
        .map(|_| stream.alloc_zeros(n).expect("alloc"))
        .collect();
    let mut delta = stream.alloc_zeros::<f32>(rows).expect("alloc");
    let forward_flops = (4 * batch * heads * t * t * HEAD_DIM / if causal { 2 } else { 1 }) as u64;
    let tag = format!(
        "{name}/B{batch}xH{heads}xT{t}{}",
        if causal { "/causal" } else { "" }
    );

    let mut g = group(
        c,
        format!("cuda_attention_forward/bf16/{tag}"),
        Throughput::Elements(forward_flops),
    );
    g.bench_function("fused", |b| {
        timed(b, stream, || {
            kernels
                .forward(
                    stream,
                    &shape,
                    [operand(&qv, l), operand(&kv, l), operand(&vv, l)],
                    (&mut o.slice_mut(..), l),
                    &mut lse.slice_mut(..),
                )
                .expect("forward");
        })
    });
    g.finish();

    let mut g = group(
        c,
        format!("cuda_attention_forward_backward/bf16/{tag}"),
        Throughput::Elements(forward_flops * 7 / 2),
    );
    g.bench_function("fused", |b| {
        timed(b, stream, || {
            kernels
                .forward(
                    stream,
                    &shape,
                    [operand(&qv, l), operand(&kv, l), operand(&vv, l)],
                    (&mut o.slice_mut(..), l),
                    &mut lse.slice_mut(..),
                )
                .expect("forward");
            let (ov, lv) = (o.slice(..), lse.slice(..));
            let [g0, g1, g2] = &mut grads[..] else {
                unreachable!("three gradients")
            };
            kernels
                .backward(
                    stream,
                    &shape,
                    [operand(&qv, l), operand(&kv, l), operand(&vv, l)],
                    [operand(&ov, l), operand(&dov, l)],
                    &lv,
                    [
                        &mut g0.slice_mut(..),
                        &mut g1.slice_mut(..),
                        &mut g2.slice_mut(..),
                    ],
                    &mut delta.slice_mut(..),
                )
                .expect("backward");
        })
    });
    g.finish();
}

fn benches(c: &mut Criterion) {
    let surgery = match CudaSurgery::new(0) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("skipped: no CUDA device ({e})");
            return;
        }
    };
    let kernels =
        AttentionKernels::with_context(surgery.context().clone()).expect("attention kernels");
    let stream = surgery.context().new_stream().expect("stream");
    eprintln!("device: {}", surgery.device_name());
    for spec in SHAPES {
        bench_shape(c, &kernels, &stream, spec);
    }
}

criterion_group!(attention_cuda, benches);
criterion_main!(attention_cuda);
