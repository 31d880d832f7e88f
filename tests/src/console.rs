//! An interactive console session with a child process (QEMU's serial console, `virsh console`): read what it
//! prints, wait for text, type lines.

use std::io::{Read, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A running child whose stdout is collected and whose stdin we type into.
pub struct Session {
    child: Child,
    stdin: Option<ChildStdin>,
    output: Arc<Mutex<Vec<u8>>>,
    started: Instant,
}

impl Session {
    /// Starts `cmd` with piped stdin and stdout (stderr is merged into the collected output).
    pub fn spawn(mut cmd: Command) -> std::io::Result<Self> {
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let started = Instant::now();
        let mut child = cmd.spawn()?;
        let stdin = child.stdin.take();
        let output = Arc::new(Mutex::new(Vec::new()));
        for stream in [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let out = Arc::clone(&output);
            std::thread::spawn(move || {
                let mut stream = stream;
                let mut buf = [0u8; 4096];
                while let Ok(n) = stream.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    out.lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .extend_from_slice(&buf[..n]);
                }
            });
        }
        Ok(Self {
            child,
            stdin,
            output,
            started,
        })
    }

    /// Everything printed so far, lossily decoded.
    pub fn output(&self) -> String {
        String::from_utf8_lossy(&self.output.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
    }

    /// Time since the child was started.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Waits until the output contains `text` (searching from byte `from`), returning the byte offset just past
    /// it; `None` at the timeout or when the child exited without printing it.
    pub fn expect_from(&mut self, from: usize, text: &str, timeout: Duration) -> Option<usize> {
        let deadline = Instant::now() + timeout;
        loop {
            {
                let out = self.output.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(pos) = find(&out[from.min(out.len())..], text.as_bytes()) {
                    return Some(from + pos + text.len());
                }
            }
            if Instant::now() > deadline {
                return None;
            }
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                // Give the reader threads a moment to drain what the child printed last.
                std::thread::sleep(Duration::from_millis(100));
                let out = self.output.lock().unwrap_or_else(|e| e.into_inner());
                return find(&out[from.min(out.len())..], text.as_bytes())
                    .map(|p| from + p + text.len());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for `text` anywhere in the output.
    pub fn expect(&mut self, text: &str, timeout: Duration) -> Option<usize> {
        self.expect_from(0, text, timeout)
    }

    /// Types `line` followed by a carriage return.
    pub fn send_line(&mut self, line: &str) -> std::io::Result<()> {
        self.send_raw(format!("{line}\r").as_bytes())
    }

    /// Writes raw bytes to the child's stdin.
    pub fn send_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        let stdin = self
            .stdin
            .as_mut()
            .ok_or_else(|| std::io::Error::other("stdin closed"))?;
        stdin.write_all(bytes)?;
        stdin.flush()
    }

    /// Waits up to `timeout` for the child to exit and returns its status code (`None` if killed or still
    /// running, in which case it is killed).
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        None
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return Some(0);
    }
    haystack.windows(needle.len()).position(|w| w == needle)
}
