//! `cargo xtask soak`: `vmmtrace record` for minutes under process churn (and
//! micro-VMs started and stopped where /dev/kvm exists), sampling vmmtrace's resident
//! memory and the kernel maps' occupancy every 10 s. Fails if the maps grow without
//! bound, if memory grows by more than the retired threads explain, or if any event
//! was dropped. Not part of CI: it takes minutes and a quiet host.

use std::{
    io::{BufRead as _, BufReader},
    path::Path,
    process::{Child, Command, Stdio},
    time::Instant,
};

use anyhow::{Context as _, bail};

/// Short-lived processes started per batch of the churn generator.
const BATCH: u64 = 50;
/// What a retired thread may cost in vmmtrace's memory: its record is kept for the
/// report (about 600 bytes measured on 2 CPUs); a tick's snapshots no longer copy it.
const BYTES_PER_RETIRED_THREAD: u64 = 1024;
/// Memory growth allowed besides (allocator slack, the timeline's bins).
const SLACK_BYTES: u64 = 32 << 20;

/// One sample: seconds since the start, RSS, threads in THREAD_STATS, retired, dropped.
#[derive(Debug, Clone, Copy)]
struct Sample {
    t_s: f64,
    rss_kib: u64,
    /// vmmtrace's own CPU time (user + system) so far, seconds.
    cpu_s: f64,
    in_maps: u64,
    capacity: u64,
    retired: u64,
    dropped: u64,
}

pub fn soak(root: &Path, minutes: u64, per_minute: u64) -> anyhow::Result<()> {
    let bin = root.join("target/release/vmmtrace");
    let out = root.join("target/soak/report.json");
    std::fs::create_dir_all(out.parent().unwrap())?;
    let mut record = Command::new(&bin)
        .args(["record", "--interval", "10", "--duration", &format!("{minutes}m"), "-o"])
        .arg(&out)
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("start {}", bin.display()))?;
    let pause_s = BATCH as f64 * 60.0 / per_minute.max(1) as f64;
    let script = format!("while :; do for i in $(seq {BATCH}); do /bin/true & done; wait; sleep {pause_s:.3}; done");
    let mut churn = Command::new("sh").args(["-c", &script]).spawn().context("start the churn generator")?;
    eprintln!("soak: {minutes} min of `vmmtrace record` with {per_minute} short-lived processes per minute");
    let mut vms = start_microvms(&bin);
    let samples = follow(&mut record)?;
    for c in [&mut churn].into_iter().chain(vms.as_mut()) {
        let _ = c.kill();
        let _ = c.wait();
    }
    let status = record.wait()?;
    if !status.success() {
        bail!("vmmtrace record failed: {status}");
    }
    judge(&samples)
}

/// Micro-VMs started and stopped in a loop, where /dev/kvm exists.
fn start_microvms(bin: &Path) -> Option<Child> {
    if !Path::new("/dev/kvm").exists() {
        eprintln!("soak: no micro-VMs: /dev/kvm does not exist on this host (dmesg says why KVM did not load)");
        return None;
    }
    let script = format!("while :; do {} microvm --work 4 >/dev/null 2>&1; sleep 1; done", bin.display());
    Command::new("sh").args(["-c", &script]).spawn().ok()
}

/// Reads vmmtrace's live lines until it ends, sampling its RSS at each; prints them.
fn follow(record: &mut Child) -> anyhow::Result<Vec<Sample>> {
    let pid = record.id();
    let stderr = record.stderr.take().context("vmmtrace's stderr")?;
    let start = Instant::now();
    let mut samples = Vec::new();
    eprintln!(
        "{:>6} {:>9} {:>6} {:>16} {:>9} {:>8}",
        "t_s", "rss_MiB", "cpu_s", "threads_in_maps", "retired", "dropped"
    );
    for line in BufReader::new(stderr).lines() {
        let line = line?;
        if !line.starts_with('[') {
            eprintln!("{line}");
            continue;
        }
        let Some(mut s) = parse_live_line(&line) else { continue };
        s.t_s = start.elapsed().as_secs_f64();
        s.rss_kib = rss_kib(pid).unwrap_or(0);
        s.cpu_s = cpu_s(pid).unwrap_or(0.0);
        eprintln!(
            "{:>6.0} {:>9.1} {:>6.1} {:>10}/{:<5} {:>9} {:>8}",
            s.t_s,
            s.rss_kib as f64 / 1024.0,
            s.cpu_s,
            s.in_maps,
            s.capacity,
            s.retired,
            s.dropped
        );
        samples.push(s);
    }
    Ok(samples)
}

/// "... | dropped N[ (...)] | retired R, T/C threads in maps".
fn parse_live_line(line: &str) -> Option<Sample> {
    let dropped = line.split("| dropped ").nth(1)?.split_whitespace().next()?.parse().ok()?;
    let (mut retired, mut in_maps, mut capacity) = (0, 0, 0);
    if let Some(rest) = line.split("| retired ").nth(1) {
        retired = rest.split(',').next()?.trim().parse().ok()?;
        let frac = rest.split(", ").nth(1)?.split_whitespace().next()?;
        let (a, b) = frac.split_once('/')?;
        (in_maps, capacity) = (a.parse().ok()?, b.parse().ok()?);
    }
    Some(Sample { t_s: 0.0, rss_kib: 0, cpu_s: 0.0, in_maps, capacity, retired, dropped })
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// vmmtrace's user + system CPU time (/proc/PID/stat fields 14 and 15), seconds.
fn cpu_s(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which may hold spaces: state is field 3.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11..13)?.iter().filter_map(|f| f.parse::<u64>().ok()).sum();
    // USER_HZ is 100 on every Linux ABI this runs on.
    Some(ticks as f64 / 100.0)
}

/// Flat maps, memory within what the retired threads explain, nothing dropped.
fn judge(samples: &[Sample]) -> anyhow::Result<()> {
    let (Some(first), Some(last)) = (samples.first(), samples.last()) else { bail!("no live line was read") };
    let half = samples.len() / 2;
    let max_maps = |s: &[Sample]| s.iter().map(|s| s.in_maps).max().unwrap_or(0);
    let (early, late) = (max_maps(&samples[..half.max(1)]), max_maps(&samples[half..]));
    let grown_bytes = (last.rss_kib.saturating_sub(first.rss_kib)) * 1024;
    let mid = &samples[half.min(samples.len() - 1)];
    let mib = |kib: u64| kib as f64 / 1024.0;
    eprintln!(
        "soak: RSS grew {:.1} MiB in the first half and {:.1} MiB in the second; vmmtrace took {:.1} s of CPU \
         ({:.1} s in the second half)",
        mib(mid.rss_kib.saturating_sub(first.rss_kib)),
        mib(last.rss_kib.saturating_sub(mid.rss_kib)),
        last.cpu_s,
        last.cpu_s - mid.cpu_s
    );
    let retired = last.retired.saturating_sub(first.retired);
    eprintln!(
        "soak: threads in maps at most {early} (first half) and {late} (second half) of {}; RSS {:.1} -> {:.1} MiB \
         ({} bytes per thread retired meanwhile, {retired} threads); dropped {}",
        last.capacity,
        first.rss_kib as f64 / 1024.0,
        last.rss_kib as f64 / 1024.0,
        grown_bytes / retired.max(1),
        last.dropped
    );
    if late > 2 * early + 64 {
        bail!("the kernel maps grew: {early} threads at most in the first half, {late} in the second");
    }
    if grown_bytes > BYTES_PER_RETIRED_THREAD * retired + SLACK_BYTES {
        bail!("vmmtrace's memory grew by {grown_bytes} bytes, more than {retired} retired threads explain");
    }
    if last.dropped > 0 {
        bail!("{} events were dropped (the report's dropped_by_cause says why)", last.dropped);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_lines_parse() {
        let s = parse_live_line("[   10s] busy 1% | dropped 3 (ledger_full 3) | retired 120, 65/16384 threads in maps")
            .unwrap();
        assert_eq!((s.dropped, s.retired, s.in_maps, s.capacity), (3, 120, 65, 16384));
        let s = parse_live_line("[   10s] busy 1% | dropped 0").unwrap();
        assert_eq!((s.dropped, s.retired), (0, 0));
    }
}
