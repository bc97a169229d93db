//! A minimal QMP client: QEMU connects to a socket vmmtrace listens on (so there is no
//! race with QEMU creating its socket), then commands are JSON lines.

use std::io::{BufRead as _, BufReader, Write as _};
use std::os::fd::AsRawFd as _;
use std::os::unix::net::{UnixListener, UnixStream};
use std::process::Child;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::Error;

pub(crate) struct Qmp {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

/// vCPU `cpu-index` and its thread id, from `query-cpus-fast`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VcpuThread {
    pub index: u32,
    pub tid: u32,
}

/// An iothread's id and thread id, from `query-iothreads`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IoThread {
    pub id: String,
    pub tid: u32,
}

impl Qmp {
    /// Waits for QEMU to connect (or to exit, or for `deadline`), then negotiates.
    pub(crate) fn accept(listener: &UnixListener, qemu: &mut Child, deadline: Duration) -> Result<Qmp, Error> {
        Qmp::negotiate(accept_from_qemu(listener, qemu, deadline, "QMP")?)
    }

    fn negotiate(stream: UnixStream) -> Result<Qmp, Error> {
        let writer = stream.try_clone().map_err(|e| Error::Qmp(format!("socket: {e}")))?;
        let mut qmp = Qmp { reader: BufReader::new(stream), writer };
        let greeting = qmp.read_message()?;
        if greeting.get("QMP").is_none() {
            return Err(Error::Qmp(format!("unexpected greeting {greeting}")));
        }
        qmp.execute("qmp_capabilities", None)?;
        Ok(qmp)
    }

    fn read_message(&mut self) -> Result<Value, Error> {
        let mut line = String::new();
        let n = self.reader.read_line(&mut line).map_err(|e| Error::Qmp(format!("read: {e}")))?;
        if n == 0 {
            return Err(Error::Qmp("QEMU closed the QMP connection".into()));
        }
        serde_json::from_str(&line).map_err(|e| Error::Qmp(format!("bad JSON {line:?}: {e}")))
    }

    /// Runs a command and returns its `return` value; events in between are skipped.
    pub(crate) fn execute(&mut self, command: &str, arguments: Option<Value>) -> Result<Value, Error> {
        let mut request = json!({ "execute": command });
        if let Some(arguments) = arguments {
            request["arguments"] = arguments;
        }
        writeln!(self.writer, "{request}").map_err(|e| Error::Qmp(format!("write: {e}")))?;
        loop {
            let mut reply = self.read_message()?;
            if let Some(ret) = reply.get_mut("return") {
                return Ok(ret.take());
            }
            if let Some(err) = reply.get("error") {
                return Err(Error::Qmp(format!("{command}: {err}")));
            }
        }
    }

    /// The vCPU threads, by index (libvirt finds them the same way).
    pub(crate) fn vcpu_threads(&mut self) -> Result<Vec<VcpuThread>, Error> {
        let cpus = self.execute("query-cpus-fast", None)?;
        let mut out = parse_vcpu_threads(&cpus)?;
        out.sort_by_key(|v| v.index);
        Ok(out)
    }

    pub(crate) fn iothreads(&mut self) -> Result<Vec<IoThread>, Error> {
        parse_iothreads(&self.execute("query-iothreads", None)?)
    }
}

/// Waits for QEMU to connect to `listener` (a `-chardev socket` in client mode), or to
/// exit, or for `deadline`.
pub(crate) fn accept_from_qemu(
    listener: &UnixListener,
    qemu: &mut Child,
    deadline: Duration,
    what: &str,
) -> Result<UnixStream, Error> {
    let start = Instant::now();
    loop {
        let mut pfd = libc::pollfd { fd: listener.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd for the duration of the call.
        let ready = unsafe { libc::poll(&mut pfd, 1, 100) };
        if ready > 0 {
            let (stream, _) = listener.accept().map_err(|e| Error::Qmp(format!("accept {what}: {e}")))?;
            return Ok(stream);
        }
        if let Ok(Some(status)) = qemu.try_wait() {
            return Err(Error::QemuExited {
                status: status.to_string(),
                when: format!("before connecting to {what}"),
                stderr: String::new(),
            });
        }
        if start.elapsed() > deadline {
            return Err(Error::Qmp(format!("QEMU did not connect to {what} within {deadline:?}")));
        }
    }
}

fn field_u32(v: &Value, key: &str) -> Result<u32, Error> {
    v.get(key)
        .and_then(Value::as_u64)
        .and_then(|n| u32::try_from(n).ok())
        .ok_or_else(|| Error::Qmp(format!("no {key} in {v}")))
}

pub(crate) fn parse_vcpu_threads(reply: &Value) -> Result<Vec<VcpuThread>, Error> {
    let list = reply.as_array().ok_or_else(|| Error::Qmp(format!("query-cpus-fast: not a list: {reply}")))?;
    list.iter().map(|c| Ok(VcpuThread { index: field_u32(c, "cpu-index")?, tid: field_u32(c, "thread-id")? })).collect()
}

pub(crate) fn parse_iothreads(reply: &Value) -> Result<Vec<IoThread>, Error> {
    let list = reply.as_array().ok_or_else(|| Error::Qmp(format!("query-iothreads: not a list: {reply}")))?;
    list.iter()
        .map(|t| {
            let id = t.get("id").and_then(Value::as_str).ok_or_else(|| Error::Qmp(format!("no id in {t}")))?;
            Ok(IoThread { id: id.to_string(), tid: field_u32(t, "thread-id")? })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_qemu_7_2_replies() {
        let cpus: Value = serde_json::from_str(
            r#"[{"thread-id": 812, "props": {"core-id": 0, "thread-id": 0, "node-id": 0, "socket-id": 1},
                 "qom-path": "/machine/unattached/device[1]", "cpu-index": 1, "target": "x86_64"},
                {"thread-id": 811, "props": {"core-id": 0, "thread-id": 0, "socket-id": 0},
                 "qom-path": "/machine/unattached/device[0]", "cpu-index": 0, "target": "x86_64"}]"#,
        )
        .unwrap();
        let v = parse_vcpu_threads(&cpus).unwrap();
        assert_eq!(v, [VcpuThread { index: 1, tid: 812 }, VcpuThread { index: 0, tid: 811 }]);
        let io: Value = serde_json::from_str(
            r#"[{"poll-shrink": 0, "thread-id": 815, "aio-max-batch": 0, "poll-grow": 0, "poll-max-ns": 32768, "id": "iothread0"}]"#,
        )
        .unwrap();
        assert_eq!(parse_iothreads(&io).unwrap(), [IoThread { id: "iothread0".into(), tid: 815 }]);
        assert!(parse_vcpu_threads(&serde_json::json!({"x": 1})).is_err());
        assert!(parse_vcpu_threads(&serde_json::json!([{"cpu-index": 0}])).is_err());
    }
}
