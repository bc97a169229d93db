//! `vmmtrace serve` end to end: the real binary on loopback, scraped over HTTP while a
//! known workload runs, its counters compared with the kernel's own accounting
//! (schedstat) and with the micro-VM's ground truth, every scrape checked by
//! `promtool check metrics`.

use std::{
    collections::BTreeMap,
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::TcpStream,
    process::{Child, Command, Stdio},
    time::Duration,
};

use vmmtrace_tests::*;

/// A `vmmtrace serve` process and the address it listens on.
struct Served {
    child: Child,
    addr: String,
}

impl Served {
    /// Starts `vmmtrace serve --listen 127.0.0.1:0 ARGS` and reads the address it
    /// printed (it prints it once the probes are attached).
    fn start(args: &[&str]) -> Served {
        let mut child = vmmtrace_cmd!()
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start vmmtrace serve");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).expect("read serve's stdout");
        let Some(addr) = line.trim().strip_prefix("vmmtrace serve: listening on http://") else {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!("serve did not say where it listens: {line:?}; stderr: {}", String::from_utf8_lossy(&out.stderr));
        };
        Served { child, addr: addr.trim_end_matches("/metrics").to_string() }
    }

    /// GET /metrics; checks the status and promtool's verdict; returns the body.
    fn scrape(&self) -> String {
        let (status, body) = http_get(&self.addr, "/metrics");
        assert!(status.contains(" 200 "), "{status}: {body}");
        promtool_check(&body);
        body
    }

    /// SIGTERM; returns the exit status and stderr.
    fn stop(mut self) -> (std::process::ExitStatus, String) {
        signal(self.child.id(), libc::SIGTERM);
        let status = self.child.wait().unwrap();
        let mut err = String::new();
        self.child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
        (status, err)
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn signal(pid: u32, sig: i32) {
    // SAFETY: kill has no memory preconditions; pid is a child of this test.
    assert_eq!(unsafe { libc::kill(pid as i32, sig) }, 0, "kill({pid}, {sig})");
}

/// (status line, body) of an HTTP/1.1 GET.
fn http_get(addr: &str, path: &str) -> (String, String) {
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let (head, body) = resp.split_once("\r\n\r\n").expect("an HTTP response");
    (head.lines().next().unwrap_or_default().to_string(), body.to_string())
}

/// `promtool check metrics` accepts the exposition (Debian package prometheus).
fn promtool_check(text: &str) {
    let mut p = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool: apt-get install prometheus (cargo xtask setup does)");
    p.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = p.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every sample of an exposition: `name{labels}` as written -> value.
fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.rsplit_once(' '))
        .map(|(k, v)| (k.to_string(), v.parse().unwrap_or_else(|_| panic!("value of {k}: {v}"))))
        .collect()
}

/// The sum of the samples of `family` whose labels include every one of `with`.
fn sum_of(s: &BTreeMap<String, f64>, family: &str, with: &[&str]) -> f64 {
    s.iter()
        .filter(|(k, _)| k.strip_prefix(family).is_some_and(|rest| rest.is_empty() || rest.starts_with('{')))
        .filter(|(k, _)| with.iter().all(|w| k.contains(w)))
        .map(|(_, v)| v)
        .sum()
}

/// A CPU-bound child process: a shell spinning in a builtin loop.
struct Spinner(Child);

impl Spinner {
    fn start() -> Spinner {
        Spinner(Command::new("sh").args(["-c", "while :; do :; done"]).spawn().expect("start sh"))
    }

    fn pid(&self) -> u32 {
        self.0.id()
    }

    /// Stops it (SIGSTOP, awaited with waitpid) and returns its CPU time so far (ns)
    /// from the kernel: frozen, it cannot drift between this reading and a scrape.
    fn freeze(&self) -> u64 {
        signal(self.pid(), libc::SIGSTOP);
        let mut status = 0;
        // SAFETY: waitpid writes the status into the local.
        let r = unsafe { libc::waitpid(self.pid() as i32, &mut status, libc::WUNTRACED) };
        assert!(r == self.pid() as i32 && libc::WIFSTOPPED(status), "the spinner did not stop");
        let tasks = std::fs::read_dir(format!("/proc/{}/task", self.pid())).unwrap();
        tasks
            .map(|t| {
                let path = t.unwrap().path().join("schedstat");
                let s = std::fs::read_to_string(&path).unwrap();
                s.split_whitespace().next().unwrap().parse::<u64>().unwrap()
            })
            .sum()
    }

    fn thaw(&self) {
        signal(self.pid(), libc::SIGCONT);
    }
}

impl Drop for Spinner {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Time this host's own hypervisor took from its CPUs (steal, /proc/stat), in ns:
/// schedstat leaves it out of a thread's runtime, the switch timestamps do not.
fn steal_ns() -> u64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap();
    let cpu = stat.lines().next().unwrap();
    let ticks: u64 = cpu.split_whitespace().nth(8).and_then(|v| v.parse().ok()).unwrap_or(0);
    ticks * vmmtrace::host::clock_tick_ns()
}

const CPU: &str = "vmmtrace_cpu_seconds_total";

#[test]
fn scraped_cpu_seconds_grow_by_what_schedstat_says_and_promtool_accepts_every_scrape() {
    require_root!();
    let spinner = Spinner::start();
    let served = Served::start(&["--watch", &spinner.pid().to_string()]);
    std::thread::sleep(Duration::from_millis(500)); // workload time before the first scrape

    let (steal_1, kernel_1) = (steal_ns(), spinner.freeze());
    let first = samples(&served.scrape());
    spinner.thaw();
    std::thread::sleep(Duration::from_secs(3)); // the workload runs between the scrapes
    let (steal_2, kernel_2) = (steal_ns(), spinner.freeze());
    let second = samples(&served.scrape());
    spinner.thaw();

    let workload = |s: &BTreeMap<String, f64>| sum_of(s, CPU, &["role=\"workload\""]);
    let traced_ns = ((workload(&second) - workload(&first)) * 1e9).round() as u64;
    let kernel_ns = kernel_2 - kernel_1;
    let err = relative_error(traced_ns, kernel_ns);
    let missed = sum_of(&second, "vmmtrace_probe_events_total", &["missed_switch"])
        - sum_of(&first, "vmmtrace_probe_events_total", &["missed_switch"]);
    eprintln!(
        "workload CPU between scrapes: serve {traced_ns} ns, schedstat {kernel_ns} ns ({:.3}% off); \
         meanwhile {missed} missed switches and {} ms stolen by this host's hypervisor (all CPUs)",
        err * 100.0,
        (steal_2 - steal_1) / 1_000_000
    );
    assert!(kernel_ns > 100_000_000, "the spinner hardly ran ({kernel_ns} ns): is the host saturated?");
    assert!(err < 0.02, "{:.3}% off", err * 100.0);

    // Counters never go down between scrapes.
    for (series, v) in &first {
        if series.contains("_total") {
            let later = second.get(series).copied().unwrap_or_else(|| panic!("{series} vanished"));
            assert!(later >= *v, "{series} went down: {v} -> {later}");
        }
    }
    assert_eq!(sum_of(&second, "vmmtrace_dropped_events_total", &[]), 0.0);
    assert!(sum_of(&second, "vmmtrace_probe_events_total", &["probe=\"sched_switch\""]) > 0.0);
    assert!(sum_of(&second, "vmmtrace_map_entries", &["map=\"THREAD_STATS\""]) > 0.0);

    let (status, err) = served.stop();
    assert!(status.success(), "serve exited with {status} after SIGTERM: {err}");
    assert!(err.contains("stopped by signal 15"), "{err}");
}

#[test]
fn a_taken_port_and_a_bad_address_are_said_with_what_to_do() {
    require_root!();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = vmmtrace_cmd!().args(["serve", "--listen", &addr]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("the port is taken") && err.contains("--listen"), "{err}");

    let out = vmmtrace_cmd!().args(["serve", "--listen", "localhost"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("give IP:PORT"), "{err}");
}

#[test]
fn a_micro_vm_shows_its_exact_exits_and_its_cpu_seconds() {
    require_kvm!();
    let served = Served::start(&[]);
    let before = samples(&served.scrape());
    let cfg = microvm::Config {
        vcpus: 2,
        workload: microvm::Workload::Bzip2,
        work: 24,
        exit_every: 2,
        timer_hz: 250,
        pin_vcpus: Some(vec![0, 1]),
        ..Default::default()
    };
    // The VM runs in this process: serve finds this process as its VMM.
    let truth = microvm::spawn(&cfg).expect("start the micro-VM").wait().expect("micro-VM run");
    let after = samples(&served.scrape());
    for t in &truth.vcpus {
        let vcpu = format!("vcpu=\"{}\"", t.index);
        let grew = |family: &str, with: &[&str]| {
            let mut w = vec![vcpu.as_str()];
            w.extend_from_slice(with);
            sum_of(&after, family, &w) - sum_of(&before, family, &w)
        };
        let io = grew("vmmtrace_kvm_userspace_exits_total", &["reason=\"KVM_EXIT_IO\""]);
        assert_eq!(io as u64, t.exits["io"], "vCPU {}: KVM_EXIT_IO", t.index);
        assert_eq!(grew("vmmtrace_kvm_userspace_exits_total", &[]) as u64, t.vmm.kvm_run_calls, "vCPU {}", t.index);
        let cpu_ns = (grew("vmmtrace_vcpu_cpu_seconds_total", &[]) * 1e9).round() as u64;
        let err = relative_error(cpu_ns, t.sum_exec_runtime_ns);
        eprintln!(
            "vCPU {}: serve {cpu_ns} ns, the kernel {} ns ({:.3}% off)",
            t.index,
            t.sum_exec_runtime_ns,
            err * 100.0
        );
        assert!(err < 0.02, "vCPU {}: {:.3}% off", t.index, err * 100.0);
    }
    let (status, err) = served.stop();
    assert!(status.success(), "{err}");
}
