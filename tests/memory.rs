//! Parameter memory, measured by counting every heap allocation of this test binary: the frozen
//! base weights are held once (teacher = student with adapters off), and a DGS step adds only
//! the optimizer state and gradients of what trains — never a second copy of the base.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use candle_core::{DType, Device, Tensor};
use dgs::clip::{Clip, ClipConfig, Fill, LoraConfig, SeededWeights};
use dgs::train::{Detector, OwnedBatch, Stage, Stage2Config, Stage2Trainer};

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts bytes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size, Ordering::Relaxed);
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: same contract as our caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn live() -> usize {
    LIVE.load(Ordering::Relaxed)
}

fn detector(config: ClipConfig, dtype: DType, fill: Fill) -> Detector {
    let dev = Device::Cpu;
    let lora = LoraConfig::default();
    let adapters = candle_nn::VarMap::new();
    let clip = Clip::from_backend(
        config,
        Box::new(SeededWeights::new(fill)),
        dtype,
        &dev,
        Some((
            &lora,
            candle_nn::VarBuilder::from_varmap(&adapters, DType::F32, &dev),
        )),
    )
    .unwrap();
    Detector::from_parts(clip, lora, adapters, &dev).unwrap()
}

/// Both counts in one test: the allocator counter is process-wide, so nothing else may run
/// beside it.
#[test]
fn base_weights_are_held_once() {
    // ViT-L/14 (the paper's model) in f16, zeros: the bytes the model holds, counted as loaded
    // and as allocated.
    let before = live();
    let big = detector(ClipConfig::vit_l14(), DType::F16, Fill::Zeros);
    let held = live() - before;
    let p = big.parameter_bytes();
    println!(
        "ViT-L/14 f16: base {} B ({} parameters), LoRA {} B, heads {} B; heap grew {} B",
        p.base,
        p.base / 2,
        p.lora,
        p.heads,
        held
    );
    // openai/clip-vit-large-patch14 has 427,616,513 parameters, one of them `logit_scale`,
    // which a detector does not use.
    assert_eq!(p.base, 2 * 427_616_512);
    assert!(
        held >= p.total() && held < p.total() + p.total() / 50,
        "heap grew {held} B for {p:?}: more than one copy of the base weights?"
    );
    drop(big);

    // The demo model through full DGS steps: after two warm-up steps (Adam moments, lazily
    // made buffers and thread-local scratch), a further step keeps nothing like another copy of
    // the base weights — its transient buffers are all freed.
    let det = detector(ClipConfig::demo(), DType::F32, Fill::Seeded(3));
    let base = det.parameter_bytes().base;
    let mut trainer = Stage2Trainer::new(
        det.trainables(Stage::Two),
        Stage2Config {
            variant: dgs::train::Variant::Dgs,
            ..Default::default()
        },
    )
    .unwrap();
    let dev = Device::Cpu;
    let (b, t) = (8, 16);
    let batch = OwnedBatch {
        pixels: Tensor::randn(0f32, 1.0, (b, 3, 224, 224), &dev).unwrap(),
        captions: Tensor::from_vec(
            [1u32, 2, 63].repeat(b * t / 3 + 1)[..b * t].to_vec(),
            (b, t),
            &dev,
        )
        .unwrap(),
        labels: Tensor::from_vec((0..b).map(|i| (i % 2) as f32).collect(), b, &dev).unwrap(),
    };
    for _ in 0..2 {
        trainer.epoch(&det, [Ok(batch.clone())], |_| {}).unwrap();
    }
    let before = live();
    trainer.epoch(&det, [Ok(batch)], |_| {}).unwrap();
    let grown = live().saturating_sub(before);
    println!("demo model: base {base} B; a third DGS step kept {grown} B");
    assert!(
        grown < base / 4,
        "a third step kept {grown} B; the base weights are {base} B"
    );
}
