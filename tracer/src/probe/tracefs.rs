//! tracefs: where it is mounted, and the field layout of classic tracepoints
//! (`events/<category>/<name>/format`), which changes across kernels.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
};

#[derive(Debug, thiserror::Error)]
pub enum TracefsError {
    #[error(
        "tracefs is not mounted at /sys/kernel/tracing or /sys/kernel/debug/tracing: mount it as root with `mount -t tracefs nodev /sys/kernel/tracing`"
    )]
    NotMounted,
    #[error(
        "tracefs is not mounted, and mounting it at /sys/kernel/tracing failed (as root: `mount -t tracefs nodev /sys/kernel/tracing`)"
    )]
    MountFailed(#[source] std::io::Error),
    #[error(
        "tracefs is mounted at {path} but this user (uid {uid}) cannot read it: grant CAP_DAC_READ_SEARCH or run as root"
    )]
    Unreadable { path: String, uid: u32 },
    #[error("tracepoint {0} does not exist on this kernel")]
    NoTracepoint(String),
    #[error("tracepoint {tp} has no field {field} (kernel too old or too new?)")]
    NoField { tp: String, field: String },
    #[error("cannot parse {0}: {1}")]
    Parse(String, String),
    #[error("reading {0}")]
    Io(String, #[source] std::io::Error),
}

/// One field of a tracepoint record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    pub offset: u32,
    pub size: u32,
}

/// Parsed `format` file: fields by name, and the tracepoint id.
#[derive(Debug, Clone, Default)]
pub struct Format {
    pub id: Option<u32>,
    pub fields: HashMap<String, Field>,
}

/// Parses a tracefs `format` file.
pub fn parse_format(text: &str) -> Result<Format, String> {
    let mut f = Format::default();
    for line in text.lines() {
        let line = line.trim();
        if let Some(id) = line.strip_prefix("ID:") {
            f.id = Some(id.trim().parse().map_err(|_| format!("bad ID line: {line}"))?);
            continue;
        }
        let Some(rest) = line.strip_prefix("field:") else { continue };
        let mut decl = None;
        let mut offset = None;
        let mut size = None;
        for part in rest.split(';') {
            let part = part.trim();
            if let Some(v) = part.strip_prefix("offset:") {
                offset = Some(v.parse::<u32>().map_err(|_| format!("bad offset in: {line}"))?);
            } else if let Some(v) = part.strip_prefix("size:") {
                size = Some(v.parse::<u32>().map_err(|_| format!("bad size in: {line}"))?);
            } else if part.starts_with("signed:") || part.is_empty() {
            } else if decl.is_none() {
                decl = Some(part);
            }
        }
        let (Some(decl), Some(offset), Some(size)) = (decl, offset, size) else {
            return Err(format!("incomplete field line: {line}"));
        };
        // "char prev_comm[16]" -> prev_comm; "__data_loc char[] comm" -> comm
        let name = decl.rsplit(' ').next().unwrap_or(decl);
        let name = name.split('[').next().unwrap_or(name).to_string();
        f.fields.insert(name, Field { offset, size });
    }
    Ok(f)
}

/// Where tracefs is usually mounted, the preferred place first.
pub const MOUNT_POINTS: [&str; 2] = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];

/// The tracefs mount point, without mounting anything: `NotMounted` where no mount
/// point has tracefs, `Unreadable` where one exists that this user may not read
/// (tracefs is mode 0700 root: a user with only CAP_BPF and CAP_PERFMON gets EACCES).
pub fn find_root() -> Result<PathBuf, TracefsError> {
    let mut unreadable = None;
    for p in MOUNT_POINTS {
        match std::fs::read_dir(Path::new(p).join("events")) {
            Ok(_) => return Ok(PathBuf::from(p)),
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                unreadable.get_or_insert(p);
            }
            Err(_) => {}
        }
    }
    match unreadable {
        Some(p) => Err(TracefsError::Unreadable { path: p.into(), uid: current_uid() }),
        None => Err(TracefsError::NotMounted),
    }
}

/// The tracefs mount point, mounting it at /sys/kernel/tracing when absent.
pub fn tracefs_root() -> Result<PathBuf, TracefsError> {
    match find_root() {
        Err(TracefsError::NotMounted) => {}
        found => return found,
    }
    let target = c"/sys/kernel/tracing";
    // SAFETY: mount(2) with constant NUL-terminated strings and no data.
    let rc = unsafe { libc::mount(c"nodev".as_ptr(), target.as_ptr(), c"tracefs".as_ptr(), 0, std::ptr::null()) };
    if rc != 0 {
        return Err(TracefsError::MountFailed(std::io::Error::last_os_error()));
    }
    find_root()
}

fn current_uid() -> u32 {
    // SAFETY: getuid has no preconditions.
    unsafe { libc::getuid() }
}

/// Reads and parses `events/<category>/<name>/format`.
pub fn read_format(root: &Path, category: &str, name: &str) -> Result<Format, TracefsError> {
    let path = root.join("events").join(category).join(name).join("format");
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(TracefsError::NoTracepoint(format!("{category}:{name}")));
        }
        Err(e) => return Err(TracefsError::Io(path.display().to_string(), e)),
    };
    parse_format(&text).map_err(|e| TracefsError::Parse(path.display().to_string(), e))
}

impl Format {
    pub fn offset(&self, tp: &str, field: &str) -> Result<u32, TracefsError> {
        self.fields
            .get(field)
            .map(|f| f.offset)
            .ok_or_else(|| TracefsError::NoField { tp: tp.into(), field: field.into() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SWITCH: &str = "name: sched_switch
ID: 372
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:char prev_comm[16];\toffset:8;\tsize:16;\tsigned:0;
\tfield:pid_t prev_pid;\toffset:24;\tsize:4;\tsigned:1;
\tfield:long prev_state;\toffset:32;\tsize:8;\tsigned:1;
\tfield:__data_loc char[] comm;\toffset:8;\tsize:4;\tsigned:0;
\tfield:pid_t next_pid;\toffset:56;\tsize:4;\tsigned:1;

print fmt: \"prev_comm=%s\", REC->prev_comm
";

    #[test]
    fn parses_fields_and_id() {
        let f = parse_format(SWITCH).unwrap();
        assert_eq!(f.id, Some(372));
        assert_eq!(f.fields["prev_state"], Field { offset: 32, size: 8 });
        assert_eq!(f.fields["next_pid"].offset, 56);
        assert_eq!(f.fields["prev_comm"].size, 16);
        assert_eq!(f.fields["comm"].offset, 8);
        assert!(f.offset("sched_switch", "nope").is_err());
    }

    #[test]
    fn shifted_offsets_are_followed() {
        // A kernel that inserted a field: every later offset moves, and so do we.
        let shifted = SWITCH.replace("offset:32", "offset:40").replace("offset:56", "offset:64");
        let f = parse_format(&shifted).unwrap();
        assert_eq!(f.offset("sched_switch", "prev_state").unwrap(), 40);
        assert_eq!(f.offset("sched_switch", "next_pid").unwrap(), 64);
    }

    #[test]
    fn rejects_broken_lines() {
        assert!(parse_format("\tfield:int x;\toffset:zz;\tsize:4;").is_err());
        assert!(parse_format("\tfield:int x;\tsize:4;").is_err());
    }
}
