//! The command line (clap), nothing else.

use std::{path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "vmmtrace",
    version,
    about = "Where does the CPU of a KVM host go: to the guests, or to the hypervisor?",
    long_about = "vmmtrace traces every CPU of this host with eBPF and tells, per thread and per core, \
how much time went to guests (vCPU threads), to the hypervisor (KVM exit handling, QEMU's own threads, \
vhost, host kernel threads) and to everything else. Run it as root."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Trace the whole host for a duration, until Ctrl-C, or around a command; write a JSON report.
    Record(RecordArgs),
    /// Trace continuously and serve the figures to Prometheus at http://ADDR/metrics.
    Serve(ServeArgs),
    /// Print a report file as text, or draw its charts and index.html with --out DIR.
    Report(ReportArgs),
    /// Say what is wrong in a report, in plain words, most costly first, with remedies.
    Diagnose(DiagnoseArgs),
    /// Preflight: whether each part of vmmtrace works on this host, why not, and what to do.
    /// Exits with 1 when `record` could not run.
    Check(CheckArgs),
    /// Run a real KVM micro-VM (no image needed): vCPU threads running bzip2 or a compute
    /// loop at native speed, with a QEMU-like emulator thread; prints its ground truth as JSON.
    Microvm(microvm::cli::MicrovmArgs),
    /// Run the guest workloads under real QEMU (-M microvm, a PVH guest built from source):
    /// vCPU threads found with QMP and pinned, QEMU's threads and roles in the ground truth JSON.
    Qemu(vmm_qemu::cli::QemuArgs),
    /// Measure the per-event cost of the probes (kernel BPF statistics) under a context-switch load.
    Bench(BenchArgs),
    /// Re-run the 2011 study's experiments here: N-1 against N jobs of real bzip2 and GNU Go,
    /// pinned and not, every run traced, every job's slowdown decomposed into its causes.
    Experiment(ExperimentArgs),
}

#[derive(Args, Debug)]
#[command(
    after_help = "Examples:\n  vmmtrace record --duration 10\n  vmmtrace record -o bzip2.json -- bzip2 -9 -k big.tar\n  vmmtrace record --timeline bzip2-timeline.json -- bzip2 -9 -k big.tar   # open it in ui.perfetto.dev\n\nThe report is written atomically at the end, also on Ctrl-C, SIGTERM or SIGHUP. \
With a command, vmmtrace exits with the command's exit code."
)]
pub struct RecordArgs {
    /// Stop after this long: seconds (e.g. 10, 2.5) or with a unit (500ms, 30s, 2m).
    // allow_hyphen_values: `-d -5` reaches parse_duration, which says why it is
    // refused, instead of clap's "unexpected argument '-5'".
    #[arg(short, long, value_name = "SECS", value_parser = parse_duration, allow_hyphen_values = true)]
    pub duration: Option<Duration>,
    /// Where to write the JSON report.
    #[arg(short, long, value_name = "FILE", default_value = "vmmtrace-report.json")]
    pub output: PathBuf,
    /// Seconds between live summary lines on stderr (0 = none).
    #[arg(long, value_name = "SECS", default_value = "1", value_parser = parse_duration_or_zero, allow_hyphen_values = true)]
    pub interval: Duration,
    /// Threads to list in the summary at the end.
    #[arg(long, default_value_t = 10)]
    pub top: usize,
    #[command(flatten)]
    pub probes: ProbeArgs,
    /// (victim, thief) pairs to list in the report's ledger.
    #[arg(long, value_name = "N", default_value_t = 200)]
    pub ledger_top: usize,
    /// Also write every context switch, wakeup and migration as a Chrome trace-event
    /// JSON timeline to FILE (open it in ui.perfetto.dev).
    #[arg(long, value_name = "FILE.json")]
    pub timeline: Option<PathBuf>,
    /// Events the timeline keeps at most; the rest are counted and reported.
    #[arg(long, value_name = "N", default_value_t = crate::perfetto::DEFAULT_LIMIT, requires = "timeline")]
    pub timeline_limit: u64,
    /// Command to run and trace (everything after --); tracing ends when it exits.
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<String>,
}

#[derive(Args, Debug)]
#[command(after_help = "Examples:\n  vmmtrace serve\n  vmmtrace serve --listen 0.0.0.0:9477 --watch 1234\n\n\
Runs until SIGINT or SIGTERM. Scrape config, metrics and the Grafana dashboard: docs/user-guide.md, Prometheus and Grafana.")]
pub struct ServeArgs {
    /// Address and port to serve /metrics on (port 0: any free port, printed on stdout).
    #[arg(long, value_name = "ADDR", default_value = crate::serve::DEFAULT_LISTEN, value_parser = parse_listen)]
    pub listen: std::net::SocketAddr,
    /// Count this process's threads, and what they fork, as role `workload` (repeatable).
    #[arg(long, value_name = "PID")]
    pub watch: Vec<u32>,
    #[command(flatten)]
    pub probes: ProbeArgs,
}

/// Which probes `record` and `serve` attach, and how big their maps are.
#[derive(Args, Debug)]
pub struct ProbeArgs {
    /// Use the classic sched_switch tracepoint even where tp_btf works.
    #[arg(long)]
    pub classic_sched_switch: bool,
    /// Attach the kvm tracepoints as classic tracepoints even where their tp_btf
    /// programs work (those need no tracefs).
    #[arg(long)]
    pub classic_kvm: bool,
    /// Do not attach the KVM probes.
    #[arg(long)]
    pub no_kvm: bool,
    /// Do not keep run-queue states and the preemption ledger (no sched_wakeup probes,
    /// no run-queue wait by thief; each context switch then costs less).
    #[arg(long)]
    pub no_ledger: bool,
    /// Threads alive at once that the kernel maps hold (threads that exit are retired
    /// from them every second); the identity and run-queue maps hold twice as many.
    #[arg(long, value_name = "N", default_value_t = crate::probe::DEFAULT_MAX_THREADS,
          value_parser = clap::value_parser!(u32).range(16..=4_194_304))]
    pub max_threads: u32,
}

impl ProbeArgs {
    pub fn options(&self) -> crate::probe::ProbeOptions {
        crate::probe::ProbeOptions {
            classic_sched_switch: self.classic_sched_switch,
            classic_kvm: self.classic_kvm,
            kvm: !self.no_kvm,
            ledger: !self.no_ledger,
            max_threads: self.max_threads,
            ..Default::default()
        }
    }
}

/// `--listen`: an IP address and a port.
fn parse_listen(s: &str) -> Result<std::net::SocketAddr, String> {
    s.trim().parse().map_err(|_| {
        format!("'{s}' is not an address and port: give IP:PORT, e.g. 127.0.0.1:9477, 0.0.0.0:9477 or [::1]:9477")
    })
}

#[derive(Args, Debug)]
#[command(
    after_help = "Examples:\n  vmmtrace report run.json\n  vmmtrace report run.json --out run-charts   # then open run-charts/index.html"
)]
pub struct ReportArgs {
    /// A report written by `vmmtrace record`.
    pub file: PathBuf,
    /// Threads to list.
    #[arg(long, default_value_t = 20)]
    pub top: usize,
    /// Draw the charts (SVG and PNG) and a self-contained index.html into this directory.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

#[derive(Args, Debug)]
#[command(
    after_help = "Examples:\n  vmmtrace diagnose run.json\n  vmmtrace diagnose --json --min-wait-pct 0.5 run.json"
)]
pub struct DiagnoseArgs {
    /// A report written by `vmmtrace record`.
    pub file: PathBuf,
    /// Print the findings as JSON.
    #[arg(long)]
    pub json: bool,
    /// Report a vCPU's lost or waiting time from this share of its run (%)...
    #[arg(long, value_name = "PCT", default_value_t = 1.0)]
    pub min_wait_pct: f64,
    /// ... and from this many milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 10.0)]
    pub min_wait_ms: f64,
    /// Every core counts as busy when no CPU was idle more than this share of the trace (%).
    #[arg(long, value_name = "PCT", default_value_t = 5.0)]
    pub busy_idle_pct: f64,
    /// Report exits of one reason from this rate, per vCPU per second.
    #[arg(long, value_name = "PER_S", default_value_t = 10_000.0)]
    pub exit_rate: f64,
}

impl DiagnoseArgs {
    pub fn thresholds(&self) -> crate::diagnose::Thresholds {
        crate::diagnose::Thresholds {
            min_wait_pct: self.min_wait_pct,
            min_wait_ns: (self.min_wait_ms.max(0.0) * 1e6) as u64,
            busy_idle_pct: self.busy_idle_pct,
            exit_rate_per_s: self.exit_rate,
        }
    }
}

#[derive(Args, Debug)]
pub struct CheckArgs {
    /// Check without the KVM probes, as `record --no-kvm` would run.
    #[arg(long)]
    pub no_kvm: bool,
    /// Check the kvm tracepoints as classic tracepoints, as `record --classic-kvm` would run.
    #[arg(long)]
    pub classic_kvm: bool,
}

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Pipe round trips per measurement (each is two context switches).
    #[arg(long, default_value_t = 100_000)]
    pub rounds: u64,
    /// Repetitions of each mode, interleaved.
    #[arg(long, default_value_t = 3)]
    pub reps: usize,
    /// Skip the KVM part (a micro-VM with and without the probes).
    #[arg(long)]
    pub no_kvm: bool,
}

#[derive(Args, Debug)]
#[command(
    after_help = "Examples:\n  vmmtrace experiment -o exp.json\n  vmmtrace experiment --env host --workload bzip2 --scale 0.2 --repeat 2\n  vmmtrace experiment -o exp.json --resume      # after Ctrl-C\n\n\
The result is rewritten after every run (each run's record report goes to <output stem>.runs/); \
Ctrl-C keeps every finished run. Needs bzip2 and gnugo (apt-get install bzip2 gnugo)."
)]
pub struct ExperimentArgs {
    /// Environments, comma-separated: host, qemu, microvm, vm (default: every one of
    /// host, microvm and qemu that this build can run).
    #[arg(long, value_delimiter = ',')]
    pub env: Vec<String>,
    /// Workloads, comma-separated: bzip2, gobmk.
    #[arg(long, value_delimiter = ',', default_value = "bzip2,gobmk")]
    pub workload: Vec<String>,
    /// CPUs to use, e.g. 0-3 or 0,2 (default: every CPU vmmtrace may run on); N = their number.
    #[arg(long, value_name = "LIST")]
    pub cpus: Option<String>,
    /// Measured runs of each scenario (after one discarded warm-up per environment and workload).
    #[arg(long, default_value_t = 3)]
    pub repeat: usize,
    /// Work per job: 1.0 is about 6 s here.
    #[arg(long, default_value_t = 1.0)]
    pub scale: f64,
    /// Seed of the generated inputs and of the run order.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// For --env vm: COMMAND starts one job inside the VM NAME (repeat for each VM).
    #[arg(long, value_name = "NAME=COMMAND")]
    pub vm: Vec<String>,
    /// Where to write the JSON result.
    #[arg(short, long, value_name = "FILE", default_value = "vmmtrace-experiment.json")]
    pub output: PathBuf,
    /// Continue the interrupted experiment in --output (same options).
    #[arg(long)]
    pub resume: bool,
}

fn parse_duration_inner(s: &str, allow_zero: bool) -> Result<Duration, String> {
    let s = s.trim();
    let (num, mult) = if let Some(n) = s.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60.0)
    } else if let Some(n) = s.strip_suffix('h') {
        (n, 3600.0)
    } else {
        (s, 1.0)
    };
    let v: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("'{s}' is not a duration: give seconds (10, 2.5) or a number with ms, s, m or h"))?;
    let secs = v * mult;
    if !secs.is_finite() || secs < 0.0 || (secs == 0.0 && !allow_zero) {
        return Err(match allow_zero {
            true => format!("'{s}' is not a duration of 0 or more seconds (e.g. 0, 1, 500ms)"),
            false => format!("'{s}' is not a positive duration: give how long, e.g. 10 or 500ms"),
        });
    }
    if secs > 366.0 * 86400.0 {
        return Err(format!("'{s}' is longer than a year"));
    }
    let duration = Duration::from_secs_f64(secs);
    // Under a nanosecond rounds to zero (cargo-fuzz found "0.000...01m").
    if duration.is_zero() && !allow_zero {
        return Err(format!("'{s}' is shorter than a nanosecond: give how long, e.g. 10 or 500ms"));
    }
    Ok(duration)
}

pub fn parse_duration(s: &str) -> Result<Duration, String> {
    parse_duration_inner(s, false)
}

fn parse_duration_or_zero(s: &str) -> Result<Duration, String> {
    parse_duration_inner(s, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("2.5").unwrap(), Duration::from_millis(2500));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert!(parse_duration("0").is_err());
        assert!(parse_duration("-1").is_err());
        assert!(parse_duration("abc").unwrap_err().contains("not a duration"));
        assert!(parse_duration("NaN").is_err());
        assert!(parse_duration("1e12").is_err());
        assert_eq!(parse_duration_or_zero("0").unwrap(), Duration::ZERO);
        assert!(parse_duration("1e-12").unwrap_err().contains("shorter than a nanosecond"));
        assert!(parse_duration("0.0000000000001m").is_err());
        assert_eq!(parse_duration_or_zero("1e-12").unwrap(), Duration::ZERO);
    }

    #[test]
    fn cli_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
        let c = Cli::try_parse_from(["vmmtrace", "record", "-d", "3", "--", "bzip2", "-9"]).unwrap();
        match c.command {
            Command::Record(r) => {
                assert_eq!(r.command, vec!["bzip2", "-9"]);
                assert_eq!(r.duration, Some(Duration::from_secs(3)));
            }
            _ => panic!("expected record"),
        }
        assert!(Cli::try_parse_from(["vmmtrace", "record", "--duration", "soon"]).is_err());
        match Cli::try_parse_from(["vmmtrace", "serve"]).unwrap().command {
            Command::Serve(s) => assert_eq!(s.listen.to_string(), "127.0.0.1:9477"),
            _ => panic!("expected serve"),
        }
        let bad = Cli::try_parse_from(["vmmtrace", "serve", "--listen", "localhost"]).unwrap_err().to_string();
        assert!(bad.contains("give IP:PORT"), "{bad}");
    }
}
