//! Long volume operations run with the driver lock released, as libvirt's build jobs do: other calls proceed,
//! and the volumes and pool involved are protected until the job ends. qemu-img is wrapped (through the
//! `QEMU_IMG` override, which is why this test has its own binary) so the clone waits for the test's signal.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::sync::mpsc::channel;
use std::thread;
use std::time::Duration;

use common::{running_dir_pool, Scratch};
use xen_storage::{code, StorageDriver, VolFormat, VolumeDef};

/// Runs a driver call on another thread and fails (instead of hanging) if it stays blocked.
fn call<T: Send + 'static>(
    driver: &StorageDriver,
    f: impl FnOnce(&StorageDriver) -> T + Send + 'static,
) -> T {
    let driver = driver.clone();
    let (tx, rx) = channel();
    thread::spawn(move || {
        let _ = tx.send(f(&driver));
    });
    rx.recv_timeout(Duration::from_secs(120))
        .expect("a driver call stayed blocked while a clone was running")
}

#[test]
fn clone_runs_without_the_driver_lock_and_guards_its_volumes() {
    let s = Scratch::new("jobs");
    let gate = s.path("gate");
    fs::create_dir(&gate).expect("gate dir");
    let wrapper = s.path("qemu-img-gated");
    fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nif [ \"$1\" = convert ]; then\n  touch '{g}/started'\n  \
             while [ ! -e '{g}/release' ]; do sleep 0.05; done\nfi\nexec qemu-img \"$@\"\n",
            g = gate.display()
        ),
    )
    .expect("wrapper");
    fs::set_permissions(&wrapper, fs::Permissions::from_mode(0o755)).expect("chmod");
    // This binary has a single test, so no other thread reads the environment while it changes.
    std::env::set_var("QEMU_IMG", &wrapper);

    let driver = s.driver();
    let pool = running_dir_pool(&driver, &s, "p");
    let src = driver
        .create_volume(
            &pool,
            &VolumeDef::new("src.raw", VolFormat::Raw, 4 << 20),
            0,
        )
        .expect("src");
    fs::write(s.path("p/src.raw"), vec![0x5A; 4 << 20]).expect("content");
    let other = driver
        .create_volume(
            &pool,
            &VolumeDef::new("other.raw", VolFormat::Raw, 1 << 20),
            0,
        )
        .expect("other");

    let cloner = {
        let (driver, pool, src) = (driver.clone(), pool.clone(), src.clone());
        thread::spawn(move || {
            driver.create_volume_from(
                &pool,
                &VolumeDef::new("copy.qcow2", VolFormat::Qcow2, 0),
                &src,
                0,
            )
        })
    };
    let mut waited = 0;
    while !gate.join("started").exists() {
        assert!(waited < 2400, "the clone never started qemu-img convert");
        thread::sleep(Duration::from_millis(50));
        waited += 1;
    }

    // The driver answers while the copy runs; the new volume is not listed yet, even after an upload into
    // another volume refreshes the pool.
    let o = other.clone();
    call(&driver, move |d| -> xen_storage::Result<()> {
        let mut sink = d.upload(&o, 0, 0, 0)?;
        sink.write(b"during the clone")?;
        sink.finish()
    })
    .expect("upload during the clone");
    let p = pool.clone();
    let names = call(&driver, move |d| d.volume_names(&p)).expect("list during the clone");
    assert_eq!(names, ["other.raw", "src.raw"]);
    let v = src.clone();
    let err = call(&driver, move |d| d.upload(&v, 0, 0, 0).map(drop)).expect_err("source busy");
    assert_eq!(err.code(), code::OPERATION_INVALID);
    let p = pool.clone();
    assert!(call(&driver, move |d| d.pool_info(&p)).is_ok());
    // The source cannot be deleted, the name cannot be taken, the pool cannot be stopped or refreshed.
    let v = src.clone();
    let err = call(&driver, move |d| d.delete_volume(&v, 0)).expect_err("source busy");
    assert_eq!(
        err.to_string(),
        "Requested operation is not valid: volume 'src.raw' is still being allocated."
    );
    let p = pool.clone();
    let err = call(&driver, move |d| {
        d.create_volume(&p, &VolumeDef::new("copy.qcow2", VolFormat::Raw, 1), 0)
    })
    .expect_err("name reserved");
    assert_eq!(err.code(), code::STORAGE_VOL_EXIST);
    let p = pool.clone();
    let err = call(&driver, move |d| d.destroy_pool(&p)).expect_err("jobs running");
    assert_eq!(
        err.to_string(),
        "internal error: pool 'p' has asynchronous jobs running."
    );
    let p = pool.clone();
    assert_eq!(
        call(&driver, move |d| d.refresh_pool(&p, 0))
            .expect_err("jobs running")
            .code(),
        code::INTERNAL_ERROR
    );

    fs::write(gate.join("release"), b"").expect("release");
    let copy = cloner.join().expect("clone thread").expect("clone");
    assert_eq!(
        driver.volume_names(&pool).expect("names"),
        ["copy.qcow2", "other.raw", "src.raw"]
    );
    assert_eq!(driver.volume(&copy).expect("copy").format, "qcow2");
    driver.delete_volume(&src, 0).expect("source free again");
    driver.destroy_pool(&pool).expect("pool can stop again");
}
