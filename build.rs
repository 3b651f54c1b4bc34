//! Build script. The CPU build compiles nothing here; the CUDA kernels under `kernels/` are
//! compiled by nvcc only when a CUDA feature is enabled.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
}
