//! What the integration tests share: temporary directories, a daemon served on a socket in one, and a test
//! backend that runs guests in memory and saves and restores them through real files.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use domain_xml::domain::Domain;
use libvirt_driver::backend::{AfterSave, Backend, ConsoleIo, EventSink, RunInfo};
use libvirt_driver::driver::Driver;
use libvirt_driver::proto::{code, RpcError};
use libvirt_driver::server::Server;
use libvirt_driver::store::Store;

/// A directory removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let p = std::env::temp_dir().join(format!(
            "virtxend-proto-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Serves a driver over `backend` on `<dir>/sock` (read-write) and `<dir>/sock-ro` (read-only), with its
/// definitions, status files and managed-save images under `dir`.
pub fn start(dir: &Path, backend: Arc<dyn Backend>) -> (Arc<Driver>, PathBuf) {
    let store = Store::open(&dir.join("config"), &dir.join("state"))
        .unwrap()
        .with_save_dir(&dir.join("save"));
    let driver = Driver::new(store, backend);
    let sock = dir.join("sock");
    let server = Server::bind_each(
        driver.clone(),
        (&sock, libvirt_driver::auth::Auth::None),
        Some((&dir.join("sock-ro"), libvirt_driver::auth::Auth::None)),
    )
    .unwrap();
    std::thread::spawn(move || server.run());
    (driver, sock)
}

/// What the test backend writes as a domain's saved state: a line naming the domain, a body, an end marker.
pub const STATE_BODY_LEN: usize = 200 * 1024;

fn state_tail() -> Vec<u8> {
    let mut v: Vec<u8> = (0..STATE_BODY_LEN).map(|i| (i % 251) as u8).collect();
    v.extend_from_slice(b"END");
    v
}

fn state_body(domid: u32) -> Vec<u8> {
    let mut v = format!("TESTSTATE of domain {domid}\n").into_bytes();
    v.extend(state_tail());
    v
}

/// A backend whose guests live in memory: create takes `delay` and runs the guest, the console echoes, save and
/// restore (when `saves`) write and read a recognisable state through the image file.
#[derive(Default)]
pub struct TestBackend {
    pub delay: Duration,
    pub running: Mutex<Vec<u32>>,
    pub next_id: AtomicU32,
    /// Whether save/restore work.
    pub saves: bool,
    /// The first line of every state restored so far ("TESTSTATE of domain N").
    pub restored: Mutex<Vec<String>>,
    /// Domains saved so far, with what became of them.
    pub saved: Mutex<Vec<(u32, AfterSave)>>,
    /// Whether the restores so far asked for a paused domain.
    pub restored_paused: Mutex<Vec<bool>>,
    /// The next save fails after writing part of the state.
    pub fail_save: AtomicBool,
    /// The next save fails and the guest dies with it.
    pub die_in_save: AtomicBool,
    /// While set, a save reports that it started and waits for a message before writing.
    pub save_gate: Mutex<Option<(Sender<()>, Receiver<()>)>>,
}

impl TestBackend {
    /// A backend that can save.
    pub fn saving() -> TestBackend {
        TestBackend {
            saves: true,
            ..TestBackend::default()
        }
    }
}

struct Echo(UnixStream);

impl ConsoleIo for Echo {
    fn reader(&mut self) -> Box<dyn Read + Send> {
        Box::new(self.0.try_clone().unwrap())
    }
    fn writer(&mut self) -> Box<dyn Write + Send> {
        Box::new(self.0.try_clone().unwrap())
    }
}

impl Backend for TestBackend {
    fn hypervisor_version(&self) -> Option<u64> {
        Some(4_017_000)
    }
    fn create(&self, _def: &Domain, _paused: bool) -> Result<u32, RpcError> {
        std::thread::sleep(self.delay);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        self.running.lock().unwrap().push(id);
        Ok(id)
    }
    fn destroy(&self, domid: u32) -> Result<(), RpcError> {
        self.running.lock().unwrap().retain(|d| *d != domid);
        Ok(())
    }
    fn shutdown(&self, _: u32) -> Result<(), RpcError> {
        Ok(())
    }
    fn reboot(&self, _: u32) -> Result<(), RpcError> {
        Ok(())
    }
    fn pause(&self, _: u32) -> Result<(), RpcError> {
        Ok(())
    }
    fn unpause(&self, _: u32) -> Result<(), RpcError> {
        Ok(())
    }
    fn info(&self, domid: u32) -> Result<Option<RunInfo>, RpcError> {
        Ok(self
            .running
            .lock()
            .unwrap()
            .contains(&domid)
            .then_some(RunInfo {
                state: 1,
                reason: 1,
                memory_kib: 262144,
                vcpus: 1,
                cpu_time_ns: 5,
            }))
    }
    fn open_console(
        &self,
        _domid: u32,
        _dev: Option<&str>,
    ) -> Result<Box<dyn ConsoleIo>, RpcError> {
        let (a, b) = UnixStream::pair().unwrap();
        std::thread::spawn(move || {
            let mut b2 = b.try_clone().unwrap();
            let mut b = b;
            let mut buf = [0u8; 1024];
            while let Ok(n) = b.read(&mut buf) {
                if n == 0 || b2.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        });
        Ok(Box::new(Echo(a)))
    }
    fn set_event_sink(&self, _sink: EventSink) {}
    fn check_save(&self) -> Result<(), RpcError> {
        if self.saves {
            Ok(())
        } else {
            Err(libvirt_driver::backend::save_unsupported())
        }
    }
    fn save(
        &self,
        domid: u32,
        out: &mut std::fs::File,
        after: AfterSave,
        frozen: &mut dyn FnMut() -> Result<(), RpcError>,
    ) -> Result<(), RpcError> {
        self.check_save()?;
        assert!(
            self.running.lock().unwrap().contains(&domid),
            "save of domain {domid}, which does not run"
        );
        if let Some((started, go)) = self.save_gate.lock().unwrap().as_ref() {
            started.send(()).unwrap();
            go.recv().unwrap();
        }
        let body = state_body(domid);
        let failed = |n: usize, out: &mut std::fs::File| {
            out.write_all(&body[..n]).unwrap();
            Err(RpcError::libxl(
                code::INTERNAL_ERROR,
                format!("internal error: Failed to save domain '{domid}' (test)"),
            ))
        };
        if self.fail_save.swap(false, Ordering::Relaxed) {
            return failed(1000, out);
        }
        if self.die_in_save.swap(false, Ordering::Relaxed) {
            self.destroy(domid)?;
            return failed(1000, out);
        }
        out.write_all(&body).unwrap();
        // The guest is "suspended" here: what the caller takes meanwhile is of the same instant; when it fails,
        // the domain goes on.
        frozen()?;
        self.saved.lock().unwrap().push((domid, after));
        if after == AfterSave::Stop {
            self.destroy(domid)?;
        }
        Ok(())
    }
    fn restore(
        &self,
        def: &Domain,
        input: &mut std::fs::File,
        paused: bool,
    ) -> Result<u32, RpcError> {
        self.check_save()?;
        let mut state = Vec::new();
        input.read_to_end(&mut state).unwrap();
        let line_end = state.iter().position(|b| *b == b'\n');
        let Some(end) = line_end.filter(|e| state[e + 1..] == state_tail()[..]) else {
            return Err(RpcError::libxl(
                code::OPERATION_FAILED,
                "operation failed: the saved state is not one this backend wrote",
            ));
        };
        let line = String::from_utf8_lossy(&state[..end]).into_owned();
        assert!(line.starts_with("TESTSTATE of domain "), "{line}");
        self.restored.lock().unwrap().push(line);
        self.restored_paused.lock().unwrap().push(paused);
        self.create(def, paused)
    }
}
