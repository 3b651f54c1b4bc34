//! The float64 attention reference (`dgs::ops::attention::reference`): its gradients against
//! central differences of its own forward, and its forward and gradients against attention
//! written as candle tensor ops under autograd (f64), causal and not, at awkward lengths; with
//! `cuda-kernels`, the fused CUDA kernels against it (`attention/cuda.rs`, GPU cases).

mod common;

use approx::assert_relative_eq;
use candle_core::{D, Device, Tensor, Var};
use dgs::ops::attention::reference::{self, Attention, Head};
use dgs::surgery::rng::SplitMix64;

fn draw(rng: &mut SplitMix64, n: usize) -> Vec<f64> {
    (0..n).map(|_| rng.normal()).collect()
}

/// q, k, v and the output gradient for one head of `t × d`.
fn operands(t: usize, d: usize, seed: u64) -> [Vec<f64>; 4] {
    let mut rng = SplitMix64::new(seed);
    [
        draw(&mut rng, t * d),
        draw(&mut rng, t * d),
        draw(&mut rng, t * d),
        draw(&mut rng, t * d),
    ]
}

fn loss(a: &Attention, t: usize, d: usize, q: &[f64], k: &[f64], v: &[f64], g: &[f64]) -> f64 {
    let o = reference::forward(a, &Head { q, k, v, t, d }).o;
    o.iter().zip(g).map(|(o, g)| o * g).sum()
}

#[test]
fn gradients_match_central_differences() {
    for (t, causal) in [(1, false), (5, false), (7, true), (13, true)] {
        let d = 4;
        let a = Attention { scale: 0.6, causal };
        let [q, k, v, g] = operands(t, d, t as u64);
        let grads = reference::backward(
            &a,
            &Head {
                q: &q,
                k: &k,
                v: &v,
                t,
                d,
            },
            &g,
        );
        let h = 1e-5;
        for (which, analytic) in [(0, &grads.dq), (1, &grads.dk), (2, &grads.dv)] {
            for idx in 0..t * d {
                let mut ops = [q.clone(), k.clone(), v.clone()];
                ops[which][idx] += h;
                let up = loss(&a, t, d, &ops[0], &ops[1], &ops[2], &g);
                ops[which][idx] -= 2.0 * h;
                let down = loss(&a, t, d, &ops[0], &ops[1], &ops[2], &g);
                let fd = (up - down) / (2.0 * h);
                assert_relative_eq!(analytic[idx], fd, epsilon = 1e-7, max_relative = 1e-6);
            }
        }
    }
}

/// Attention as tensor ops: `softmax(s·QKᵀ + mask) V`.
fn tensor_ops(a: &Attention, q: &Tensor, k: &Tensor, v: &Tensor, t: usize) -> Tensor {
    let mut s = (q.matmul(&k.t().unwrap()).unwrap() * a.scale).unwrap();
    if a.causal {
        s = (s + common::causal_mask_f64(t)).unwrap();
    }
    candle_nn::ops::softmax(&s, D::Minus1)
        .unwrap()
        .matmul(v)
        .unwrap()
}

#[test]
fn equals_the_materialised_tensor_op_attention() {
    // CLIP's head size at the lengths the towers use and at awkward ones.
    for (t, causal) in [
        (1, false),
        (50, false),
        (63, true),
        (65, false),
        (77, true),
        (257, false),
    ] {
        let d = 64;
        let a = Attention {
            scale: (d as f64).powf(-0.5),
            causal,
        };
        let [q, k, v, g] = operands(t, d, 100 + t as u64);
        let head = Head {
            q: &q,
            k: &k,
            v: &v,
            t,
            d,
        };
        let (fwd, grads) = (
            reference::forward(&a, &head),
            reference::backward(&a, &head, &g),
        );
        let var = |x: &[f64]| {
            Var::from_tensor(&Tensor::from_vec(x.to_vec(), (t, d), &Device::Cpu).unwrap()).unwrap()
        };
        let (qv, kv, vv) = (var(&q), var(&k), var(&v));
        let o = tensor_ops(&a, &qv, &kv, &vv, t);
        let gt = Tensor::from_vec(g.clone(), (t, d), &Device::Cpu).unwrap();
        let store = (&o * &gt).unwrap().sum_all().unwrap().backward().unwrap();
        let flat = |x: &Tensor| x.flatten_all().unwrap().to_vec1::<f64>().unwrap();
        let pairs = [
            ("output", fwd.o, flat(&o)),
            ("dq", grads.dq, flat(store.get(&qv).unwrap())),
            ("dk", grads.dk, flat(store.get(&kv).unwrap())),
            ("dv", grads.dv, flat(store.get(&vv).unwrap())),
        ];
        for (what, got, want) in pairs {
            for (x, y) in got.iter().zip(&want) {
                assert!(x.is_finite(), "t {t} {what}: {x}");
                assert_relative_eq!(*x, *y, epsilon = 1e-12, max_relative = 1e-9);
            }
        }
        assert!(
            fwd.lse.iter().all(|l| l.is_finite()),
            "t {t}: every row's log-sum-exp is finite"
        );
    }
}

#[cfg(feature = "cuda-kernels")]
#[path = "attention/cuda.rs"]
mod cuda;
