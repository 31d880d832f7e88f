//! Links the bare-metal guests with their architecture's linker script and keeps the entry; host builds need
//! nothing.

fn main() {
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    println!("cargo:rerun-if-changed=link.ld");
    println!("cargo:rerun-if-changed=link-aarch64.ld");
    if os == "none" {
        let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
        if arch == "aarch64" {
            println!("cargo:rustc-link-arg-bins=-T{dir}/link-aarch64.ld");
            println!("cargo:rustc-link-arg-bins=-uguest_entry");
        } else {
            println!("cargo:rustc-link-arg-bins=-T{dir}/link.ld");
            println!("cargo:rustc-link-arg-bins=-upvh_entry");
        }
        println!("cargo:rustc-link-arg-bins=--no-dynamic-linker");
        println!("cargo:rustc-link-arg-bins=-z");
        println!("cargo:rustc-link-arg-bins=max-page-size=4096");
    }
}
