//! The multi-tensor Adam kernel (`kernels/adam.cu`, `CudaSurgery::adam`) against its CPU twin
//! (`surgery::cpu::adam::update`), bit for bit: tensors of awkward lengths (one element, a
//! work item and one more, several work items), gradients in f32, f16 and bf16, with and without
//! a gradient scale, several steps; and the optimiser's CUDA path (`train::Adam` on CUDA
//! variables, one launch) against the same optimiser on the CPU. GPU cases, run in a
//! DGS_GPU_TESTS=1 build (docs/gpu.md).
#![cfg(feature = "cuda-kernels")]

mod common;

/// The GPU cases live in `cuda` so the GPU check's `cuda::` filter selects them.
mod cuda {
    use dgs::surgery::Element;
    use dgs::surgery::contract::LIST_ITEM;
    use dgs::surgery::cpu::adam::{AdamStep, update};
    use dgs::surgery::rng::SplitMix64;
    use dgs::surgery::verify::{Magnitude, random_elems};

    use super::common;
    use crate::for_each_dtype;

    fn step(t: i32, grad_scale: f32) -> AdamStep {
        let (b1, b2, lr) = (0.9f64, 0.999f64, 1e-3f64);
        AdamStep {
            beta1: b1 as f32,
            beta2: b2 as f32,
            one_minus_beta1: (1.0 - b1) as f32,
            one_minus_beta2: (1.0 - b2) as f32,
            step_size: (lr / (1.0 - b1.powi(t))) as f32,
            bias2_sqrt: (1.0 - b2.powi(t)).sqrt() as f32,
            eps: 1e-8,
            grad_scale,
        }
    }

    fn same_bits(what: &str, got: &[f32], want: &[f32]) {
        assert_eq!(got.len(), want.len(), "{what}: lengths");
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert_eq!(g.to_bits(), w.to_bits(), "{what}[{i}]: got {g}, want {w}");
        }
    }

    fn check<T: Element>(seed: u64) {
        let backend = common::cuda_backend();
        let (surgery, s) = (backend.surgery(), backend.stream());
        let lens = [1, 7, LIST_ITEM, LIST_ITEM + 1, 3 * LIST_ITEM + 5, 50_000];
        let mut rng = SplitMix64::new(seed);
        let mut draw = |n: usize| random_elems::<f32>(&mut rng, n, Magnitude::Normal(1.0));
        let mut host: Vec<[Vec<f32>; 3]> = lens
            .iter()
            .map(|&n| [draw(n), vec![0.0; n], vec![0.0; n]])
            .collect();
        let up = |v: &[f32]| s.clone_htod(v).expect("upload");
        let mut dev: Vec<_> = host.iter().map(|[p, m, v]| [up(p), up(m), up(v)]).collect();
        for t in 1..=3 {
            let grad_scale = if t == 2 { 0.5 } else { 1.0 };
            let st = step(t, grad_scale);
            let grads: Vec<Vec<T>> = lens
                .iter()
                .map(|&n| random_elems(&mut rng, n, Magnitude::Normal(1.0)))
                .collect();
            for ([p, m, v], g) in host.iter_mut().zip(&grads) {
                let wide: Vec<f32> = g.iter().map(|e| e.to_f32()).collect();
                update(&st, p, &wide, m, v);
            }
            let g_dev: Vec<_> = grads
                .iter()
                .map(|g| s.clone_htod(g).expect("upload"))
                .collect();
            let g_views: Vec<_> = g_dev.iter().map(|g| g.slice(..)).collect();
            let mut p_views = Vec::new();
            let (mut m_views, mut v_views) = (Vec::new(), Vec::new());
            for [p, m, v] in dev.iter_mut() {
                p_views.push(p.slice_mut(..));
                m_views.push(m.slice_mut(..));
                v_views.push(v.slice_mut(..));
            }
            surgery
                .adam(s, &mut p_views, &g_views, (&mut m_views, &mut v_views), &st)
                .expect("adam");
        }
        for (i, ([p, m, v], [pd, md, vd])) in host.iter().zip(&dev).enumerate() {
            let down = |d: &_| s.clone_dtoh(d).expect("download");
            let what = format!("{} tensor {i} ({} elements)", T::DTYPE, lens[i]);
            same_bits(&format!("{what}: parameter"), &down(pd), p);
            same_bits(&format!("{what}: first moment"), &down(md), m);
            same_bits(&format!("{what}: second moment"), &down(vd), v);
        }
    }

    #[test]
    #[cfg_attr(
        not(dgs_gpu_tests),
        ignore = "skipped: no CUDA device (GPU cases run in a DGS_GPU_TESTS=1 build, see docs/gpu.md)"
    )]
    fn one_launch_equals_the_cpu_update_bit_for_bit() {
        for_each_dtype!(T => check::<T>(5));
    }

    #[test]
    #[cfg_attr(
        not(dgs_gpu_tests),
        ignore = "skipped: no CUDA device (GPU cases run in a DGS_GPU_TESTS=1 build, see docs/gpu.md)"
    )]
    fn mismatched_lists_are_refused_before_any_launch() {
        let backend = common::cuda_backend();
        let (surgery, s) = (backend.surgery(), backend.stream());
        let (mut p, mut m, mut v) = (
            s.alloc_zeros::<f32>(4).expect("alloc"),
            s.alloc_zeros::<f32>(4).expect("alloc"),
            s.alloc_zeros::<f32>(4).expect("alloc"),
        );
        let g = s.alloc_zeros::<f32>(5).expect("alloc");
        let err = surgery
            .adam(
                s,
                &mut [p.slice_mut(..)],
                &[g.slice(..)],
                (&mut [m.slice_mut(..)], &mut [v.slice_mut(..)]),
                &step(1, 1.0),
            )
            .expect_err("a gradient of another length");
        assert!(err.to_string().contains("`grads`"), "{err}");
    }

    /// `train::Adam` on CUDA variables (one launch per step) and on CPU variables (the CPU
    /// pass): the same parameters, bit for bit, after steps with and without loss scaling.
    #[cfg(feature = "cuda")]
    #[test]
    #[cfg_attr(
        not(dgs_gpu_tests),
        ignore = "skipped: no CUDA device (GPU cases run in a DGS_GPU_TESTS=1 build, see docs/gpu.md)"
    )]
    fn the_optimiser_on_cuda_equals_the_optimiser_on_the_cpu() {
        use candle_core::{Device, Tensor, Var};
        let run = |device: &Device| -> Vec<Vec<f32>> {
            let shapes: [&[usize]; 4] = [&[3], &[6, 1024], &[17, 33], &[1024, 6]];
            let vars: Vec<Var> = shapes
                .iter()
                .enumerate()
                .map(|(i, s)| {
                    let n: usize = s.iter().product();
                    let v: Vec<f32> = (0..n).map(|j| ((i * 7 + j) as f32 * 0.37).sin()).collect();
                    Var::from_tensor(&Tensor::from_vec(v, *s, device).unwrap()).unwrap()
                })
                .collect();
            let params = vars
                .iter()
                .enumerate()
                .map(|(i, v)| (format!("p{i}"), v.clone()))
                .collect();
            let mut adam = dgs::train::Adam::new(params, Default::default()).unwrap();
            for step in 0..3 {
                let mut loss = Tensor::zeros((), candle_core::DType::F32, device).unwrap();
                // Σ p ⊙ g has gradient g, the same bits on both devices.
                for (i, v) in vars.iter().enumerate() {
                    let n = v.as_tensor().elem_count();
                    let g: Vec<f32> = (0..n)
                        .map(|j| ((step * 31 + i * 7 + j) as f32).cos())
                        .collect();
                    let g = Tensor::from_vec(g, v.shape(), device).unwrap();
                    let term = (v.as_tensor() * g).unwrap().sum_all().unwrap();
                    loss = (loss + term).unwrap();
                }
                let grads = loss.backward().unwrap();
                match step {
                    1 => adam.step_scaled(&grads, 0.5).unwrap(),
                    _ => adam.step(&grads).unwrap(),
                }
            }
            vars.iter()
                .map(|v| v.as_tensor().flatten_all().unwrap().to_vec1().unwrap())
                .collect()
        };
        let cuda = Device::new_cuda(0).expect("a CUDA device");
        let (on_gpu, on_cpu) = (run(&cuda), run(&Device::Cpu));
        for (i, (g, c)) in on_gpu.iter().zip(&on_cpu).enumerate() {
            same_bits(&format!("parameter {i}"), g, c);
        }
    }
}
