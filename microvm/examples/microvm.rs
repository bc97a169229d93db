//! Stand-alone front end of `vmmtrace microvm` (same flags), for trying the micro-VM
//! without the tracer: `cargo run -p microvm --example microvm -- --vcpus 2 --workload loop`.
use clap::Parser;

#[derive(Parser)]
#[command(about = "Run the built-in micro-VM and print its ground truth as JSON")]
struct Cli {
    #[command(flatten)]
    args: microvm::cli::MicrovmArgs,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    microvm::cli::run(&cli.args)
}
