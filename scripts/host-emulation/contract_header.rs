// Prints `dgs_contract.cuh` exactly as build.rs writes it (both include
// kernels/contract_header.rs), from src/surgery/contract.rs, so the host emulation checks the
// kernels against the current contract without a cargo build.
#![allow(dead_code)]

mod contract {
    include!("../../src/surgery/contract.rs");
}

include!("../../kernels/contract_header.rs");

fn main() {
    print!("{}", contract_header("scripts/host-emulation/contract_header.rs"));
}
