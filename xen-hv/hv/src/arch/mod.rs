//! Architecture-specific code behind one neutral facade: every architecture module exports the same names
//! (`HwVcpu`, `DomainHw`, `new_vcpu`, `plan_domain` / `write_domain`, `NESTED_FORMAT`, `GUEST_RAM_BASE`,
//! `now_ns`, `cpu_index`, `cpu_ticks`, `idle`, `time_info`, `exit`, ...) and the common code (`vm.rs`) uses
//! only those.

#[cfg(target_arch = "aarch64")]
pub mod aarch64;
#[cfg(target_arch = "x86_64")]
pub mod x86_64;
#[cfg(target_arch = "aarch64")]
pub use self::aarch64::*;
#[cfg(target_arch = "x86_64")]
pub use self::x86_64::*;
