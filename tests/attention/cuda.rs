//! The fused CUDA attention kernels against the float64 reference, from the same rounded inputs:
//! output, log-sum-exp and the three gradients, f16 and bf16, lengths 1 to 300 (on either side
//! of the 64-row tile), causal and not, contiguous heads and the fused `[batch, t, 3, heads, 64]`
//! projection layout; and the same bits on a second run. GPU cases (DGS_GPU_TESTS=1 build).

use std::sync::Arc;

use dgs::ops::attention::cuda::{AttentionKernels, AttentionShape, HEAD_DIM, HeadLayout, Heads};
use dgs::ops::attention::reference::{self, Attention, Head};
use dgs::surgery::Element;
use dgs::surgery::cuda::cudarc::driver::{CudaSlice, CudaStream};
use dgs::surgery::rng::SplitMix64;
use dgs::surgery::verify::{Magnitude, random_elems};

const D: usize = HEAD_DIM;

/// How Q, K and V lie in memory: their own `[batch, heads, t, 64]` buffers, or views of one
/// `[batch, t, 3, heads, 64]` projection (what the layer's fused q/k/v product writes).
#[derive(Clone, Copy, Debug)]
enum Layout {
    Separate,
    Fused,
}

struct Case {
    batch: usize,
    heads: usize,
    t: usize,
    causal: bool,
    layout: Layout,
}

/// The layouts of q, k, v (and the element offset of each in its buffer), and the buffer length.
fn qkv_layouts(c: &Case) -> ([(HeadLayout, usize); 3], usize) {
    match c.layout {
        Layout::Separate => {
            let l = HeadLayout::contiguous(c.heads, c.t);
            ([(l, 0); 3], c.batch * c.heads * c.t * D)
        }
        Layout::Fused => {
            let row = 3 * c.heads * D;
            let l = HeadLayout {
                batch_stride: c.t * row,
                head_stride: D,
                row_stride: row,
            };
            (
                [(l, 0), (l, c.heads * D), (l, 2 * c.heads * D)],
                c.batch * c.t * row,
            )
        }
    }
}

/// One head's `t × 64` values out of a host buffer.
fn gather<T: Element>(
    buf: &[T],
    l: HeadLayout,
    offset: usize,
    b: usize,
    h: usize,
    t: usize,
) -> Vec<f64> {
    let start = offset + b * l.batch_stride + h * l.head_stride;
    (0..t)
        .flat_map(|i| {
            buf[start + i * l.row_stride..][..D]
                .iter()
                .map(|e| e.to_f64())
        })
        .collect()
}

/// `got` within `tol · max|want|` of `want`, and finite exactly where `want` is.
#[track_caller]
fn assert_close(what: &str, got: &[f64], want: &[f64], tol: f64) {
    let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs())).max(1e-6);
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            g.is_finite() == w.is_finite() && approx::abs_diff_eq!(*g, *w, epsilon = tol * scale),
            "{what}[{i}]: got {g}, want {w}, allowed |diff| {:e}",
            tol * scale
        );
    }
}

/// Relative tolerances (to the largest reference value): the output rounds P and O to the
/// storage type, the gradients also dS; bf16 has 8 significant bits, f16 11.
fn tolerances<T: Element>() -> (f64, f64) {
    match T::DTYPE {
        dgs::surgery::DType::BF16 => (2e-2, 5e-2),
        _ => (4e-3, 1e-2),
    }
}

struct Device {
    kernels: AttentionKernels,
    stream: Arc<CudaStream>,
}

fn device() -> Device {
    let backend = crate::common::cuda_backend();
    let ctx = backend.surgery().context().clone();
    Device {
        kernels: AttentionKernels::with_context(ctx).expect("attention kernels load"),
        stream: backend.stream().clone(),
    }
}

/// Everything the device computed, downloaded.
struct Results<T> {
    o: Vec<T>,
    lse: Vec<f32>,
    dqkv: [Vec<T>; 3],
    /// In the fused layout: the gradients from `backward_packed`, packed into one buffer.
    packed: Option<Vec<T>>,
}

fn run_device<T: Element>(
    dev: &Device,
    c: &Case,
    shape: &AttentionShape,
    qkv: &[Vec<T>; 3],
    d_o: &[T],
) -> Results<T> {
    let s = &dev.stream;
    let (layouts, len) = qkv_layouts(c);
    let o_layout = HeadLayout::contiguous(c.heads, c.t);
    let rows = c.batch * c.heads * c.t;
    let up: Vec<CudaSlice<T>> = qkv
        .iter()
        .map(|v| s.clone_htod(v).expect("upload"))
        .collect();
    let views: Vec<_> = up
        .iter()
        .zip(&layouts)
        .map(|(buf, (_, off))| buf.slice(*off..))
        .collect();
    let heads = |i: usize| Heads {
        data: &views[i],
        layout: layouts[i].0,
    };
    let mut o = s.alloc_zeros::<T>(rows * D).expect("alloc");
    let mut lse = s.alloc_zeros::<f32>(rows).expect("alloc");
    dev.kernels
        .forward(
            s,
            shape,
            [heads(0), heads(1), heads(2)],
            (&mut o.slice_mut(..), o_layout),
            &mut lse.slice_mut(..),
        )
        .expect("forward");
    let d_o_dev = s.clone_htod(d_o).expect("upload");
    let (o_view, do_view, lse_view) = (o.slice(..), d_o_dev.slice(..), lse.slice(..));
    let mut grads: Vec<CudaSlice<T>> = (0..3)
        .map(|_| s.alloc_zeros::<T>(len).expect("alloc"))
        .collect();
    let mut delta = s.alloc_zeros::<f32>(rows).expect("alloc");
    {
        let [g0, g1, g2] = &mut grads[..] else {
            unreachable!()
        };
        let (off0, off1, off2) = (layouts[0].1, layouts[1].1, layouts[2].1);
        dev.kernels
            .backward(
                s,
                shape,
                [heads(0), heads(1), heads(2)],
                [
                    Heads {
                        data: &o_view,
                        layout: o_layout,
                    },
                    Heads {
                        data: &do_view,
                        layout: o_layout,
                    },
                ],
                &lse_view,
                [
                    &mut g0.slice_mut(off0..),
                    &mut g1.slice_mut(off1..),
                    &mut g2.slice_mut(off2..),
                ],
                &mut delta.slice_mut(..),
            )
            .expect("backward");
    }
    let down = |b: &CudaSlice<T>| s.clone_dtoh(b).expect("download");
    // The three views share one buffer's contents: `up[0]` holds the whole packed projection.
    let packed = matches!(c.layout, Layout::Fused).then(|| {
        let mut dqkv = s.alloc_zeros::<T>(len).expect("alloc");
        let mut delta = s.alloc_zeros::<f32>(rows).expect("alloc");
        let outputs = [
            Heads {
                data: &o_view,
                layout: o_layout,
            },
            Heads {
                data: &do_view,
                layout: o_layout,
            },
        ];
        dev.kernels
            .backward_packed(
                s,
                shape,
                &up[0].slice(..),
                outputs,
                &lse_view,
                &mut dqkv.slice_mut(..),
                &mut delta.slice_mut(..),
            )
            .expect("packed backward");
        down(&dqkv)
    });
    Results {
        o: down(&o),
        lse: s.clone_dtoh(&lse).expect("download"),
        dqkv: [down(&grads[0]), down(&grads[1]), down(&grads[2])],
        packed,
    }
}

fn check_case<T: Element>(dev: &Device, c: &Case, seed: u64) {
    let (layouts, len) = qkv_layouts(c);
    let mut rng = SplitMix64::new(seed);
    // In the fused layout the three views share one buffer: draw it once.
    let qkv: [Vec<T>; 3] = match c.layout {
        Layout::Separate => {
            std::array::from_fn(|_| random_elems(&mut rng, len, Magnitude::Normal(1.0)))
        }
        Layout::Fused => {
            let one: Vec<T> = random_elems(&mut rng, len, Magnitude::Normal(1.0));
            [one.clone(), one.clone(), one]
        }
    };
    let rows = c.batch * c.heads * c.t;
    let d_o: Vec<T> = random_elems(&mut rng, rows * D, Magnitude::Normal(1.0));
    let shape = AttentionShape {
        batch: c.batch,
        heads: c.heads,
        t: c.t,
        scale: 0.125,
        causal: c.causal,
    };
    let got = run_device(dev, c, &shape, &qkv, &d_o);
    let again = run_device(dev, c, &shape, &qkv, &d_o);
    let bits = |v: &[T]| v.iter().map(|e| e.to_f64().to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&got.o), bits(&again.o), "O differs between runs");
    for (g, a) in got.dqkv.iter().zip(&again.dqkv) {
        assert_eq!(bits(g), bits(a), "a gradient differs between runs");
    }
    if let Some(packed) = &got.packed {
        // Each element belongs to q, k or v by its column: the same bits as that gradient.
        let part = c.heads * D;
        for (i, e) in packed.iter().enumerate() {
            let which = (i % (3 * part)) / part;
            let want = got.dqkv[which][i].to_f64().to_bits();
            assert_eq!(
                e.to_f64().to_bits(),
                want,
                "packed gradient element {i} differs"
            );
        }
    }
    let (out_tol, grad_tol) = tolerances::<T>();
    let o_layout = HeadLayout::contiguous(c.heads, c.t);
    let a = Attention {
        scale: 0.125,
        causal: c.causal,
    };
    for b in 0..c.batch {
        for h in 0..c.heads {
            let what = format!(
                "{:?} {:?} b{b} h{h} t{} causal {}",
                T::DTYPE,
                c.layout,
                c.t,
                c.causal
            );
            let [q, k, v] =
                std::array::from_fn(|i| gather(&qkv[i], layouts[i].0, layouts[i].1, b, h, c.t));
            let head = Head {
                q: &q,
                k: &k,
                v: &v,
                t: c.t,
                d: D,
            };
            let want = reference::forward(&a, &head);
            assert_close(
                &format!("{what}: O"),
                &gather(&got.o, o_layout, 0, b, h, c.t),
                &want.o,
                out_tol,
            );
            let lse: Vec<f64> = got.lse[(b * c.heads + h) * c.t..][..c.t]
                .iter()
                .map(|&v| f64::from(v))
                .collect();
            assert_close(&format!("{what}: lse"), &lse, &want.lse, 1e-5);
            let grads = reference::backward(&a, &head, &gather(&d_o, o_layout, 0, b, h, c.t));
            for (i, (name, want)) in [("dQ", &grads.dq), ("dK", &grads.dk), ("dV", &grads.dv)]
                .into_iter()
                .enumerate()
            {
                let got_head = gather(&got.dqkv[i], layouts[i].0, layouts[i].1, b, h, c.t);
                assert_close(&format!("{what}: {name}"), &got_head, want, grad_tol);
            }
        }
    }
}

fn cases() -> Vec<Case> {
    let mut all = Vec::new();
    for (batch, heads, t) in [
        (2, 2, 1),
        (1, 2, 50),
        (1, 1, 63),
        (2, 1, 65),
        (1, 2, 77),
        (1, 1, 257),
        (1, 1, 300),
    ] {
        for causal in [false, true] {
            all.push(Case {
                batch,
                heads,
                t,
                causal,
                layout: Layout::Separate,
            });
        }
    }
    for (t, causal) in [(65, false), (77, true)] {
        all.push(Case {
            batch: 2,
            heads: 2,
            t,
            causal,
            layout: Layout::Fused,
        });
    }
    all
}

#[test]
#[cfg_attr(
    not(dgs_gpu_tests),
    ignore = "skipped: no CUDA device (GPU cases run in a DGS_GPU_TESTS=1 build, see docs/gpu.md)"
)]
fn fused_attention_matches_the_reference() {
    let dev = device();
    for (i, c) in cases().iter().enumerate() {
        check_case::<dgs::half::f16>(&dev, c, i as u64);
        check_case::<dgs::half::bf16>(&dev, c, 100 + i as u64);
    }
}

#[test]
#[cfg_attr(
    not(dgs_gpu_tests),
    ignore = "skipped: no CUDA device (GPU cases run in a DGS_GPU_TESTS=1 build, see docs/gpu.md)"
)]
fn unsupported_inputs_are_refused_before_any_launch() {
    let dev = device();
    let s = &dev.stream;
    let shape = AttentionShape {
        batch: 1,
        heads: 1,
        t: 4,
        scale: 0.125,
        causal: false,
    };
    let l = HeadLayout::contiguous(1, 4);
    let q32 = s.alloc_zeros::<f32>(4 * D).expect("alloc");
    let v32 = q32.slice(..);
    let h32 = Heads {
        data: &v32,
        layout: l,
    };
    let mut o32 = s.alloc_zeros::<f32>(4 * D).expect("alloc");
    let mut lse = s.alloc_zeros::<f32>(4).expect("alloc");
    let err = dev
        .kernels
        .forward(
            s,
            &shape,
            [h32, h32, h32],
            (&mut o32.slice_mut(..), l),
            &mut lse.slice_mut(..),
        )
        .expect_err("f32 is refused");
    assert!(err.to_string().contains("f16 or bf16"), "{err}");
    let q = s.alloc_zeros::<dgs::half::f16>(4 * D).expect("alloc");
    let short = q.slice(..3 * D);
    let full = q.slice(..);
    let mut o = s.alloc_zeros::<dgs::half::f16>(4 * D).expect("alloc");
    let hs = Heads {
        data: &short,
        layout: l,
    };
    let hf = Heads {
        data: &full,
        layout: l,
    };
    let err = dev
        .kernels
        .forward(
            s,
            &shape,
            [hs, hf, hf],
            (&mut o.slice_mut(..), l),
            &mut lse.slice_mut(..),
        )
        .expect_err("a short q is refused");
    assert!(err.to_string().contains("`q`"), "{err}");
    let odd = HeadLayout {
        row_stride: 68,
        ..l
    };
    let err = dev
        .kernels
        .forward(
            s,
            &shape,
            [
                Heads {
                    data: &full,
                    layout: odd,
                },
                hf,
                hf,
            ],
            (&mut o.slice_mut(..), l),
            &mut lse.slice_mut(..),
        )
        .expect_err("strides that break 16-byte loads are refused");
    assert!(err.to_string().contains("multiples of 8"), "{err}");
    let two_heads = AttentionShape { heads: 2, ..shape };
    let q2 = s.alloc_zeros::<dgs::half::f16>(8 * D).expect("alloc");
    let v2 = q2.slice(..);
    let l2 = HeadLayout::contiguous(2, 4);
    let h2 = Heads {
        data: &v2,
        layout: l2,
    };
    let mut o2 = s.alloc_zeros::<dgs::half::f16>(8 * D).expect("alloc");
    let mut lse2 = s.alloc_zeros::<f32>(8).expect("alloc");
    let overlapping = HeadLayout {
        head_stride: D,
        ..l2
    };
    let err = dev
        .kernels
        .forward(
            s,
            &two_heads,
            [h2, h2, h2],
            (&mut o2.slice_mut(..), overlapping),
            &mut lse2.slice_mut(..),
        )
        .expect_err("an output whose heads overlap is refused");
    assert!(err.to_string().contains("overlap"), "{err}");
}
