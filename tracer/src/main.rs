use std::time::Duration;

use anyhow::Context as _;
use clap::Parser as _;
use vmmtrace::{
    cli::{BenchArgs, Cli, Command},
    probe::ProbeOptions,
    record::{RecordOptions, record},
    report::{Report, render_text},
};

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let cli = Cli::parse();
    if let Command::Microvm(a) = &cli.command {
        // The emulator loop runs on the main thread, as QEMU's main loop does.
        std::process::exit(match microvm::cli::run(a) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("vmmtrace microvm: {}", vmmtrace::error::chain(e.as_ref()));
                1
            }
        });
    }
    let rt = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("vmmtrace: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    let code = match rt.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("vmmtrace: {}", vmmtrace::error::chain(e.as_ref()));
            1
        }
    };
    std::process::exit(code);
}

async fn run(cli: Cli) -> anyhow::Result<i32> {
    match cli.command {
        Command::Record(a) => {
            let opts = RecordOptions {
                duration: a.duration,
                output: a.output.clone(),
                command: a.command,
                live_interval: (a.interval > Duration::ZERO).then_some(a.interval),
                probe: ProbeOptions {
                    classic_sched_switch: a.classic_sched_switch,
                    kvm: !a.no_kvm,
                    ..Default::default()
                },
            };
            let out = record(opts).await?;
            eprint!("{}", render_text(&out.report, a.top));
            if out.interrupted {
                eprintln!("interrupted: report of the time traced so far");
            }
            eprintln!("report written to {}", a.output.display());
            Ok(out.exit_code)
        }
        Command::Report(a) => {
            let text = std::fs::read_to_string(&a.file).with_context(|| format!("cannot read {}", a.file.display()))?;
            let r = Report::from_json(&text).with_context(|| a.file.display().to_string())?;
            print!("{}", render_text(&r, a.top));
            Ok(0)
        }
        Command::Check(a) => {
            let opts = ProbeOptions { kvm: !a.no_kvm, ..Default::default() };
            let preflight = tokio::task::spawn_blocking(move || vmmtrace::check::run(&opts)).await?;
            print!("{}", vmmtrace::check::render(&preflight));
            Ok(if preflight.record_can_run() { 0 } else { 1 })
        }
        Command::Bench(a) => bench(a).await,
        Command::Microvm(_) => unreachable!("handled before the runtime starts"),
    }
}

async fn bench(a: BenchArgs) -> anyhow::Result<i32> {
    vmmtrace::probe::check_privileges()?;
    eprintln!("vmmtrace bench: {} round trips x 3 modes x {} repetitions...", a.rounds, a.reps);
    let (rounds, reps) = (a.rounds, a.reps);
    let rows = tokio::task::spawn_blocking(move || vmmtrace::bench::run(rounds, reps)).await??;
    print!("{}", vmmtrace::bench::render(&rows));
    if !a.no_kvm {
        match tokio::task::spawn_blocking(move || vmmtrace::bench::run_kvm(reps)).await? {
            Ok(rows) => print!("{}", vmmtrace::bench::render_kvm(&rows)),
            Err(e) => eprintln!("vmmtrace bench: KVM part skipped: {}", vmmtrace::error::chain(e.as_ref())),
        }
    }
    Ok(0)
}
