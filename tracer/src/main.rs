use std::time::Duration;

use anyhow::Context as _;
use clap::Parser as _;
use vmmtrace::{
    cli::{BenchArgs, Cli, Command},
    diagnose::{Thresholds, diagnose},
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
    if let Command::Qemu(a) = &cli.command {
        std::process::exit(match vmm_qemu::cli::run(a) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("vmmtrace qemu: {e:#}");
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
                probe: a.probes.options(),
                ledger_top: a.ledger_top,
                timeline: a
                    .timeline
                    .clone()
                    .map(|path| vmmtrace::perfetto::TimelineOptions { path, limit: a.timeline_limit }),
            };
            let out = record(opts).await?;
            eprint!("{}", render_text(&out.report, a.top));
            if let Some(top) = diagnose(&out.report, &Thresholds::default()).first() {
                eprintln!(
                    "top finding (vmmtrace diagnose {} for all): {}\n  Remedy: {}",
                    a.output.display(),
                    top.summary,
                    top.remedy
                );
            }
            if out.interrupted {
                eprintln!("interrupted: report of the time traced so far");
            }
            eprintln!("report written to {}", a.output.display());
            Ok(out.exit_code)
        }
        Command::Serve(a) => {
            let opts = vmmtrace::serve::ServeOptions { listen: a.listen, probe: a.probes.options(), watch: a.watch };
            vmmtrace::serve::serve(opts).await?;
            Ok(0)
        }
        Command::Report(a) => {
            if let Some(result) = read_experiment(&a.file) {
                match &a.out {
                    Some(dir) => {
                        let findings = vmmtrace::experiment::findings::findings(&result);
                        for f in vmmtrace::experiment::charts::write_dir(&result, &findings, dir)? {
                            println!("{}: {} and {}", f.title, f.svg.display(), f.png.display());
                        }
                        println!("open {}", dir.join("index.html").display());
                    }
                    None => print!("{}", vmmtrace::experiment::table::render(&result)),
                }
                return Ok(0);
            }
            let r = read_report(&a.file)?;
            match &a.out {
                Some(dir) => {
                    let findings = diagnose(&r, &Thresholds::default());
                    let files = vmmtrace::report::charts::write_dir(&r, &findings, dir)?;
                    for f in &files {
                        println!("{}: {} and {}", f.title, f.svg.display(), f.png.display());
                    }
                    println!("open {}", dir.join("index.html").display());
                }
                None => print!("{}", render_text(&r, a.top)),
            }
            Ok(0)
        }
        Command::Diagnose(a) => {
            let findings = match read_experiment(&a.file) {
                Some(result) => vmmtrace::experiment::findings::findings(&result),
                None => diagnose(&read_report(&a.file)?, &a.thresholds()),
            };
            if a.json {
                println!("{}", serde_json::to_string_pretty(&findings)?);
            } else {
                print!("{}", vmmtrace::diagnose::render_text(&findings));
            }
            Ok(0)
        }
        Command::Check(a) => {
            let opts = ProbeOptions { kvm: !a.no_kvm, classic_kvm: a.classic_kvm, ..Default::default() };
            let preflight = tokio::task::spawn_blocking(move || vmmtrace::check::run(&opts)).await?;
            print!("{}", vmmtrace::check::render(&preflight));
            Ok(if preflight.record_can_run() { 0 } else { 1 })
        }
        Command::Bench(a) => bench(a).await,
        Command::Experiment(a) => experiment(a).await,
        Command::Microvm(_) | Command::Qemu(_) => unreachable!("handled before the runtime starts"),
    }
}

fn read_report(path: &std::path::Path) -> anyhow::Result<Report> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    Report::from_json(&text).with_context(|| path.display().to_string())
}

async fn bench(a: BenchArgs) -> anyhow::Result<i32> {
    vmmtrace::probe::check_privileges()?;
    eprintln!(
        "vmmtrace bench: {} round trips x {} modes x {} repetitions...",
        a.rounds,
        vmmtrace::bench::MODES.len(),
        a.reps
    );
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

async fn experiment(a: vmmtrace::cli::ExperimentArgs) -> anyhow::Result<i32> {
    use std::io::IsTerminal as _;
    let opts = vmmtrace::experiment::ExperimentOptions {
        config: vmmtrace::experiment::config_from_cli(&a)?,
        output: a.output.clone(),
        resume: a.resume,
        progress: std::io::stderr().is_terminal(),
    };
    let out = tokio::task::spawn_blocking(move || vmmtrace::experiment::run_experiment(&opts)).await??;
    print!("{}", vmmtrace::experiment::table::render(&out.result));
    eprintln!("result written to {}", a.output.display());
    if out.interrupted {
        eprintln!(
            "interrupted: {} of {} runs kept; continue with --resume",
            out.result.runs.len(),
            out.result.plan.len()
        );
        return Ok(130);
    }
    Ok(0)
}

/// The experiment result (`vmmtrace-experiment/1`) in `path`, if it is one. Its
/// summary is derived from the runs: recomputed, so older files get what this version
/// derives.
fn read_experiment(path: &std::path::Path) -> Option<vmmtrace::experiment::ExperimentResult> {
    let text = std::fs::read_to_string(path).ok()?;
    let mut r = vmmtrace::experiment::ExperimentResult::from_json(&text).ok()?;
    r.summary = vmmtrace::experiment::decompose::summarize(&r.runs, r.config.plan.cpus.len());
    Some(r)
}
