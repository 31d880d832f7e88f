//! virsh's save-image and managed-save commands against the `virtxend` binary with no hypervisor attached: where
//! managed-save images are looked for (`save` beside the snapshot directory, or `--save-dir`), what a domain with
//! one allows, and the clean failures of everything that needs the hypervisor. Saving and restoring running
//! guests is covered by libvirt-driver's tests over a test backend and by the hypervisor end-to-end tests.

use e2e::virtxend::{pv_guest_xml, Daemon};

/// A file that is no save image, where the daemon looks for `dom`'s managed-save image.
fn plant_image(dir: &std::path::Path, dom: &str) -> std::path::PathBuf {
    std::fs::create_dir_all(dir).expect("creating the save directory");
    let p = dir.join(format!("{dom}.save"));
    std::fs::write(&p, "not a save image\n".repeat(10)).expect("writing an image");
    p
}

#[test]
fn managed_save_images_beside_the_snapshot_directory() {
    let d = Daemon::start_with("virsh-managed-save", &["--hypervisor", "none"], &[]);
    let f = d.write("g.xml", &pv_guest_xml("ms1"));
    d.virsh_ok(&["define", f.to_str().unwrap()]);
    assert!(d
        .virsh_ok(&["dominfo", "ms1"])
        .contains("Managed save:   no"));

    // Nothing runs, so there is nothing to save.
    let err = d.virsh_err(&["managedsave", "ms1"]);
    assert!(err.contains("domain is not running"), "{err}");
    let err = d.virsh_err(&["save", "ms1", d.dir.join("x.save").to_str().unwrap()]);
    assert!(err.contains("domain is not running"), "{err}");

    // The harness passes --snapshot-dir DIR/snapshot: images are found in DIR/save.
    let image = plant_image(&d.dir.join("save"), "ms1");
    assert!(d
        .virsh_ok(&["dominfo", "ms1"])
        .contains("Managed save:   yes"));
    assert!(d
        .virsh_ok(&["list", "--all", "--with-managed-save", "--name"])
        .contains("ms1"));
    assert!(!d
        .virsh_ok(&["list", "--all", "--without-managed-save", "--name"])
        .contains("ms1"));
    let list = d.virsh_ok(&["list", "--all", "--managed-save"]);
    assert!(
        list.lines()
            .any(|l| l.contains("ms1") && l.trim_end().ends_with("saved")),
        "{list}"
    );
    let err = d.virsh_err(&["managedsave-dumpxml", "ms1"]);
    assert!(err.contains("image magic is incorrect"), "{err}");
    let err = d.virsh_err(&["undefine", "ms1"]);
    assert!(
        err.contains("Refusing to undefine while domain managed save image exists"),
        "{err}"
    );
    // Starting from the image needs a hypervisor that can restore memory: refused, the image kept.
    let err = d.virsh_err(&["start", "ms1"]);
    assert!(err.contains("Operation not supported"), "{err}");
    assert!(image.exists());
    // --force-boot discards the image, then fails honestly for want of a hypervisor.
    let err = d.virsh_err(&["start", "ms1", "--force-boot"]);
    assert!(err.contains("no hypervisor connection"), "{err}");
    assert!(!image.exists());

    plant_image(&d.dir.join("save"), "ms1");
    let out = d.virsh_ok(&["managedsave-remove", "ms1"]);
    assert!(
        out.contains("Removed managedsave image for domain 'ms1'"),
        "{out}"
    );
    let image = plant_image(&d.dir.join("save"), "ms1");
    d.virsh_ok(&["undefine", "ms1", "--managed-save"]);
    assert!(!image.exists());
    assert!(d.virsh_ok(&["list", "--all", "--name"]).trim().is_empty());

    // Restoring needs the hypervisor too; reading an image's XML does not (and says what is wrong with it).
    let garbage = d.write("garbage.save", &"x".repeat(100));
    let err = d.virsh_err(&["restore", garbage.to_str().unwrap()]);
    assert!(err.contains("Operation not supported"), "{err}");
    let err = d.virsh_err(&["save-image-dumpxml", garbage.to_str().unwrap()]);
    assert!(err.contains("image magic is incorrect"), "{err}");
    let err = d.virsh_err(&[
        "save-image-dumpxml",
        d.dir.join("missing").to_str().unwrap(),
    ]);
    assert!(err.contains("No such file or directory"), "{err}");
}

#[test]
fn save_dir_option_places_managed_save_images() {
    let dir = std::env::temp_dir().join(format!("virtxend-save-dir-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let d = Daemon::start_with(
        "virsh-save-dir",
        &["--hypervisor", "none", "--save-dir", dir.to_str().unwrap()],
        &[],
    );
    let f = d.write("g.xml", &pv_guest_xml("sd1"));
    d.virsh_ok(&["define", f.to_str().unwrap()]);
    plant_image(&d.dir.join("save"), "sd1");
    assert!(d
        .virsh_ok(&["dominfo", "sd1"])
        .contains("Managed save:   no"));
    plant_image(&dir, "sd1");
    assert!(d
        .virsh_ok(&["dominfo", "sd1"])
        .contains("Managed save:   yes"));
    d.virsh_ok(&["managedsave-remove", "sd1"]);
    assert!(!dir.join("sd1.save").exists());
    let _ = std::fs::remove_dir_all(&dir);
}
