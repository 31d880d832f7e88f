//! Architecture-specific code behind one neutral facade.

#[cfg(target_arch = "x86_64")]
pub mod x86_64;
#[cfg(target_arch = "x86_64")]
pub use self::x86_64::{exit, phys_slice};
/// The hardware vCPU of this architecture (it implements [`xen_hv::vcpu::Vcpu`]); VMX would slot in here.
#[cfg(target_arch = "x86_64")]
pub type HwVcpu = self::x86_64::svm::SvmVcpu;
