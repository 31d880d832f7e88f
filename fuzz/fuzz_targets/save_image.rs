//! Save images (`docs/save-format.md`): restoring any input into the in-memory hypervisor model either builds
//! a domain or fails cleanly, leaving no half-built domain behind; the xenstore nodes it carries are checked
//! before they are written.
#![no_main]

use libfuzzer_sys::fuzz_target;
use libxl_rs::save::restore_domain;
use libxl_rs::transport::fake::FakeXen;
use libxl_rs::xenstore::Store;

fuzz_target!(|data: &[u8]| {
    let mut x = FakeXen::new(64 << 20);
    match restore_domain(&mut x, data, true) {
        Ok(r) => {
            let mut store = Store::new();
            let _ = store.restore(r.domid, "fuzz", 1024, &r.nodes);
        }
        Err(_) => assert_eq!(
            x.state.borrow().domains.len(),
            1,
            "a failed restore leaves only the control domain"
        ),
    }
});
