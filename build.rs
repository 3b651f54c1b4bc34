//! Build script: with the `cuda-kernels` feature, compile every `kernels/*.cu` into one fatbin per
//! file (sm_80 and sm_90 machine code plus compute_90 PTX; `DGS_CUDA_ARCHS=80,90,...` overrides
//! the machine-code targets) into OUT_DIR, where `src/surgery/cuda` embeds them. Without the
//! feature it compiles nothing, so a machine without nvcc builds the CPU crate.
//!
//! The numbers both sides must agree on live in `src/surgery/contract.rs`; this script includes
//! that file and writes them to `OUT_DIR/dgs_contract.cuh`, which the kernels include.
//!
//! `DGS_GPU_TESTS=1` at build time turns the CUDA test cases from "ignored" into real tests (they
//! then fail if no device is present); see docs/gpu.md.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

#[allow(dead_code)]
mod contract {
    include!("src/surgery/contract.rs");
}

const INSTALL_HINT: &str = "Install the pinned CUDA 13.0 compiler (no GPU needed) with\n    \
     scripts/install-cuda-toolchain.sh && source .cuda/env.sh\n\
     or build without the kernels (drop --features cuda-kernels / cuda).";

fn main() {
    println!("cargo::rustc-check-cfg=cfg(dgs_gpu_tests)");
    println!("cargo:rerun-if-env-changed=DGS_GPU_TESTS");
    if env::var("DGS_GPU_TESTS").is_ok_and(|v| v == "1") {
        println!("cargo:rustc-cfg=dgs_gpu_tests");
    }
    if env::var_os("CARGO_FEATURE_CUDA_KERNELS").is_none() {
        return;
    }
    for var in [
        "NVCC",
        "CUDA_HOME",
        "CUDA_PATH",
        "CUDA_ROOT",
        "PATH",
        "DGS_CUDA_ARCHS",
        "NVCC_APPEND_FLAGS",
        "NVCC_PREPEND_FLAGS",
    ] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    // The folder itself, so that a kernel file added or removed reruns this script.
    println!("cargo:rerun-if-changed=kernels");
    println!("cargo:rerun-if-changed=src/surgery/contract.rs");
    println!("cargo:rerun-if-changed=kernels/contract_header.rs");
    let kernels = Path::new("kernels");
    let mut sources = Vec::new();
    for entry in
        std::fs::read_dir(kernels).unwrap_or_else(|e| fail(&format!("cannot read kernels/: {e}")))
    {
        let path = entry
            .unwrap_or_else(|e| fail(&format!("cannot read kernels/: {e}")))
            .path();
        match path.extension().and_then(|e| e.to_str()) {
            Some("cu") => sources.push(path.clone()),
            Some("cuh") => {}
            _ => continue,
        }
        println!("cargo:rerun-if-changed={}", path.display());
    }
    sources.sort();
    let nvcc = find_nvcc().unwrap_or_else(|| {
        fail(&format!(
            "feature `cuda-kernels` is on but nvcc was not found (looked at $NVCC, \
             $CUDA_HOME/bin, $CUDA_PATH/bin, $CUDA_ROOT/bin and PATH).\n{INSTALL_HINT}"
        ))
    });
    let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    write_contract(&out.join("dgs_contract.cuh"));
    let gencode = gencode_args(&nvcc);
    for src in &sources {
        let stem = src
            .file_stem()
            .and_then(|s| s.to_str())
            .expect("kernel file name is UTF-8");
        let dst = out.join(format!("{stem}.fatbin"));
        let mut cmd = Command::new(&nvcc);
        cmd.args([
            "--fatbin",
            "-O3",
            "-std=c++17",
            "-lineinfo",
            "-Werror",
            "all-warnings",
        ])
        .args(&gencode)
        .arg("-I")
        .arg(kernels)
        .arg("-I")
        .arg(&out)
        .arg("-o")
        .arg(&dst)
        .arg(src);
        let shown = format!("{cmd:?}");
        let output = cmd
            .output()
            .unwrap_or_else(|e| fail(&format!("could not run {shown}: {e}\n{INSTALL_HINT}")));
        if !output.status.success() {
            fail(&format!(
                "nvcc failed on {}\ncommand: {shown}\n--- stdout\n{}\n--- stderr\n{}\n{INSTALL_HINT}",
                src.display(),
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ));
        }
    }
}

fn find_nvcc() -> Option<PathBuf> {
    if let Some(p) = env::var_os("NVCC") {
        return Some(PathBuf::from(p));
    }
    for var in ["CUDA_HOME", "CUDA_PATH", "CUDA_ROOT"] {
        if let Some(root) = env::var_os(var) {
            let p = PathBuf::from(root).join("bin").join("nvcc");
            if p.is_file() {
                return Some(p);
            }
        }
    }
    let ok = Command::new("nvcc")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    ok.then(|| PathBuf::from("nvcc"))
}

/// `src/surgery/contract.rs` as a CUDA header.
fn write_contract(path: &Path) {
    std::fs::write(path, contract_header("build.rs"))
        .unwrap_or_else(|e| fail(&format!("cannot write {}: {e}", path.display())));
}

include!("kernels/contract_header.rs");

/// The compute capabilities `nvcc` can build for (`nvcc --list-gpu-arch`), if it says.
fn supported_archs(nvcc: &Path) -> Option<Vec<u32>> {
    let out = Command::new(nvcc).arg("--list-gpu-arch").output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let archs: Vec<u32> = text
        .split_whitespace()
        .filter_map(|w| w.strip_prefix("compute_")?.parse().ok())
        .collect();
    (out.status.success() && !archs.is_empty()).then_some(archs)
}

/// Machine code for each listed architecture, PTX for the newest so later GPUs can JIT it. An
/// architecture this nvcc cannot build for is refused here, with the list it can.
fn gencode_args(nvcc: &Path) -> Vec<String> {
    let archs = env::var("DGS_CUDA_ARCHS").unwrap_or_else(|_| "80,90".into());
    let mut archs: Vec<u32> = archs
        .split(',')
        .map(|a| {
            a.trim().parse().unwrap_or_else(|_| {
                fail(&format!(
                    "DGS_CUDA_ARCHS: `{a}` is not a number like 80 or 90"
                ))
            })
        })
        .collect();
    archs.sort_unstable();
    archs.dedup();
    if let Some(supported) = supported_archs(nvcc) {
        if let Some(bad) = archs.iter().find(|a| !supported.contains(a)) {
            let list: Vec<String> = supported.iter().map(u32::to_string).collect();
            fail(&format!(
                "DGS_CUDA_ARCHS: this nvcc cannot build for {bad}; it can build for {}",
                list.join(",")
            ));
        }
    }
    let newest = *archs
        .last()
        .unwrap_or_else(|| fail("DGS_CUDA_ARCHS is empty"));
    let mut args = Vec::new();
    for a in &archs {
        let code = if *a == newest {
            format!("[sm_{a},compute_{a}]")
        } else {
            format!("sm_{a}")
        };
        args.push("-gencode".to_string());
        args.push(format!("arch=compute_{a},code={code}"));
    }
    args
}

fn fail(msg: &str) -> ! {
    eprintln!("error: {msg}");
    std::process::exit(1)
}
