//! The storage backend against real files, real qemu-img and (as root) real mkfs/mount: pool lifecycle,
//! volumes, streams, bad input and a daemon restart.

mod common;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::process::Command;
use std::sync::mpsc::Receiver;

use common::{allocated, is_root, qemu_img_info, running_dir_pool, Scratch};
use xen_storage::{
    code, flags, BackingStore, Chunk, Lifecycle, PoolDef, PoolEvent, PoolEventKind, PoolSource,
    PoolState, PoolType, VolFormat, VolType, VolumeDef, VIR_FROM_STORAGE,
};

const MIB: u64 = 1024 * 1024;

/// Checks a document against libvirt's RelaxNG schema with `virt-xml-validate` (libvirt-clients).
fn assert_schema_valid(scratch: &Scratch, xml: &str, schema: &str) {
    let file = scratch.path(&format!("check-{schema}.xml"));
    fs::write(&file, xml).expect("writing the document");
    let out = Command::new("virt-xml-validate")
        .arg(&file)
        .arg(schema)
        .output()
        .expect("running virt-xml-validate");
    assert!(
        out.status.success(),
        "{schema} XML rejected by libvirt's schema: {}{}\n{xml}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn drain(rx: &Receiver<PoolEvent>) -> Vec<(String, PoolEventKind)> {
    rx.try_iter().map(|e| (e.pool.name, e.kind)).collect()
}

#[test]
fn dir_pool_whole_lifecycle_with_events() {
    let s = Scratch::new("lifecycle");
    let driver = s.driver();
    let (_id, rx) = driver.subscribe();
    let target = s.path("images");

    let pool = driver
        .define_pool(PoolDef::dir("images", &target))
        .expect("define");
    assert!(
        s.config().join("storage/images.xml").is_file(),
        "config file written"
    );
    let config_mode = fs::metadata(s.config().join("storage/images.xml"))
        .expect("config")
        .permissions()
        .mode();
    assert_eq!(config_mode & 0o777, 0o600, "config readable by root only");
    assert!(!driver.is_active(&pool).expect("is_active"));
    assert!(driver.is_persistent(&pool).expect("is_persistent"));
    assert_eq!(
        driver.pool_info(&pool).expect("info").state,
        PoolState::Inactive
    );
    assert_eq!(driver.pool_names(false), vec!["images".to_string()]);
    assert!(driver.pool_names(true).is_empty());

    // Starting without the directory fails the way libvirt's refresh does.
    let err = driver.start_pool(&pool, 0).expect_err("no target dir yet");
    assert_eq!(err.code(), code::SYSTEM_ERROR);
    assert!(
        err.libvirt_message().contains("No such file or directory"),
        "{}",
        err.libvirt_message()
    );

    driver.build_pool(&pool, 0).expect("build");
    let meta = fs::metadata(&target).expect("target built");
    assert!(meta.is_dir());
    assert_eq!(
        meta.permissions().mode() & 0o777,
        0o711,
        "libvirt's default pool mode"
    );

    driver.start_pool(&pool, 0).expect("start");
    assert!(
        s.state().join("storage/images.xml").is_file(),
        "state file written"
    );
    let info = driver.pool_info(&pool).expect("info");
    assert_eq!(info.state, PoolState::Running);
    assert!(
        info.capacity > 0 && info.available > 0 && info.allocation > 0,
        "{info:?}"
    );
    assert!(info.capacity >= info.allocation);
    let err = driver.start_pool(&pool, 0).expect_err("already active");
    assert_eq!(err.code(), code::OPERATION_INVALID);
    assert_eq!(
        err.to_string(),
        "Requested operation is not valid: storage pool 'images' is already active"
    );

    let xml = driver.pool_xml(&pool, 0).expect("xml");
    assert!(
        xml.starts_with("<pool type='dir'>\n  <name>images</name>\n"),
        "{xml}"
    );
    assert!(
        xml.contains(&format!("<uuid>{}</uuid>", pool.uuid.hyphenated())),
        "{xml}"
    );
    assert!(
        xml.contains(&format!(
            "<capacity unit='bytes'>{}</capacity>",
            info.capacity
        )),
        "{xml}"
    );
    assert!(
        xml.contains(&format!("<path>{}</path>", target.display())),
        "{xml}"
    );
    assert!(xml.contains("<mode>0711</mode>"), "{xml}");
    assert_schema_valid(&s, &xml, "storagepool");

    fs::write(target.join("dropped-in.img"), vec![1u8; 4096]).expect("file outside the API");
    driver.refresh_pool(&pool, 0).expect("refresh");
    assert_eq!(
        driver.volume_names(&pool).expect("vols"),
        vec!["dropped-in.img".to_string()]
    );
    // Changed behind the driver's back: the next refresh probes it again.
    let dropped = target.join("dropped-in.img");
    let ok = Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(&dropped)
        .arg("8M")
        .status()
        .expect("qemu-img create");
    assert!(ok.success());
    driver.refresh_pool(&pool, 0).expect("refresh");
    let v = driver
        .volume(
            &driver
                .lookup_volume_by_name(&pool, "dropped-in.img")
                .expect("vol"),
        )
        .expect("vol");
    assert_eq!((v.format.as_str(), v.capacity), ("qcow2", 8 * MIB));
    fs::remove_file(target.join("dropped-in.img")).expect("rm");
    driver.refresh_pool(&pool, 0).expect("refresh");
    assert!(driver.list_volumes(&pool).expect("vols").is_empty());

    driver.set_autostart(&pool, true).expect("autostart on");
    let link = s.config().join("storage/autostart/images.xml");
    assert_eq!(
        fs::read_link(&link).expect("autostart link"),
        s.config().join("storage/images.xml")
    );
    assert!(driver.autostart_of(&pool).expect("get autostart"));
    driver.set_autostart(&pool, false).expect("autostart off");
    assert!(!link.exists());

    let err = driver.undefine_pool(&pool).expect_err("active");
    assert_eq!(err.code(), code::OPERATION_INVALID);
    driver.destroy_pool(&pool).expect("destroy");
    assert!(
        !s.state().join("storage/images.xml").exists(),
        "state file removed"
    );
    assert!(target.is_dir(), "destroy keeps data");
    let err = driver.destroy_pool(&pool).expect_err("not active");
    assert_eq!(
        err.to_string(),
        "Requested operation is not valid: storage pool 'images' is not active"
    );
    driver.delete_pool(&pool, 0).expect("delete");
    assert!(!target.exists());
    driver.undefine_pool(&pool).expect("undefine");
    assert!(!s.config().join("storage/images.xml").exists());
    let err = driver.lookup_pool_by_name("images").expect_err("gone");
    assert_eq!(
        (err.code(), err.domain()),
        (code::NO_STORAGE_POOL, VIR_FROM_STORAGE)
    );
    assert_eq!(
        err.to_string(),
        "Storage pool not found: no storage pool with matching name 'images'"
    );

    let events = drain(&rx);
    let expected = [
        PoolEventKind::Lifecycle(Lifecycle::Defined),
        PoolEventKind::Lifecycle(Lifecycle::Created),
        PoolEventKind::Lifecycle(Lifecycle::Started),
        PoolEventKind::Refresh,
        PoolEventKind::Refresh,
        PoolEventKind::Refresh,
        PoolEventKind::Lifecycle(Lifecycle::Stopped),
        PoolEventKind::Lifecycle(Lifecycle::Deleted),
        PoolEventKind::Lifecycle(Lifecycle::Undefined),
    ];
    assert_eq!(events.iter().map(|e| e.1).collect::<Vec<_>>(), expected);
    assert!(events.iter().all(|e| e.0 == "images"));
}

#[test]
fn transient_pools_and_list_filters() {
    let s = Scratch::new("lists");
    let driver = s.driver();
    let a = running_dir_pool(&driver, &s, "a");
    driver.set_autostart(&a, true).expect("autostart");
    let _b = driver
        .define_pool(PoolDef::dir("b", s.path("b")))
        .expect("define b");
    let c = driver
        .create_pool(
            PoolDef::dir("c", s.path("c")),
            flags::POOL_CREATE_WITH_BUILD,
        )
        .expect("create c");
    assert!(!driver.is_persistent(&c).expect("persistent?"));
    assert!(s.path("c").is_dir(), "built by create");

    let names = |f: u32| -> Vec<String> {
        driver
            .list_pools(f)
            .expect("list")
            .into_iter()
            .map(|p| p.name)
            .collect()
    };
    assert_eq!(names(0), ["a", "b", "c"]);
    assert_eq!(names(flags::LIST_POOLS_ACTIVE), ["a", "c"]);
    assert_eq!(names(flags::LIST_POOLS_INACTIVE), ["b"]);
    assert_eq!(names(flags::LIST_POOLS_PERSISTENT), ["a", "b"]);
    assert_eq!(names(flags::LIST_POOLS_TRANSIENT), ["c"]);
    assert_eq!(names(flags::LIST_POOLS_AUTOSTART), ["a"]);
    assert_eq!(names(flags::LIST_POOLS_NO_AUTOSTART), ["b", "c"]);
    assert_eq!(
        names(flags::LIST_POOLS_ACTIVE | flags::LIST_POOLS_PERSISTENT),
        ["a"]
    );
    assert_eq!(names(flags::LIST_POOLS_DIR), ["a", "b", "c"]);
    assert!(names(flags::LIST_POOLS_FS).is_empty());
    assert_eq!(
        driver.list_pools(1 << 30).expect_err("bad flag").code(),
        code::INVALID_ARG
    );
    assert_eq!(driver.pool_names(true), ["a", "c"]);
    let err = driver
        .find_pool_sources("fs", None, 0)
        .expect_err("no discovery");
    assert_eq!(err.to_string(), "this function is not supported by the connection driver: pool type 'fs' does not support source discovery");
    assert_eq!(
        driver
            .find_pool_sources("nope", None, 0)
            .expect_err("unknown")
            .code(),
        code::INTERNAL_ERROR
    );
    assert_eq!(driver.pool_names(false), ["b"]);

    assert_eq!(
        driver
            .set_autostart(&c, true)
            .expect_err("transient")
            .code(),
        code::INTERNAL_ERROR
    );
    assert_eq!(driver.lookup_pool_by_uuid(&c.uuid).expect("by uuid"), c);
    let messy = format!("{}//c/", s.root.display());
    assert_eq!(
        driver
            .lookup_pool_by_target_path(&messy)
            .expect("by target path"),
        c
    );
    assert_eq!(
        driver
            .lookup_pool_by_target_path("/nowhere")
            .expect_err("no pool")
            .code(),
        code::NO_STORAGE_POOL
    );
    driver.destroy_pool(&c).expect("destroy transient");
    assert_eq!(
        driver
            .lookup_pool_by_name("c")
            .expect_err("transient gone")
            .code(),
        code::NO_STORAGE_POOL
    );
    assert!(s.path("c").is_dir(), "data stays");

    // Duplicates: same name with another uuid, and another pool on the same target.
    let mut dup = PoolDef::dir("a", s.path("elsewhere"));
    dup.uuid = Some(uuid::Uuid::new_v4());
    let err = driver.define_pool(dup).expect_err("name taken");
    assert_eq!(err.code(), code::OPERATION_FAILED);
    assert!(
        err.to_string()
            .contains("pool 'a' already exists with uuid"),
        "{err}"
    );
    let err = driver
        .define_pool(PoolDef::dir("z", s.path("a")))
        .expect_err("same target");
    assert_eq!(
        err.to_string(),
        "operation failed: Storage source conflict with pool: 'a'"
    );
    let err = driver
        .define_pool(PoolDef::dir("x/y", s.path("xy")))
        .expect_err("slash");
    assert_eq!(err.code(), code::XML_ERROR);
    let err = driver
        .define_pool(PoolDef::dir("rel", "relative/path"))
        .expect_err("relative");
    assert_eq!(err.code(), code::XML_ERROR);
}

#[test]
fn redefining_an_active_pool_applies_at_the_next_start() {
    let s = Scratch::new("redefine");
    let driver = s.driver();
    let pool = running_dir_pool(&driver, &s, "r");
    let mut def = PoolDef::dir("r", s.path("r"));
    def.uuid = Some(pool.uuid);
    def.permissions.mode = Some(0o750);
    assert_eq!(driver.define_pool(def).expect("redefine"), pool);
    let config = fs::read_to_string(s.config().join("storage/r.xml")).expect("config");
    assert!(config.contains("<mode>0750</mode>"), "{config}");
    assert!(driver
        .pool_xml(&pool, flags::XML_INACTIVE)
        .expect("inactive xml")
        .contains("<mode>0750</mode>"));
    assert!(
        driver
            .pool_xml(&pool, 0)
            .expect("live xml")
            .contains("<mode>0711</mode>"),
        "live: the directory"
    );
    driver.destroy_pool(&pool).expect("destroy");
    assert_eq!(
        driver.pool_def(&pool, 0).expect("def").permissions.mode,
        Some(0o750)
    );
    driver
        .build_pool(&pool, 0)
        .expect("build applies the new mode");
    assert_eq!(
        fs::metadata(s.path("r"))
            .expect("stat")
            .permissions()
            .mode()
            & 0o777,
        0o750
    );
}

#[test]
fn raw_and_qcow2_volumes_with_capacity_allocation_and_xml() {
    let s = Scratch::new("volumes");
    let driver = s.driver();
    let pool = running_dir_pool(&driver, &s, "p");

    // Raw, 16 MiB with 4 MiB preallocated.
    let mut def = VolumeDef::new("disk.raw", VolFormat::Raw, 16 * MIB);
    def.allocation = Some(4 * MIB);
    let raw = driver.create_volume(&pool, &def, 0).expect("raw");
    let path = s.path("p/disk.raw");
    assert_eq!(raw.key, path.to_string_lossy());
    let meta = fs::metadata(&path).expect("stat");
    assert_eq!(meta.len(), 16 * MIB);
    assert!(
        allocated(&path) >= 4 * MIB && allocated(&path) < 16 * MIB,
        "allocated {}",
        allocated(&path)
    );
    assert_eq!(
        meta.permissions().mode() & 0o777,
        0o600,
        "libvirt's default volume mode"
    );
    let info = driver.volume_info(&raw).expect("info");
    assert_eq!(
        (info.kind, info.capacity, info.allocation),
        (VolType::File, 16 * MIB, allocated(&path))
    );

    let physical = driver
        .volume_info_flags(&raw, flags::VOL_GET_PHYSICAL)
        .expect("physical");
    assert_eq!(
        physical.allocation,
        16 * MIB,
        "physical size of the raw file"
    );

    // Sparse raw.
    let sparse = driver
        .create_volume(
            &pool,
            &VolumeDef::new("sparse.raw", VolFormat::Raw, 64 * MIB),
            0,
        )
        .expect("sparse");
    assert_eq!(
        fs::metadata(s.path("p/sparse.raw")).expect("stat").len(),
        64 * MIB
    );
    assert!(driver.volume_info(&sparse).expect("info").allocation < MIB);

    // qcow2 with libvirt's defaults, and one backed by the raw volume.
    let q = driver
        .create_volume(
            &pool,
            &VolumeDef::new("disk.qcow2", VolFormat::Qcow2, 1 << 30),
            0,
        )
        .expect("qcow2");
    let qi = qemu_img_info(&s.path("p/disk.qcow2"));
    assert_eq!(qi["format"], "qcow2");
    assert_eq!(qi["virtual-size"], 1u64 << 30);
    assert_eq!(qi["format-specific"]["data"]["compat"], "1.1");
    let mut full = VolumeDef::new("full.qcow2", VolFormat::Qcow2, 16 * MIB);
    full.allocation = Some(16 * MIB);
    let f = driver
        .create_volume(&pool, &full, flags::VOL_CREATE_PREALLOC_METADATA)
        .expect("preallocated qcow2");
    assert!(
        driver.volume_info(&f).expect("info").allocation >= 16 * MIB,
        "falloc preallocation"
    );
    driver.delete_volume(&f, 0).expect("delete");
    let mut over = VolumeDef::new("overlay.qcow2", VolFormat::Qcow2, 0);
    over.backing_store = Some(BackingStore {
        path: path.clone(),
        format: None,
    });
    over.lazy_refcounts = true;
    over.cluster_size = Some(128 * 1024);
    over.extended_l2 = true;
    over.permissions.mode = Some(0o640);
    let o = driver.create_volume(&pool, &over, 0).expect("overlay");
    let oi = qemu_img_info(&s.path("p/overlay.qcow2"));
    assert_eq!(oi["backing-filename"], path.to_string_lossy().as_ref());
    assert_eq!(oi["backing-filename-format"], "raw");
    assert_eq!(
        oi["virtual-size"],
        16 * MIB,
        "capacity taken from the backing file"
    );
    assert_eq!(oi["format-specific"]["data"]["lazy-refcounts"], true);
    assert_eq!(oi["cluster-size"], 128 * 1024);
    assert_eq!(oi["format-specific"]["data"]["extended-l2"], true);
    assert_eq!(
        fs::metadata(s.path("p/overlay.qcow2"))
            .expect("stat")
            .permissions()
            .mode()
            & 0o777,
        0o640
    );

    let xml = driver.volume_xml(&o).expect("xml");
    for needle in [
        "<volume type='file'>",
        "<name>overlay.qcow2</name>",
        &format!("<key>{}</key>", s.path("p/overlay.qcow2").display()),
        &format!("<capacity unit='bytes'>{}</capacity>", 16 * MIB),
        "<format type='qcow2'/>",
        "<mode>0640</mode>",
        "<timestamps>",
        "<mtime>",
        "<compat>1.1</compat>",
        "<lazy_refcounts/>",
        "<backingStore>",
        &format!("<path>{}</path>", path.display()),
        "<format type='raw'/>",
    ] {
        assert!(xml.contains(needle), "missing {needle} in\n{xml}");
    }

    assert_schema_valid(&s, &xml, "storagevol");
    assert_schema_valid(&s, &driver.volume_xml(&raw).expect("raw xml"), "storagevol");
    let caps = xen_storage::xml::pool_capabilities();
    assert!(
        caps.contains("<pool type='dir' supported='yes'>")
            && caps.contains("<pool type='rbd' supported='no'/>")
    );
    assert_schema_valid(&s, &caps, "storagepoolcaps");
    assert_schema_valid(&s, &driver.volume_xml(&q).expect("qcow2 xml"), "storagevol");

    // Lookups by name, key and path; list calls.
    assert_eq!(
        driver
            .lookup_volume_by_name(&pool, "disk.qcow2")
            .expect("by name"),
        q
    );
    assert_eq!(driver.lookup_volume_by_key(&q.key).expect("by key"), q);
    let messy = format!("{}//p//disk.qcow2", s.root.display());
    assert_eq!(driver.lookup_volume_by_path(&messy).expect("by path"), q);
    assert_eq!(
        driver.volume_path(&q).expect("path"),
        s.path("p/disk.qcow2").to_string_lossy()
    );
    assert_eq!(driver.lookup_pool_by_volume(&q).expect("pool of vol"), pool);
    assert_eq!(
        driver.volume_names(&pool).expect("names"),
        ["disk.qcow2", "disk.raw", "overlay.qcow2", "sparse.raw"]
    );

    // The volumes survive a refresh unchanged.
    driver.refresh_pool(&pool, 0).expect("refresh");
    assert_eq!(driver.volume_info(&raw).expect("info").capacity, 16 * MIB);
    assert_eq!(driver.volume(&o).expect("vol").format, "qcow2");

    driver.delete_volume(&sparse, 0).expect("delete");
    assert!(!s.path("p/sparse.raw").exists());
    let err = driver.volume_info(&sparse).expect_err("deleted");
    assert_eq!(err.code(), code::NO_STORAGE_VOL);
    assert_eq!(
        err.to_string(),
        "Storage volume not found: no storage vol with matching name 'sparse.raw'"
    );
}

fn write_pattern(path: &std::path::Path, offset: u64, len: usize, byte: u8) {
    use std::os::unix::fs::FileExt;
    let f = fs::OpenOptions::new().write(true).open(path).expect("open");
    f.write_all_at(&vec![byte; len], offset).expect("write");
}

fn qemu_img_compare(a: &std::path::Path, fa: &str, b: &std::path::Path, fb: &str) -> bool {
    Command::new("qemu-img")
        .args(["compare", "-U", "-f", fa, "-F", fb])
        .arg(a)
        .arg(b)
        .output()
        .expect("qemu-img compare")
        .status
        .success()
}

#[test]
fn clone_resize_and_wipe() {
    let s = Scratch::new("clone");
    let driver = s.driver();
    let pool = running_dir_pool(&driver, &s, "p");
    let other = running_dir_pool(&driver, &s, "q");
    let src = driver
        .create_volume(
            &pool,
            &VolumeDef::new("src.raw", VolFormat::Raw, 8 * MIB),
            0,
        )
        .expect("src");
    let src_path = s.path("p/src.raw");
    write_pattern(&src_path, 0, 4096, 0xAB);
    write_pattern(&src_path, 5 * MIB, 8192, 0xCD);

    // Clone into qcow2 in another pool, with a larger capacity.
    let q = driver
        .create_volume_from(
            &other,
            &VolumeDef::new("clone.qcow2", VolFormat::Qcow2, 12 * MIB),
            &src,
            0,
        )
        .expect("clone to qcow2");
    let qpath = s.path("q/clone.qcow2");
    assert_eq!(qemu_img_info(&qpath)["virtual-size"], 12 * MIB);
    assert!(
        qemu_img_compare(&src_path, "raw", &qpath, "qcow2"),
        "clone content differs"
    );
    assert_eq!(driver.volume_info(&q).expect("info").capacity, 12 * MIB);
    // Clone of an overlay keeping its backing store (what virsh vol-clone sends for a qcow2 overlay).
    let mut overlay = VolumeDef::new("overlay.qcow2", VolFormat::Qcow2, 0);
    overlay.backing_store = Some(BackingStore {
        path: src_path.clone(),
        format: Some(VolFormat::Raw),
    });
    let ov = driver.create_volume(&pool, &overlay, 0).expect("overlay");
    let mut clone_def = VolumeDef::new("overlay-clone.qcow2", VolFormat::Qcow2, 0);
    clone_def.backing_store = overlay.backing_store.clone();
    let oc = driver
        .create_volume_from(&pool, &clone_def, &ov, 0)
        .expect("clone keeping the backing store");
    let oci = qemu_img_info(&s.path("p/overlay-clone.qcow2"));
    assert_eq!(oci["backing-filename"], src_path.to_string_lossy().as_ref());
    assert!(
        oci["actual-size"].as_u64().expect("size") < MIB,
        "only differences are stored"
    );
    assert!(qemu_img_compare(
        &src_path,
        "raw",
        &s.path("p/overlay-clone.qcow2"),
        "qcow2"
    ));
    let mut raw_clone = VolumeDef::new("bad.raw", VolFormat::Raw, 0);
    raw_clone.backing_store = overlay.backing_store.clone();
    let err = driver
        .create_volume_from(&pool, &raw_clone, &ov, 0)
        .expect_err("raw with backing");
    assert_eq!(err.code(), code::NO_SUPPORT);
    driver.delete_volume(&oc, 0).expect("delete");
    driver.delete_volume(&ov, 0).expect("delete");

    // What virsh vol-clone does: the source's own XML with a new name and no key.
    for (source, new_name) in [(&q, "vc.qcow2"), (&src, "vc.raw")] {
        let xml = driver.volume_xml(source).expect("source xml");
        let key_line = xml
            .lines()
            .find(|l| l.contains("<key>"))
            .expect("key line")
            .to_string();
        let name_line = xml
            .lines()
            .find(|l| l.contains("<name>"))
            .expect("name line")
            .to_string();
        let clone_xml = xml
            .replace(&format!("{key_line}\n"), "")
            .replace(&name_line, &format!("  <name>{new_name}</name>"));
        let def = xen_storage::xml::parse_volume(&clone_xml, false).expect("own XML parses back");
        let pool_of = driver.lookup_pool_by_volume(source).expect("pool");
        let cloned = driver
            .create_volume_from(&pool_of, &def, source, 0)
            .expect("vol-clone");
        let (a, b) = (
            driver.volume(source).expect("src"),
            driver.volume(&cloned).expect("clone"),
        );
        assert_eq!((a.format, a.capacity), (b.format, b.capacity));
        driver.delete_volume(&cloned, 0).expect("delete clone");
    }

    // Clone into raw: capacity is at least the source's.
    let r = driver
        .create_volume_from(
            &pool,
            &VolumeDef::new("clone.raw", VolFormat::Raw, 0),
            &src,
            0,
        )
        .expect("clone to raw");
    assert_eq!(driver.volume_info(&r).expect("info").capacity, 8 * MIB);
    assert_eq!(
        fs::read(s.path("p/clone.raw")).expect("read"),
        fs::read(&src_path).expect("read")
    );
    let err = driver
        .create_volume_from(
            &pool,
            &VolumeDef::new("clone.raw", VolFormat::Raw, 0),
            &src,
            0,
        )
        .expect_err("exists");
    assert_eq!(err.code(), code::STORAGE_VOL_EXIST);

    // Resize raw: grow, refuse shrink without the flag, shrink with it, delta.
    driver.resize_volume(&r, 10 * MIB, 0).expect("grow");
    assert_eq!(
        fs::metadata(s.path("p/clone.raw")).expect("stat").len(),
        10 * MIB
    );
    let err = driver
        .resize_volume(&r, 2 * MIB, 0)
        .expect_err("shrink without flag");
    assert_eq!(err.code(), code::INVALID_ARG);
    assert_eq!(
        fs::metadata(s.path("p/clone.raw")).expect("stat").len(),
        10 * MIB,
        "nothing changed"
    );
    driver
        .resize_volume(&r, 2 * MIB, flags::VOL_RESIZE_DELTA)
        .expect("grow by delta");
    assert_eq!(driver.volume_info(&r).expect("info").capacity, 12 * MIB);
    driver
        .resize_volume(&r, 9 * MIB, flags::VOL_RESIZE_SHRINK)
        .expect("shrink");
    assert_eq!(
        fs::metadata(s.path("p/clone.raw")).expect("stat").len(),
        9 * MIB
    );
    let before = allocated(&s.path("p/clone.raw"));
    driver
        .resize_volume(&r, 16 * MIB, flags::VOL_RESIZE_ALLOCATE)
        .expect("grow allocated");
    assert!(
        allocated(&s.path("p/clone.raw")) >= before + 7 * MIB,
        "new range allocated"
    );
    // qcow2 through qemu-img resize.
    driver.resize_volume(&q, 32 * MIB, 0).expect("grow qcow2");
    assert_eq!(qemu_img_info(&qpath)["virtual-size"], 32 * MIB);
    driver
        .resize_volume(&q, 16 * MIB, flags::VOL_RESIZE_SHRINK)
        .expect("shrink qcow2");
    assert_eq!(qemu_img_info(&qpath)["virtual-size"], 16 * MIB);

    // Wipe: raw data becomes zeros; qcow2 is recreated empty with the same capacity.
    driver
        .wipe_volume(&src, flags::VOL_WIPE_ALG_ZERO, 0)
        .expect("wipe raw");
    let data = fs::read(&src_path).expect("read");
    assert_eq!(data.len() as u64, 8 * MIB);
    assert!(data.iter().all(|b| *b == 0), "raw wiped to zeros");
    let before = qemu_img_info(&qpath)["actual-size"]
        .as_u64()
        .expect("actual");
    driver
        .wipe_volume(&q, flags::VOL_WIPE_ALG_ZERO, 0)
        .expect("wipe qcow2");
    let after = qemu_img_info(&qpath);
    assert_eq!(after["format"], "qcow2");
    assert_eq!(after["virtual-size"], 16 * MIB);
    assert!(after["actual-size"].as_u64().expect("actual") <= before);
    let zero = s.path("zero.raw");
    fs::File::create(&zero)
        .expect("zero")
        .set_len(16 * MIB)
        .expect("len");
    assert!(
        qemu_img_compare(&zero, "raw", &qpath, "qcow2"),
        "wiped qcow2 reads as zeros"
    );
    assert_eq!(
        driver.wipe_volume(&q, 3, 0).expect_err("scrub alg").code(),
        code::NO_SUPPORT
    );
    assert_eq!(
        driver
            .wipe_volume(&q, 10, 0)
            .expect_err("unknown alg")
            .code(),
        code::INVALID_ARG
    );
    assert_eq!(
        driver
            .wipe_volume(&q, flags::VOL_WIPE_ALG_TRIM, 0)
            .expect_err("trim qcow2")
            .code(),
        code::NO_SUPPORT
    );
    write_pattern(&src_path, 0, 3 * MIB as usize, 0x99);
    assert!(allocated(&src_path) >= 3 * MIB);
    driver
        .wipe_volume(&src, flags::VOL_WIPE_ALG_TRIM, 0)
        .expect("trim raw");
    let data = fs::read(&src_path).expect("read");
    assert_eq!(data.len() as u64, 8 * MIB, "size kept");
    assert!(data.iter().all(|b| *b == 0), "trimmed to zeros");
    assert!(allocated(&src_path) < MIB, "deallocated");
    assert!(
        driver.volume_info(&src).expect("info").allocation < MIB,
        "info refreshed"
    );
}

#[test]
fn upload_and_download_with_holes() {
    let s = Scratch::new("streams");
    let driver = s.driver();
    let (_id, rx) = driver.subscribe();
    let pool = running_dir_pool(&driver, &s, "p");
    let vol = driver
        .create_volume(&pool, &VolumeDef::new("v.raw", VolFormat::Raw, 4 * MIB), 0)
        .expect("vol");
    let path = s.path("p/v.raw");
    drain(&rx);

    // Plain upload at an offset.
    let mut sink = driver.upload(&vol, 1000, 0, 0).expect("upload");
    sink.write(b"hello ").expect("write");
    sink.write(b"world").expect("write");
    sink.finish().expect("finish");
    let data = fs::read(&path).expect("read");
    assert_eq!(&data[1000..1011], b"hello world");
    assert_eq!(
        drain(&rx),
        [("p".to_string(), PoolEventKind::Refresh)],
        "upload refreshes the pool"
    );

    // Non-sparse download returns the bytes, zeros included.
    let mut src = driver.download(&vol, 990, 30, 0).expect("download");
    let mut got = Vec::new();
    while let Some(chunk) = src.next_chunk(7).expect("chunk") {
        match chunk {
            Chunk::Data(d) => got.extend(d),
            Chunk::Hole(_) => panic!("hole in a non-sparse stream"),
        }
    }
    assert_eq!(got, data[990..1020]);

    // A sparse file: data, hole, data, trailing hole.
    let sp = driver
        .create_volume(
            &pool,
            &VolumeDef::new("holes.raw", VolFormat::Raw, 4 * MIB),
            0,
        )
        .expect("vol");
    let sp_path = s.path("p/holes.raw");
    write_pattern(&sp_path, 0, 4096, 0x11);
    write_pattern(&sp_path, 2 * MIB, 8192, 0x22);
    let mut src = driver
        .download(&sp, 0, 0, flags::VOL_DOWNLOAD_SPARSE_STREAM)
        .expect("download");
    let mut segments = Vec::new();
    let mut rebuilt = Vec::new();
    while let Some(chunk) = src.next_chunk(1 << 20).expect("chunk") {
        match chunk {
            Chunk::Data(d) => {
                segments.push(('D', d.len() as u64));
                rebuilt.extend(d);
            }
            Chunk::Hole(n) => {
                segments.push(('H', n));
                rebuilt.resize(rebuilt.len() + usize::try_from(n).expect("fits"), 0);
            }
        }
    }
    assert_eq!(
        rebuilt,
        fs::read(&sp_path).expect("read"),
        "data and holes rebuild the file"
    );
    let kinds: Vec<char> = segments.iter().map(|s| s.0).collect();
    assert_eq!(kinds, ['D', 'H', 'D', 'H'], "{segments:?}");
    assert_eq!(segments[1].1 + segments[0].1, 2 * MIB);

    // Sparse upload: data, a hole that punches out existing data, data.
    write_pattern(&path, 0, 3 * MIB as usize, 0x77);
    let before = allocated(&path);
    let mut sink = driver
        .upload(&vol, 0, 0, flags::VOL_UPLOAD_SPARSE_STREAM)
        .expect("upload");
    sink.write(&[0x55; 4096]).expect("data");
    sink.hole(2 * MIB).expect("hole");
    sink.write(&[0x66; 4096]).expect("data");
    sink.finish().expect("finish");
    let data = fs::read(&path).expect("read");
    assert!(data[..4096].iter().all(|b| *b == 0x55));
    assert!(
        data[4096..4096 + 2 * MIB as usize].iter().all(|b| *b == 0),
        "hole reads as zeros"
    );
    let tail = 4096 + 2 * MIB as usize;
    assert!(data[tail..tail + 4096].iter().all(|b| *b == 0x66));
    assert!(
        data[tail + 4096..3 * MIB as usize]
            .iter()
            .all(|b| *b == 0x77),
        "beyond the upload untouched"
    );
    assert!(allocated(&path) + MIB < before, "the hole was deallocated");

    // Through std::io, as the daemon's stream table drives sinks and sources; dropping the sink (the client's
    // finish or abort removes it from the table) refreshes the pool.
    drain(&rx);
    {
        use std::io::{Read, Write};
        let mut sink = driver.upload(&vol, 0, 64, 0).expect("upload");
        sink.write_all(b"via io::Write").expect("write");
        let err = sink.write_all(&[0u8; 64]).expect_err("past the length");
        let inner = err
            .get_ref()
            .and_then(|e| e.downcast_ref::<xen_storage::Error>())
            .expect("storage error inside");
        assert_eq!(inner.code(), code::SYSTEM_ERROR);
        drop(sink);
        assert_eq!(
            drain(&rx),
            [("p".to_string(), PoolEventKind::Refresh)],
            "refresh on drop"
        );
        assert_eq!(&fs::read(&path).expect("read")[..13], b"via io::Write");

        let mut whole = Vec::new();
        driver
            .download(&sp, 0, 0, flags::VOL_DOWNLOAD_SPARSE_STREAM)
            .expect("download")
            .read_to_end(&mut whole)
            .expect("read");
        assert_eq!(
            whole,
            fs::read(&sp_path).expect("read"),
            "holes read as zeros through io::Read"
        );
    }

    // Holes need a sparse stream.
    let mut sink = driver.upload(&vol, 0, 0, 0).expect("upload");
    assert_eq!(
        sink.hole(10).expect_err("not sparse").code(),
        code::OPERATION_INVALID
    );
    sink.abort();
}

#[test]
fn bad_input_gives_libvirt_errors_and_loses_nothing() {
    let s = Scratch::new("bad");
    let driver = s.driver();
    let pool = running_dir_pool(&driver, &s, "p");
    let vol = driver
        .create_volume(&pool, &VolumeDef::new("keep.raw", VolFormat::Raw, MIB), 0)
        .expect("vol");
    let path = s.path("p/keep.raw");
    write_pattern(&path, 0, 16, 0x42);

    // A volume name with a slash.
    let err = driver
        .create_volume(
            &pool,
            &VolumeDef::new("../escape.raw", VolFormat::Raw, MIB),
            0,
        )
        .expect_err("slash");
    assert_eq!((err.code(), err.domain()), (code::OPERATION_INVALID, 18));
    assert_eq!(
        err.to_string(),
        "Requested operation is not valid: volume name '../escape.raw' cannot contain '/'"
    );
    assert!(!s.path("escape.raw").exists());

    // A name that exists, in the pool or on disk only.
    let err = driver
        .create_volume(&pool, &VolumeDef::new("keep.raw", VolFormat::Qcow2, MIB), 0)
        .expect_err("dup");
    assert_eq!(err.code(), code::STORAGE_VOL_EXIST);
    assert_eq!(err.to_string(), "storage volume 'keep.raw' exists already");
    assert_eq!(
        fs::read(&path).expect("read")[..16],
        [0x42; 16],
        "existing volume untouched"
    );
    fs::write(s.path("p/stray"), b"stray").expect("stray");
    let err = driver
        .create_volume(&pool, &VolumeDef::new("stray", VolFormat::Qcow2, MIB), 0)
        .expect_err("on disk");
    assert_eq!(err.code(), code::STORAGE_VOL_EXIST);
    assert_eq!(fs::read(s.path("p/stray")).expect("read"), b"stray");

    // A raw volume cannot have a backing store; a missing backing file is refused.
    let mut bad = VolumeDef::new("b.raw", VolFormat::Raw, MIB);
    bad.backing_store = Some(BackingStore {
        path: path.clone(),
        format: None,
    });
    assert_eq!(
        driver
            .create_volume(&pool, &bad, 0)
            .expect_err("raw backing")
            .code(),
        code::NO_SUPPORT
    );
    let mut bad = VolumeDef::new("b.qcow2", VolFormat::Qcow2, MIB);
    bad.backing_store = Some(BackingStore {
        path: s.path("nope"),
        format: None,
    });
    assert_eq!(
        driver
            .create_volume(&pool, &bad, 0)
            .expect_err("missing backing")
            .code(),
        code::OPERATION_FAILED
    );
    assert!(
        !s.path("p/b.qcow2").exists() && !s.path("p/b.raw").exists(),
        "no leftovers"
    );

    // Upload past the capacity: refused whole, earlier data kept.
    let mut sink = driver
        .upload(&vol, MIB - 4, 0, 0)
        .expect("upload near the end");
    sink.write(b"ok").expect("fits");
    let err = sink.write(b"too long").expect_err("past capacity");
    assert_eq!(err.code(), code::SYSTEM_ERROR);
    assert_eq!(
        err.libvirt_message(),
        "cannot write to stream: No space left on device"
    );
    sink.abort();
    let data = fs::read(&path).expect("read");
    assert_eq!(data.len() as u64, MIB, "file not extended");
    assert_eq!(&data[(MIB - 4) as usize..], b"ok\0\0");
    let mut sink = driver.upload(&vol, 0, 8, 0).expect("upload with length");
    assert_eq!(
        sink.write(&[1; 9]).expect_err("past length").code(),
        code::SYSTEM_ERROR
    );
    sink.abort();
    assert_eq!(
        driver.upload(&vol, MIB + 1, 0, 0).err().map(|e| e.code()),
        Some(code::INVALID_ARG)
    );
    assert_eq!(fs::read(&path).expect("read")[..16], [0x42; 16]);

    // Deleting a non-empty pool: libvirt's system error, nothing removed.
    driver.destroy_pool(&pool).expect("destroy");
    let err = driver.delete_pool(&pool, 0).expect_err("not empty");
    assert_eq!(err.code(), code::SYSTEM_ERROR);
    assert_eq!(
        err.libvirt_message(),
        format!(
            "failed to remove pool '{}': Directory not empty",
            s.path("p").display()
        )
    );
    assert!(path.is_file() && s.path("p/stray").is_file());

    // Operations on an inactive pool and unknown objects.
    let err = driver
        .create_volume(&pool, &VolumeDef::new("x", VolFormat::Raw, 1), 0)
        .expect_err("inactive");
    assert_eq!(
        err.to_string(),
        "Requested operation is not valid: storage pool 'p' is not active"
    );
    assert_eq!(
        driver.list_volumes(&pool).expect_err("inactive").code(),
        code::OPERATION_INVALID
    );
    driver.start_pool(&pool, 0).expect("start again");
    assert_eq!(
        driver
            .lookup_volume_by_name(&pool, "nope")
            .expect_err("unknown")
            .code(),
        code::NO_STORAGE_VOL
    );
    let err = driver
        .lookup_volume_by_key("/no/such/key")
        .expect_err("unknown key");
    assert_eq!(
        err.to_string(),
        "Storage volume not found: no storage vol with matching key /no/such/key"
    );
    let err = driver
        .lookup_volume_by_path("/no/such/path")
        .expect_err("unknown path");
    assert_eq!(
        err.to_string(),
        "Storage volume not found: no storage vol with matching path '/no/such/path'"
    );
    assert_eq!(
        driver.delete_volume(&vol, 1).expect_err("flags").code(),
        code::INVALID_ARG
    );
    assert!(path.is_file());
    assert_eq!(
        driver.build_pool(&pool, 0).expect_err("active").code(),
        code::OPERATION_INVALID
    );
    assert_eq!(
        driver
            .create_pool(PoolDef::dir("n", s.path("n")), 6)
            .expect_err("exclusive flags")
            .code(),
        code::INVALID_ARG
    );
}

#[test]
fn restart_restores_pools_active_state_and_autostart() {
    let s = Scratch::new("restart");
    let (a_uuid, b_uuid);
    {
        let driver = s.driver();
        let a = running_dir_pool(&driver, &s, "a");
        driver
            .create_volume(&a, &VolumeDef::new("v.qcow2", VolFormat::Qcow2, MIB), 0)
            .expect("vol");
        a_uuid = a.uuid;
        let b = driver
            .create_pool(
                PoolDef::dir("b", s.path("b")),
                flags::POOL_CREATE_WITH_BUILD,
            )
            .expect("b");
        b_uuid = b.uuid;
        let c = driver
            .define_pool(PoolDef::dir("c", s.path("c")))
            .expect("c");
        driver.build_pool(&c, 0).expect("build c");
        driver.set_autostart(&c, true).expect("autostart c");
        let d = running_dir_pool(&driver, &s, "d");
        let _ = d;
        let _e = driver
            .define_pool(PoolDef::dir("e", s.path("e")))
            .expect("e");
        // The daemon stops without destroying anything.
    }
    fs::remove_dir(s.path("d")).expect("d's directory disappears while the daemon is down");

    let driver = s.driver();
    let names: Vec<String> = driver
        .list_pools(0)
        .expect("list")
        .into_iter()
        .map(|p| p.name)
        .collect();
    assert_eq!(names, ["a", "c", "d", "e", "b"]);
    let a = driver.lookup_pool_by_name("a").expect("a");
    assert_eq!(a.uuid, a_uuid);
    assert!(driver.is_active(&a).expect("a active"));
    assert_eq!(driver.volume_names(&a).expect("a vols"), ["v.qcow2"]);
    let b = driver
        .lookup_pool_by_name("b")
        .expect("transient b is back");
    assert_eq!(b.uuid, b_uuid);
    assert!(
        driver.is_active(&b).expect("b active") && !driver.is_persistent(&b).expect("b transient")
    );
    let c = driver.lookup_pool_by_name("c").expect("c");
    assert!(driver.is_active(&c).expect("c autostarted"));
    let d = driver.lookup_pool_by_name("d").expect("d");
    assert!(!driver.is_active(&d).expect("d inactive"));
    assert!(
        driver.startup_errors().iter().any(|e| e.contains("'d'")),
        "{:?}",
        driver.startup_errors()
    );
    assert!(!driver
        .is_active(&driver.lookup_pool_by_name("e").expect("e"))
        .expect("e"));
}

#[test]
fn fs_pool_build_and_mount() {
    let s = Scratch::new("fs");
    let driver = s.driver();
    let image = s.path("fs.img");
    fs::File::create(&image)
        .expect("image")
        .set_len(32 * MIB)
        .expect("size");
    let def = PoolDef {
        name: "fsp".into(),
        uuid: None,
        kind: PoolType::Fs,
        target: s.path("mnt"),
        permissions: Default::default(),
        source: PoolSource {
            device: Some(image.clone()),
            format: Some("ext2".into()),
        },
    };
    let pool = driver.define_pool(def).expect("define fs pool");
    assert_schema_valid(
        &s,
        &driver.pool_xml(&pool, 0).expect("fs xml"),
        "storagepool",
    );
    assert!(driver
        .pool_xml(&pool, 0)
        .expect("xml")
        .contains(&format!("<device path='{}'/>", image.display())));
    // Without flags, build only makes the mount point.
    driver.build_pool(&pool, 0).expect("build");
    assert!(s.path("mnt").is_dir());
    let blkid = |p: &std::path::Path| {
        Command::new("blkid")
            .args(["-p", "-o", "value", "-s", "TYPE"])
            .arg(p)
            .output()
            .expect("blkid")
    };
    assert!(!blkid(&image).status.success(), "no file system yet");
    driver
        .build_pool(&pool, flags::POOL_BUILD_NO_OVERWRITE)
        .expect("mkfs on an empty device");
    assert_eq!(
        String::from_utf8_lossy(&blkid(&image).stdout).trim(),
        "ext2"
    );
    let err = driver
        .build_pool(&pool, flags::POOL_BUILD_NO_OVERWRITE)
        .expect_err("already formatted");
    assert_eq!(err.code(), code::STORAGE_POOL_BUILT);
    assert!(
        err.to_string().contains("already formatted using 'ext2'"),
        "{err}"
    );
    let err = driver
        .build_pool(
            &pool,
            flags::POOL_BUILD_OVERWRITE | flags::POOL_BUILD_NO_OVERWRITE,
        )
        .expect_err("exclusive");
    assert_eq!(err.code(), code::INVALID_ARG);

    if !is_root() {
        eprintln!("SKIP: mounting an fs pool needs root");
        return;
    }
    driver.start_pool(&pool, 0).expect("mount");
    let mounts = fs::read_to_string("/proc/self/mounts").expect("mounts");
    assert!(
        mounts.contains(&format!(" {} ext2 ", s.path("mnt").display())),
        "mounted"
    );
    let v = driver
        .create_volume(&pool, &VolumeDef::new("in-fs.raw", VolFormat::Raw, MIB), 0)
        .expect("vol");
    assert!(driver
        .volume_names(&pool)
        .expect("names")
        .contains(&"in-fs.raw".to_string()));
    assert!(
        driver.pool_info(&pool).expect("info").capacity < 32 * MIB,
        "sizes come from the mounted fs"
    );
    // ext2 has no fallocate: preallocation falls back to writing zeros.
    let mut def = VolumeDef::new("alloc.raw", VolFormat::Raw, 4 * MIB);
    def.allocation = Some(2 * MIB);
    let alloc = driver
        .create_volume(&pool, &def, 0)
        .expect("preallocated on ext2");
    assert!(
        allocated(&s.path("mnt/alloc.raw")) >= 2 * MIB,
        "preallocated"
    );
    assert!(driver.volume_info(&alloc).expect("info").allocation >= 2 * MIB);
    driver.destroy_pool(&pool).expect("unmount");
    assert!(!s.path("mnt/in-fs.raw").exists(), "unmounted");
    driver.start_pool(&pool, 0).expect("mount again");
    assert_eq!(
        driver
            .lookup_volume_by_name(&pool, "in-fs.raw")
            .expect("vol back"),
        v
    );
    driver.destroy_pool(&pool).expect("unmount");
}

/// A loop device bound to a file, detached on drop.
struct Loop(String);

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.0]).status();
    }
}

#[test]
fn block_device_volumes() {
    if !is_root() {
        eprintln!("SKIP: loop devices need root");
        return;
    }
    let s = Scratch::new("block");
    let backing = s.path("disk.img");
    fs::write(&backing, vec![0x3C; 2 * MIB as usize]).expect("backing file");
    let out = Command::new("losetup")
        .args(["-f", "--show"])
        .arg(&backing)
        .output()
        .expect("losetup");
    if !out.status.success() {
        eprintln!(
            "SKIP: no loop device: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        return;
    }
    let dev = Loop(String::from_utf8_lossy(&out.stdout).trim().to_string());
    let driver = s.driver();
    let pool = running_dir_pool(&driver, &s, "p");
    let rdev = fs::metadata(&dev.0).expect("stat loop device").rdev();
    let node = s.path("p/blk");
    let made = Command::new("mknod")
        .arg(&node)
        .arg("b")
        .arg(libc::major(rdev).to_string())
        .arg(libc::minor(rdev).to_string())
        .status()
        .expect("mknod");
    assert!(made.success());
    driver.refresh_pool(&pool, 0).expect("refresh");
    let vol = driver
        .lookup_volume_by_name(&pool, "blk")
        .expect("block device is a volume");
    let info = driver.volume_info(&vol).expect("info");
    assert_eq!((info.kind, info.capacity), (VolType::Block, 2 * MIB));
    assert!(driver
        .volume_xml(&vol)
        .expect("xml")
        .starts_with("<volume type='block'>"));

    let mut src = driver.download(&vol, 0, 0, 0).expect("download");
    let mut total = 0u64;
    while let Some(chunk) = src.next_chunk(1 << 20).expect("chunk") {
        let Chunk::Data(d) = chunk else {
            panic!("hole from a non-sparse stream")
        };
        assert!(d.iter().all(|b| *b == 0x3C));
        total += d.len() as u64;
    }
    assert_eq!(total, 2 * MIB, "the whole device is read");
    let mut src = driver
        .download(&vol, 0, 0, flags::VOL_DOWNLOAD_SPARSE_STREAM)
        .expect("sparse download");
    let mut total = 0u64;
    while let Some(chunk) = src.next_chunk(1 << 20).expect("chunk") {
        let Chunk::Data(d) = chunk else {
            panic!("a block device reports no holes")
        };
        total += d.len() as u64;
    }
    assert_eq!(total, 2 * MIB);
    driver
        .wipe_volume(&vol, flags::VOL_WIPE_ALG_ZERO, 0)
        .expect("wipe");
    let _ = Command::new("sync").status();
    let data = fs::read(&dev.0).expect("read device");
    assert_eq!(data.len() as u64, 2 * MIB);
    assert!(data.iter().all(|b| *b == 0), "device zeroed");
    assert_eq!(
        driver
            .resize_volume(&vol, 4 * MIB, 0)
            .expect_err("no resize")
            .code(),
        code::NO_SUPPORT
    );
}
