//! The layer op on CUDA (cuBLASLt products, the row kernels, the fused attention, the Philox
//! dropout) against its CPU twin from the same rounded operands: output, input gradient and the
//! adapters' gradients, f16 and bf16, vision and causal text shapes at head size 64, with and
//! without dropout, pooled rows, and the same bits on a second run. GPU cases, run in a
//! DGS_GPU_TESTS=1 build (docs/gpu.md).

use std::sync::Arc;

use candle_core::{DType, Device, Tensor, Var};
use dgs::ops::block::{Adapters, LayerWeights, block, block_pooled};

use super::{
    BASE, Case, Inputs, Results, SCALE, assert_close, cast_weights, config, dropout_of, flat,
    inputs,
};

/// The weights in `dtype` on `device`.
fn weights_on(w: &LayerWeights, dtype: DType, device: &Device) -> Arc<LayerWeights> {
    let on = |t: &Tensor| t.to_dtype(dtype).unwrap().to_device(device).unwrap();
    let moved = |(w, b): &(Tensor, Tensor)| (on(w), on(b));
    Arc::new(LayerWeights::new(
        moved(&w.ln1),
        moved(&w.qkv),
        moved(&w.out),
        moved(&w.ln2),
        moved(&w.fc1),
        moved(&w.fc2),
    ))
}

/// The op's results on `device`: operands of `dtype` (adapters in f32, as the model keeps
/// them), the loss `Σ out ⊙ g`; `pooled` selects one output row per image.
/// How a call is made: one output row per image at `pooled`; whether the input carries a
/// gradient (a layer above the frozen embeddings) and the layer has adapters; and how many
/// backward passes run through the one graph (the second recomputes what the first took).
#[derive(Clone, Copy, Debug)]
struct Call<'a> {
    pooled: Option<&'a [usize]>,
    x_trainable: bool,
    adapters: bool,
    backward_passes: usize,
}

const FULL: Call<'static> = Call {
    pooled: None,
    x_trainable: true,
    adapters: true,
    backward_passes: 1,
};

/// The op's results on `device`: operands of `dtype` (adapters in f32, as the model keeps
/// them), the loss `Σ out ⊙ g`; gradients that do not exist are empty. With several backward
/// passes, the last pass's gradients.
fn run_on(device: &Device, case: Case, inp: &Inputs, dtype: DType, call: Call<'_>) -> Results {
    let to = |t: &Tensor, d: DType| t.to_dtype(d).unwrap().to_device(device).unwrap();
    let w = weights_on(&inp.w, dtype, device);
    let x = Var::from_tensor(&to(&inp.x, dtype)).unwrap();
    let x_in = match call.x_trainable {
        true => x.as_tensor().clone(),
        false => x.as_tensor().detach(),
    };
    let (a, b) = (
        Var::from_tensor(&to(&inp.a, DType::F32)).unwrap(),
        Var::from_tensor(&to(&inp.b, DType::F32)).unwrap(),
    );
    let adapters = call.adapters.then_some(Adapters {
        a: &a,
        b: &b,
        scale: SCALE,
        dropout: dropout_of(case),
        images: None,
    });
    let (out, g) = match call.pooled {
        None => (
            block(&x_in, &w, config(case), adapters).unwrap(),
            to(&inp.g, dtype),
        ),
        Some(rows) => (
            block_pooled(&x_in, &w, config(case), adapters, rows).unwrap(),
            to(&inp.g.narrow(1, 0, 1).unwrap(), dtype),
        ),
    };
    let loss = (out.to_dtype(DType::F32).unwrap() * g.to_dtype(DType::F32).unwrap()).unwrap();
    let loss = loss.sum_all().unwrap();
    let mut results = Results {
        out: flat(&out),
        dx: Vec::new(),
        da: Vec::new(),
        db: Vec::new(),
    };
    if !(call.x_trainable || call.adapters) {
        return results;
    }
    for _ in 0..call.backward_passes {
        let grads = loss.backward().unwrap();
        let get = |v: &Var| grads.get(v).map(flat).unwrap_or_default();
        (results.dx, results.da, results.db) = (get(&x), get(&a), get(&b));
    }
    results
}

/// Rounded operands, so both sides start from the same numbers.
fn rounded(case: Case, dtype: DType, seed: u64) -> Inputs {
    let mut inp = inputs(case, seed);
    let round = |t: &Tensor, d: DType| t.to_dtype(d).unwrap().to_dtype(DType::F64).unwrap();
    inp.w = cast_weights(&cast_weights(&inp.w, dtype), DType::F64);
    (inp.x, inp.g) = (round(&inp.x, dtype), round(&inp.g, dtype));
    // The device op casts the adapters to the activations' type: both sides start from those.
    (inp.a, inp.b) = (round(&inp.a, dtype), round(&inp.b, dtype));
    inp
}

/// Relative to the largest value: the device rounds every intermediate (q/k/v, the MLP
/// pre-activation, the attention output) to the storage type, the twin only its output.
fn tolerance(dtype: DType) -> f64 {
    match dtype {
        DType::F16 => 1e-2,
        _ => 5e-2,
    }
}

fn cuda() -> Device {
    Device::new_cuda(0).expect("a CUDA device")
}

fn check(case: Case, dtype: DType, call: Call<'_>) {
    let inp = rounded(case, dtype, 7);
    let gpu = run_on(&cuda(), case, &inp, dtype, call);
    let cpu = run_on(&Device::Cpu, case, &inp, dtype, call);
    let (what, tol) = (format!("{case:?} {dtype:?} {call:?}"), tolerance(dtype));
    assert_close(&format!("{what}: output"), &gpu.out, &cpu.out, tol);
    // The input gradient less the identity path's `dy` (which would dominate its scale),
    // where every row has a gradient.
    let less_dy = |dx: &[f64]| -> Vec<f64> {
        match call.pooled {
            None => dx.iter().zip(flat(&inp.g)).map(|(d, g)| d - g).collect(),
            Some(_) => dx.to_vec(),
        }
    };
    for (name, got, want) in [
        ("input gradient", less_dy(&gpu.dx), less_dy(&cpu.dx)),
        ("A gradient", gpu.da.clone(), cpu.da.clone()),
        ("B gradient", gpu.db.clone(), cpu.db.clone()),
    ] {
        assert_eq!(
            got.is_empty(),
            want.is_empty(),
            "{what}: {name} present on one side only"
        );
        assert_close(&format!("{what}: {name}"), &got, &want, tol);
    }
}

/// Head size 64: the fused attention's.
const WIDE: Case = Case {
    channels: 128,
    heads: 2,
    ..BASE
};

#[test]
#[cfg_attr(
    not(dgs_gpu_tests),
    ignore = "skipped: no CUDA device (GPU cases run in a DGS_GPU_TESTS=1 build, see docs/gpu.md)"
)]
fn the_device_layer_matches_its_cpu_twin() {
    for dtype in [DType::F16, DType::BF16] {
        for seq in [1, 17, 50, 65] {
            check(Case { seq, ..WIDE }, dtype, FULL);
        }
        let causal = Case {
            seq: 77,
            causal: true,
            ..WIDE
        };
        check(causal, dtype, FULL);
        // Rank 6 with 33 tokens: the adapters' down-projection blocks need padding.
        let dropout = Case {
            seq: 33,
            dropout: 0.8,
            rank: 6,
            ..WIDE
        };
        check(dropout, dtype, FULL);
        let pooled = Case {
            seq: 20,
            batch: 3,
            ..WIDE
        };
        let rows = Call {
            pooled: Some(&[0, 19, 7]),
            ..FULL
        };
        check(pooled, dtype, rows);
        // The text tower's last layer: causal, one row per image.
        check(
            Case {
                causal: true,
                ..pooled
            },
            dtype,
            rows,
        );
        // ViT-B's width (cuBLASLt picks other algorithms at real sizes).
        let vit_b = Case {
            channels: 768,
            heads: 12,
            seq: 50,
            rank: 6,
            dropout: 0.8,
            ..BASE
        };
        check(vit_b, dtype, FULL);
    }
}

#[test]
#[cfg_attr(
    not(dgs_gpu_tests),
    ignore = "skipped: no CUDA device (GPU cases run in a DGS_GPU_TESTS=1 build, see docs/gpu.md)"
)]
fn every_kind_of_call_matches_its_cpu_twin() {
    let case = Case {
        seq: 37,
        dropout: 0.5,
        ..WIDE
    };
    for dtype in [DType::F16, DType::BF16] {
        // The first layer: the input carries no gradient, so its gradient is skipped.
        let first = Call {
            x_trainable: false,
            ..FULL
        };
        // The teacher and the text tower: no adapters, no backward.
        let frozen = Call {
            x_trainable: false,
            adapters: false,
            ..FULL
        };
        // A layer without adapters under a trainable one: only the input gradient.
        let plain = Call {
            adapters: false,
            ..FULL
        };
        // A second backward through the same graph recomputes what the first one took.
        let twice = Call {
            backward_passes: 2,
            ..FULL
        };
        for call in [first, frozen, plain, twice] {
            check(case, dtype, call);
        }
    }
}

#[test]
#[cfg_attr(
    not(dgs_gpu_tests),
    ignore = "skipped: no CUDA device (GPU cases run in a DGS_GPU_TESTS=1 build, see docs/gpu.md)"
)]
fn the_device_layer_gives_the_same_bits_twice() {
    let case = Case {
        seq: 50,
        dropout: 0.5,
        ..WIDE
    };
    let inp = rounded(case, DType::BF16, 3);
    let device = cuda();
    let first = run_on(&device, case, &inp, DType::BF16, FULL);
    let second = run_on(&device, case, &inp, DType::BF16, FULL);
    for (name, a, b) in [
        ("output", &first.out, &second.out),
        ("input gradient", &first.dx, &second.dx),
        ("A gradient", &first.da, &second.da),
        ("B gradient", &first.db, &second.db),
    ] {
        let same = a
            .iter()
            .zip(b.iter())
            .all(|(x, y)| x.to_bits() == y.to_bits());
        assert!(same, "{name}: the second run differs");
    }
}

#[test]
#[cfg_attr(
    not(dgs_gpu_tests),
    ignore = "skipped: no CUDA device (GPU cases run in a DGS_GPU_TESTS=1 build, see docs/gpu.md)"
)]
fn f32_and_other_head_sizes_are_refused_with_a_reason() {
    let device = cuda();
    let narrow = Case {
        channels: 96,
        heads: 3,
        ..BASE
    };
    for (case, dtype, want) in [
        (WIDE, DType::F32, "the device layer takes f16 or bf16"),
        (narrow, DType::BF16, "head size of 64"),
    ] {
        let inp = rounded(case, dtype, 1);
        let w = weights_on(&inp.w, dtype, &device);
        let x = inp.x.to_dtype(dtype).unwrap().to_device(&device).unwrap();
        let err = block(&x, &w, config(case), None)
            .expect_err("refused")
            .to_string();
        assert!(err.contains(want), "{case:?} {dtype:?}: {err}");
    }
}
