//! What vmmtrace itself costs the host: its CPU time and resident memory, read from
//! /proc/self (so that an operator sees the tracer's cost beside what it measures).

use crate::host::clock_tick_ns;

/// This process's CPU time (user + system) in seconds, from /proc/self/stat; 0 if
/// it cannot be read.
pub fn process_cpu_s() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else { return 0.0 };
    // The fields after the command name (which may hold spaces) start at state (3):
    // utime and stime are fields 14 and 15.
    let Some((_, rest)) = stat.rsplit_once(')') else { return 0.0 };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11..13).map(|f| f.iter().filter_map(|v| v.parse::<u64>().ok()).sum()).unwrap_or(0);
    (ticks * clock_tick_ns()) as f64 / 1e9
}

/// This process's resident memory in bytes, from /proc/self/status (VmRSS); 0 if it
/// cannot be read.
pub fn resident_bytes() -> u64 {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else { return 0 };
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let spin_until = std::time::Instant::now() + std::time::Duration::from_millis(50);
        while std::time::Instant::now() < spin_until {
            std::hint::spin_loop();
        }
        assert!(process_cpu_s() > 0.0);
        assert!(resident_bytes() > 100 * 1024);
    }
}
