//! The device API itself (beyond the shared host-slice bodies): clean failure without a device,
//! bit-reproducibility, PCGrad entirely on the device, and many tensors per launch.
#![cfg(feature = "cuda-kernels")]

mod common;

use common::assert_passed;
use dgs::half::f16;
use dgs::surgery::compare::{compare, to_f64};
use dgs::surgery::cuda::cudarc::driver::{CudaSlice, CudaView};
use dgs::surgery::cuda::{
    CudaSurgery, CudaSurgeryError, DeviceRowProjection, DeviceRowStats, OutputList, PcGradScratch,
    TensorLists,
};
use dgs::surgery::rng::SplitMix64;
use dgs::surgery::verify::{
    Magnitude, check_gram, lists_as_slices, pcgrad_tolerance, random_elems, random_lists,
};
use dgs::surgery::{Gram, HostBackend, Operand, Reduction, Transform, reference, solve};

#[test]
fn a_missing_device_is_a_clean_error() {
    match CudaSurgery::new(9999) {
        Err(CudaSurgeryError::NoCudaDevice(msg)) => assert!(!msg.is_empty()),
        Err(other) => panic!("expected NoCudaDevice, got {other}"),
        Ok(_) => panic!("device 9999 should not exist"),
    }
}

#[test]
#[cfg_attr(
    not(dgs_gpu_tests),
    ignore = "skipped: no CUDA device (GPU cases run in a DGS_GPU_TESTS=1 build, see docs/gpu.md)"
)]
fn device_results_are_bit_reproducible() {
    let backend = common::cuda_backend();
    let (gpu, stream) = (backend.surgery(), backend.stream());
    let mut rng = SplitMix64::new(21);
    let (rows, dim) = (257, 769);
    let x: Vec<f16> = random_elems(&mut rng, rows * dim, Magnitude::Normal(1.0));
    let h: Vec<f16> = random_elems(&mut rng, rows * dim, Magnitude::Normal(1.0));
    let hd = stream.clone_htod(&h).unwrap();
    let run = || -> (Vec<f16>, Vec<f32>) {
        let mut xd = stream.clone_htod(&x).unwrap();
        let mut coef: CudaSlice<f32> = stream.alloc_zeros(rows).unwrap();
        let p = DeviceRowProjection::new(rows, dim, hd.slice(..));
        let mut cv = coef.slice_mut(..);
        gpu.dgs_rows(
            stream,
            &mut xd.slice_mut(..),
            &p,
            DeviceRowStats {
                coef: Some(&mut cv),
                harm_norm: None,
            },
        )
        .unwrap();
        (
            stream.clone_dtoh(&xd).unwrap(),
            stream.clone_dtoh(&coef).unwrap(),
        )
    };
    let (a, b) = (run(), run());
    assert!(
        a.0.iter()
            .zip(&b.0)
            .all(|(u, v)| u.to_bits() == v.to_bits())
    );
    assert!(
        a.1.iter()
            .zip(&b.1)
            .all(|(u, v)| u.to_bits() == v.to_bits())
    );

    let lens: Vec<usize> = (0..300).map(|t| (t * 7919) % 200_000 + 1).collect();
    let lists = random_lists::<f32>(&mut rng, 3, &lens);
    let slices = lists_as_slices(&lists);
    let ops: Vec<Operand<'_, f32>> = slices
        .iter()
        .map(|s| Operand::new(s, Transform::Relu))
        .collect();
    let g1 = backend.gram(&ops).unwrap();
    let g2 = backend.gram(&ops).unwrap();
    let bits = |g: &Gram| {
        g.as_row_major()
            .iter()
            .map(|v| v.to_bits())
            .collect::<Vec<_>>()
    };
    assert_eq!(bits(&g1), bits(&g2));
}

/// Gram → solve → combine with every step on the device: the weights equal the host solver's on
/// the same Gram matrix bit for bit, and the merged gradient matches the literal algorithm.
#[test]
#[cfg_attr(
    not(dgs_gpu_tests),
    ignore = "skipped: no CUDA device (GPU cases run in a DGS_GPU_TESTS=1 build, see docs/gpu.md)"
)]
fn pcgrad_runs_entirely_on_the_device() {
    let backend = common::cuda_backend();
    let (gpu, stream) = (backend.surgery(), backend.stream());
    let mut rng = SplitMix64::new(5);
    for tasks in [2, 4, 8] {
        let lens: Vec<usize> = (0..300)
            .map(|t| [1, 63, 64, 65, 65_535, 65_537, 3001][t % 7])
            .collect();
        let lists = random_lists::<f16>(&mut rng, tasks, &lens);
        let host_slices = lists_as_slices(&lists);
        let dev: Vec<Vec<CudaSlice<f16>>> = lists
            .iter()
            .map(|l| l.iter().map(|t| stream.clone_htod(t).unwrap()).collect())
            .collect();
        let views: Vec<Vec<CudaView<'_, f16>>> = dev
            .iter()
            .map(|l| l.iter().map(|t| t.slice(..)).collect())
            .collect();
        let refs: Vec<&[CudaView<'_, f16>]> = views.iter().map(Vec::as_slice).collect();
        let mut table = TensorLists::new(gpu, stream, &refs).unwrap();
        let mut out: Vec<CudaSlice<f16>> = lens
            .iter()
            .map(|&n| stream.alloc_zeros(n).unwrap())
            .collect();
        let mut out_views: Vec<_> = out.iter_mut().map(|t| t.slice_mut(..)).collect();
        let mut out_list = OutputList::new(gpu, stream, &mut out_views).unwrap();
        let mut scratch = PcGradScratch::new(stream, tasks).unwrap();
        let seed = 1234 + tasks as u64;
        gpu.pcgrad(
            stream,
            &mut table,
            &mut out_list,
            seed,
            Reduction::Mean,
            &mut scratch,
        )
        .unwrap();
        drop(out_list);

        let gram = Gram::from_row_major(
            tasks,
            stream.clone_dtoh(&scratch.gram).unwrap()[..tasks * tasks].to_vec(),
        )
        .unwrap();
        let weights = stream.clone_dtoh(&scratch.weights).unwrap();
        let host = solve::pcgrad(&gram, seed, Reduction::Mean).unwrap();
        assert_eq!(
            weights[..tasks]
                .iter()
                .map(|w| w.to_bits())
                .collect::<Vec<_>>(),
            host.weights.iter().map(|w| w.to_bits()).collect::<Vec<_>>(),
            "device and host solvers differ for {tasks} tasks"
        );
        let task_refs: Vec<&[&[f16]]> = host_slices.iter().map(Vec::as_slice).collect();
        let expected = reference::pcgrad_sequential(&task_refs, seed, Reduction::Mean);
        let got: Vec<f64> = out
            .iter()
            .flat_map(|t| to_f64(&stream.clone_dtoh(t).unwrap()))
            .collect();
        assert_passed(
            &compare(&got, &expected, pcgrad_tolerance(dgs::surgery::DType::F16)),
            "device pcgrad",
        );
    }
}

/// Far more tensors than a by-value argument table could hold, in one launch.
#[test]
#[cfg_attr(
    not(dgs_gpu_tests),
    ignore = "skipped: no CUDA device (GPU cases run in a DGS_GPU_TESTS=1 build, see docs/gpu.md)"
)]
fn thousands_of_tensors_per_launch() {
    let backend = common::cuda_backend();
    let lens: Vec<usize> = (0..5000).map(|t| 1 + (t * 31) % 97).collect();
    let r = check_gram::<f32, _>(
        &backend,
        &lens,
        4,
        &[Transform::Identity, Transform::Relu],
        3,
    )
    .unwrap();
    assert_passed(&r, "5000 tensors");
}
