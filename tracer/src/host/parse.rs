//! Pure parsers for the /proc and /sys files host discovery reads.

use std::fmt;

/// `PF_KTHREAD` in the `flags` field of `/proc/<pid>/stat`: the task is a kernel thread.
pub const PF_KTHREAD: u32 = 0x0020_0000;

/// A CPU list that does not follow the kernel's `cpulist` syntax.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuListError {
    /// The text that was parsed.
    pub input: String,
    /// What is wrong with it.
    pub reason: String,
}

impl fmt::Display for CpuListError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid CPU list {:?}: {}; expected comma-separated CPU numbers and ranges, e.g. \"0-3,8,10-11\"",
            self.input, self.reason
        )
    }
}

impl std::error::Error for CpuListError {}

/// The most CPUs a list may name (the kernel's NR_CPUS is at most 8192 today).
const MAX_CPUS: u32 = 1 << 16;

/// Parses a CPU list in the kernel's `cpulist` syntax (`Cpus_allowed_list`,
/// /sys/devices/system/cpu/online, `taskset -c`): comma-separated CPU numbers and
/// inclusive ranges, e.g. `"0-3,8,10-11"`. Surrounding whitespace (the trailing
/// newline of a sysfs file) is ignored; an empty list gives an empty vector.
/// The result is sorted and free of duplicates.
pub fn parse_cpu_list(input: &str) -> Result<Vec<u32>, CpuListError> {
    let err = |reason: String| CpuListError { input: input.to_string(), reason };
    let text = input.trim();
    let mut cpus = Vec::new();
    if text.is_empty() {
        return Ok(cpus);
    }
    let number = |s: &str| -> Result<u32, CpuListError> {
        let s = s.trim();
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(err(format!("{s:?} is not a CPU number")));
        }
        s.parse::<u32>().map_err(|_| err(format!("CPU number {s} is too large")))
    };
    for element in text.split(',') {
        if element.trim().is_empty() {
            return Err(err("empty element between commas".to_string()));
        }
        match element.split_once('-') {
            None => cpus.push(number(element)?),
            Some((first, last)) => {
                let (first, last) = (number(first)?, number(last)?);
                if first > last {
                    return Err(err(format!("range {first}-{last} is reversed")));
                }
                if last - first >= MAX_CPUS {
                    return Err(err(format!("range {first}-{last} is implausibly large")));
                }
                cpus.extend(first..=last);
            }
        }
        // A bound on the whole list, not only on each range: ranges that each pass
        // may join into one that would not (cargo-fuzz found "661-65000,65001-69116",
        // which format_cpu_list writes as a range this parser then refused).
        if cpus.len() > MAX_CPUS as usize {
            return Err(err(format!("more than {MAX_CPUS} CPUs")));
        }
    }
    cpus.sort_unstable();
    cpus.dedup();
    Ok(cpus)
}

/// Formats CPUs in the kernel's `cpulist` syntax (`[0, 1, 2, 3, 8]` -> `"0-3,8"`),
/// the inverse of [`parse_cpu_list`]. The input need not be sorted.
pub fn format_cpu_list(cpus: &[u32]) -> String {
    let mut sorted = cpus.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut parts = Vec::new();
    let mut i = 0;
    while i < sorted.len() {
        let start = sorted[i];
        let mut end = start;
        while i + 1 < sorted.len() && sorted[i + 1] == end + 1 {
            end += 1;
            i += 1;
        }
        parts.push(if start == end { start.to_string() } else { format!("{start}-{end}") });
        i += 1;
    }
    parts.join(",")
}

/// The fields of `/proc/<pid>/task/<tid>/stat` that discovery uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stat {
    pub tid: u32,
    /// The task name between the parentheses (may contain spaces and parentheses).
    pub comm: String,
    pub state: char,
    pub ppid: u32,
    /// Field 9, the kernel's `task->flags` (`PF_*`).
    pub flags: u32,
    /// Field 43, guest time in clock ticks (None on kernels that do not print it).
    pub guest_time_ticks: Option<u64>,
}

impl Stat {
    /// True for kernel threads (`PF_KTHREAD`).
    pub fn is_kernel_thread(&self) -> bool {
        self.flags & PF_KTHREAD != 0
    }
}

/// Parses `/proc/<pid>/stat`. The comm field is delimited by the first `(` and the
/// LAST `)`, since a comm may itself contain `) (` or spaces.
pub fn parse_stat(text: &str) -> Result<Stat, String> {
    let open = text.find('(').ok_or("no '(' before the comm field")?;
    let close = text.rfind(')').ok_or("no ')' after the comm field")?;
    if close < open {
        return Err("')' before '('".to_string());
    }
    let tid =
        text[..open].trim().parse::<u32>().map_err(|e| format!("bad pid field {:?}: {e}", text[..open].trim()))?;
    let comm = text[open + 1..close].to_string();
    let rest: Vec<&str> = text[close + 1..].split_ascii_whitespace().collect();
    // After the comm: state(3) ppid(4) pgrp(5) session(6) tty_nr(7) tpgid(8) flags(9).
    if rest.len() < 7 {
        return Err(format!("only {} fields after the comm, expected at least 7", rest.len()));
    }
    let state = rest[0].chars().next().ok_or("empty state field")?;
    let ppid = rest[1].parse::<u32>().map_err(|e| format!("bad ppid field {:?}: {e}", rest[1]))?;
    let flags = rest[6].parse::<u32>().map_err(|e| format!("bad flags field {:?}: {e}", rest[6]))?;
    // Field 43 is the 41st after the comm.
    let guest_time_ticks = rest.get(40).and_then(|v| v.parse().ok());
    Ok(Stat { tid, comm, state, ppid, flags, guest_time_ticks })
}

/// The fields of `/proc/<pid>/task/<tid>/status` that discovery uses.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Status {
    /// `Name:` (escaped by the kernel: a space stays a space, `\n` is `\\n`).
    pub name: Option<String>,
    pub tgid: Option<u32>,
    /// `Cpus_allowed_list:`, parsed.
    pub cpus_allowed: Option<Vec<u32>>,
}

/// Parses `/proc/<pid>/status`. Lines it does not need are ignored; a malformed
/// `Cpus_allowed_list` is an error.
pub fn parse_status(text: &str) -> Result<Status, String> {
    let mut status = Status::default();
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match key {
            "Name" => status.name = Some(value.to_string()),
            "Tgid" => status.tgid = Some(value.parse().map_err(|e| format!("bad Tgid {value:?}: {e}"))?),
            "Cpus_allowed_list" => status.cpus_allowed = Some(parse_cpu_list(value).map_err(|e| e.to_string())?),
            _ => {}
        }
    }
    Ok(status)
}

/// Splits `/proc/<pid>/cmdline` (NUL-separated, usually NUL-terminated) into arguments.
pub fn parse_cmdline(bytes: &[u8]) -> Vec<String> {
    let bytes = bytes.strip_suffix(b"\0").unwrap_or(bytes);
    if bytes.is_empty() {
        return Vec::new();
    }
    bytes.split(|b| *b == 0).map(|arg| String::from_utf8_lossy(arg).into_owned()).collect()
}

/// Whether a /proc/<pid>/task/<tid>/syscall line shows a thread inside KVM_RUN:
/// ioctl (16 on x86_64) with KVM_RUN (0xae80) while the thread waits in the kernel,
/// or "running" while it runs (a vCPU thread runs inside KVM_RUN nearly all the time).
pub fn in_kvm_run(syscall_line: &str) -> bool {
    let mut it = syscall_line.split_whitespace();
    match (it.next(), it.next(), it.next()) {
        (Some("running"), _, _) => true,
        (Some("16"), Some(_fd), Some(cmd)) => u64::from_str_radix(cmd.trim_start_matches("0x"), 16) == Ok(0xae80),
        _ => false,
    }
}

/// A NUL-padded 16-byte comm, as the probes record it.
pub fn comm_from_bytes(c: &[u8; 16]) -> String {
    String::from_utf8_lossy(c).trim_end_matches('\0').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syscall_lines() {
        assert!(in_kvm_run("16 0x5 0xae80 0x0 0x0 0x0 0x0 0x7ffd 0x7f12"));
        assert!(in_kvm_run("running"));
        assert!(!in_kvm_run("16 0x5 0xae9a 0x0 0x0 0x0 0x0 0x7ffd 0x7f12")); // another ioctl
        assert!(!in_kvm_run("202 0x55576e1cf3b8 0x89 0xffffffff 0x7ff")); // futex
        assert!(!in_kvm_run("-1 0x7ffd 0x7f12"));
        assert!(!in_kvm_run(""));
    }

    #[test]
    fn comms_lose_their_padding() {
        assert_eq!(comm_from_bytes(b"CPU 0/KVM\0\0\0\0\0\0\0"), "CPU 0/KVM");
    }

    #[test]
    fn cpu_lists() {
        assert_eq!(parse_cpu_list("0-3,8,10-11").unwrap(), vec![0, 1, 2, 3, 8, 10, 11]);
        assert_eq!(parse_cpu_list("0-1\n").unwrap(), vec![0, 1]);
        assert_eq!(parse_cpu_list("5").unwrap(), vec![5]);
        assert_eq!(parse_cpu_list("").unwrap(), Vec::<u32>::new());
        assert_eq!(parse_cpu_list("\n").unwrap(), Vec::<u32>::new());
        assert_eq!(parse_cpu_list("3,1,2-3").unwrap(), vec![1, 2, 3]);
        assert_eq!(parse_cpu_list("7-7").unwrap(), vec![7]);
        assert_eq!(parse_cpu_list(" 0 - 2 ").unwrap(), vec![0, 1, 2]);
    }

    #[test]
    fn cpu_list_errors_are_clear() {
        for bad in ["a", "1,,2", "3-1", "-3", "1-", "0-3:2", "1;2", ",", "0x1", "99999999999"] {
            let err = parse_cpu_list(bad).expect_err(bad);
            let message = err.to_string();
            assert!(message.contains(&format!("{bad:?}")), "{message}");
            assert!(message.contains("e.g. \"0-3,8,10-11\""), "{message}");
        }
        assert!(parse_cpu_list("3-1").unwrap_err().reason.contains("reversed"));
    }

    #[test]
    fn cpu_list_round_trip() {
        assert_eq!(format_cpu_list(&[0, 1, 2, 3, 8, 10, 11]), "0-3,8,10-11");
        assert_eq!(format_cpu_list(&[]), "");
        assert_eq!(format_cpu_list(&[4, 2, 3, 3]), "2-4");
        for text in ["0-3,8,10-11", "0", "1,3,5", "0-63"] {
            assert_eq!(format_cpu_list(&parse_cpu_list(text).unwrap()), text);
        }
    }

    #[test]
    fn stat_plain() {
        let stat = parse_stat(
            "4242 (qemu-system-x86) S 1 4242 4242 0 -1 4194560 5033 0 0 0 12 7 0 0 20 0 4 0 1234 \
             1000000 2000 18446744073709551615 1 1 0 0 0 0 0 4096 17003 0 0 0 17 1 0 0 0 0 0",
        )
        .unwrap();
        assert_eq!(stat.tid, 4242);
        assert_eq!(stat.comm, "qemu-system-x86");
        assert_eq!(stat.state, 'S');
        assert_eq!(stat.ppid, 1);
        assert_eq!(stat.flags, 4194560);
        assert!(!stat.is_kernel_thread());
    }

    #[test]
    fn stat_guest_time_is_field_43() {
        // Fields 4..=42 are 0, field 43 (guest_time) is 777, then one more field.
        let line = format!("4244 (CPU 0/KVM) S {} 777 0", vec!["0"; 39].join(" "));
        assert_eq!(parse_stat(&line).unwrap().guest_time_ticks, Some(777));
        // Short lines (old kernels, fixtures) have none.
        let short = parse_stat("4244 (CPU 0/KVM) S 1 4242 4242 0 -1 4194368 0 0 0 0 0 0").unwrap();
        assert_eq!(short.guest_time_ticks, None);
    }

    #[test]
    fn stat_comm_with_spaces_and_parens() {
        let stat = parse_stat("4244 (CPU 0/KVM) S 1 4242 4242 0 -1 4194368 0 0 0 0 0 0").unwrap();
        assert_eq!(stat.comm, "CPU 0/KVM");
        assert_eq!(stat.flags, 4194368);
        let stat = parse_stat("77 (a) (b) c)) R 5 77 77 0 -1 64 0 0 0 0 0 0 0").unwrap();
        assert_eq!(stat.comm, "a) (b) c)");
        assert_eq!(stat.state, 'R');
        assert_eq!(stat.ppid, 5);
        assert_eq!(stat.flags, 64);
        let stat = parse_stat("78 () I 2 0 0 0 -1 2129984 0 0").unwrap();
        assert_eq!(stat.comm, "");
    }

    #[test]
    fn stat_kernel_thread() {
        // A kworker as printed by 6.x (full name from the workqueue), flags 0x04208060.
        let stat = parse_stat("123 (kworker/1:2-events) I 2 0 0 0 -1 69238880 0 0 0 0 0 0 0").unwrap();
        assert_eq!(stat.comm, "kworker/1:2-events");
        assert_eq!(stat.ppid, 2);
        assert!(stat.is_kernel_thread());
    }

    #[test]
    fn stat_errors() {
        assert!(parse_stat("").is_err());
        assert!(parse_stat("12 (x S 1").is_err());
        assert!(parse_stat("x (y) S 1 1 1 0 -1 0").is_err());
        assert!(parse_stat("12 (y) S 1 1").is_err());
        assert!(parse_stat("12 (y) S 1 1 1 0 -1 flags").is_err());
    }

    #[test]
    fn status_fields() {
        let text = "Name:\tCPU 1/KVM\nUmask:\t0022\nState:\tS (sleeping)\nTgid:\t4242\nNgid:\t0\n\
                    Pid:\t4245\nCpus_allowed:\t3\nCpus_allowed_list:\t0-1\nMems_allowed_list:\t0\n";
        let status = parse_status(text).unwrap();
        assert_eq!(status.name.as_deref(), Some("CPU 1/KVM"));
        assert_eq!(status.tgid, Some(4242));
        assert_eq!(status.cpus_allowed, Some(vec![0, 1]));
        let status = parse_status("Name:\tx\nCpus_allowed_list:\t2,4-5\n").unwrap();
        assert_eq!(status.cpus_allowed, Some(vec![2, 4, 5]));
        assert_eq!(parse_status("Name:\tx\n").unwrap().cpus_allowed, None);
        let err = parse_status("Cpus_allowed_list:\t0-x\n").unwrap_err();
        assert!(err.contains("invalid CPU list"), "{err}");
    }

    #[test]
    fn cmdline_split() {
        assert_eq!(parse_cmdline(b"qemu\0-name\0guest=a\0"), vec!["qemu", "-name", "guest=a"]);
        assert_eq!(parse_cmdline(b"no-trailing-nul\0x"), vec!["no-trailing-nul", "x"]);
        assert_eq!(parse_cmdline(b""), Vec::<String>::new());
        assert_eq!(parse_cmdline(b"a\0\0b\0"), vec!["a", "", "b"]);
    }
}
