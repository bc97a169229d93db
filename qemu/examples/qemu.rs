//! `cargo run -p vmm-qemu --example qemu -- --vcpus 2 --workload loop ...`: the same
//! front end as `vmmtrace qemu`, without the tracer.

use clap::Parser as _;

#[derive(clap::Parser)]
struct Args {
    #[command(flatten)]
    qemu: vmm_qemu::cli::QemuArgs,
}

fn main() {
    if let Err(e) = vmm_qemu::cli::run(&Args::parse().qemu) {
        eprintln!("qemu: {e:#}");
        std::process::exit(1);
    }
}
