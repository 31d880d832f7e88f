//! The architecture-neutral vCPU interface: common code runs a vCPU through [`Vcpu::run`], matches on the
//! [`Exit`] it returns, and uses the accessors to emulate. SVM (x86_64) and EL2 with stage-2 translation
//! (aarch64) implement it; VMX can follow behind the same trait. The port-I/O, CPUID and MSR exits only occur on
//! x86; the register names are x86's (on aarch64 they index x0..x10).

use crate::paging::WalkError;
use xen_abi::xen::VcpuStart;

/// Why the guest stopped running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// A physical interrupt arrived for the host (timer tick): a preemption point.
    Interrupt,
    /// CPUID with `eax` = leaf, `ecx` = subleaf.
    Cpuid {
        /// Leaf.
        leaf: u32,
        /// Subleaf.
        subleaf: u32,
    },
    /// RDMSR of `msr`.
    MsrRead(u32),
    /// WRMSR of `value` to `msr`.
    MsrWrite(u32, u64),
    /// Port I/O; `next_rip` is where the guest continues.
    Io {
        /// Port.
        port: u16,
        /// Access size in bytes.
        size: u8,
        /// OUT (true) or IN.
        write: bool,
        /// A string or REP instruction.
        string: bool,
        /// The address of the following instruction.
        next_rip: u64,
    },
    /// HLT.
    Halt,
    /// A hypercall instruction (`vmmcall` / `vmcall`, or `hvc #0xEA1` on aarch64).
    Hypercall,
    /// A firmware call: PSCI through `hvc #0` or `smc #0` on aarch64 (function id in x0, arguments x1..x3; the
    /// result goes to x0 through [`Vcpu::set_hypercall_result`]).
    Firmware {
        /// Function identifier.
        function: u64,
        /// Arguments.
        args: [u64; 3],
    },
    /// An inter-processor interrupt the guest sent through its interrupt controller (an SGI through
    /// ICC_SGI1R_EL1 on aarch64) to vCPUs of its domain other than the sender.
    SendIpi {
        /// The interrupt (SGI INTID).
        intid: u8,
        /// Target vCPU indices (bit per vCPU), ignored with `all_but_self`.
        targets: u64,
        /// Every vCPU of the domain except the sender.
        all_but_self: bool,
    },
    /// A guest-physical access that the nested tables do not allow.
    NestedFault {
        /// Guest-physical address.
        gpa: u64,
        /// Fault error code bits (write, fetch, ...).
        code: u64,
    },
    /// The guest triple-faulted.
    TripleFault,
    /// An instruction the guest may not use (nested virtualization, XSETBV, ...): inject #UD.
    Forbidden(&'static str),
    /// The hardware refused the guest state.
    InvalidState,
    /// An exit this hypervisor does not handle.
    Unhandled(u64),
}

/// General-purpose register names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
pub enum Reg {
    /// rax.
    Rax = 0,
    /// rbx.
    Rbx,
    /// rcx.
    Rcx,
    /// rdx.
    Rdx,
    /// rsi.
    Rsi,
    /// rdi.
    Rdi,
    /// rbp.
    Rbp,
    /// r8.
    R8,
    /// r9.
    R9,
    /// r10.
    R10,
    /// r11.
    R11,
}

/// A hardware-virtualized vCPU.
pub trait Vcpu {
    /// Enters the guest until the next exit.
    fn run(&mut self) -> Exit;
    /// Reads a register.
    fn reg(&self, r: Reg) -> u64;
    /// Writes a register.
    fn set_reg(&mut self, r: Reg, v: u64);
    /// The instruction pointer.
    fn rip(&self) -> u64;
    /// Sets the instruction pointer.
    fn set_rip(&mut self, rip: u64);
    /// Moves the instruction pointer past the instruction that caused the last exit (its length is known from
    /// the exit kind, since hardware without next-RIP support does not say).
    fn skip_instruction(&mut self, exit: &Exit);
    /// Makes the guest take an undefined-instruction exception (#UD, or an Unknown-reason synchronous exception
    /// on aarch64) instead of the instruction that exited.
    fn inject_undefined(&mut self);
    /// Queues a hardware exception for the next entry.
    fn inject_exception(&mut self, vector: u8, error_code: Option<u32>);
    /// Translates guest-virtual `gva` to guest-physical through the guest's own translation; `read` reads 8
    /// bytes of guest-physical memory (through the nested/stage-2 tables) for software walks.
    fn guest_to_gpa(
        &self,
        gva: u64,
        write: bool,
        read: &dyn Fn(u64) -> Option<u64>,
    ) -> Result<u64, WalkError>;
    /// The hypercall number and its five arguments, in the guest's register convention.
    fn hypercall_args(&self) -> (u64, [u64; 5]);
    /// Stores a hypercall's return value where the guest's convention expects it.
    fn set_hypercall_result(&mut self, v: u64);
    /// True when the guest runs 64-bit code (selects the hypercall register convention).
    fn long_mode(&self) -> bool;
    /// Reads an MSR kept in the vCPU's hardware state (EFER, PAT); `None` for others.
    fn read_state_msr(&self, msr: u32) -> Option<u64>;
    /// Writes such an MSR, false when the value is invalid.
    fn write_state_msr(&mut self, msr: u32, v: u64) -> bool;
    /// Resets the vCPU to start at `entry` with `arg` as its boot argument, in the architecture's firmware
    /// boot state (PSCI `CPU_ON` on aarch64: EL1h, MMU off, x0 = `arg`); false where vCPUs are not started
    /// that way (x86 uses [`Vcpu::start_from`]).
    fn start_at(&mut self, entry: u64, arg: u64) -> bool;
    /// Replaces the start state with a `VCPUOP_initialise` context; false when it is not acceptable.
    fn start_from(&mut self, start: &VcpuStart) -> bool;
    /// When the vCPU's own architectural timer (the aarch64 virtual timer) fires next, in system time, if it is
    /// armed: a blocked vCPU must wake then. `None` on x86, whose guests wait on Xen timers only.
    fn timer_deadline(&self) -> Option<u64>;
    /// Queues an upcall interrupt with `vector`, delivered when the guest enables interrupts.
    fn queue_upcall(&mut self, vector: u8);
    /// True while an interrupt queued with [`Vcpu::queue_upcall`] has not been taken by the guest yet.
    fn upcall_queued(&self) -> bool;
    /// Drops the guest's cached translations before the next entry.
    fn flush_guest_tlb(&mut self);
    /// Loads the guest's FPU/SIMD state into the CPU (start of a time slice).
    fn load_guest_fpu(&mut self);
    /// Saves the guest's FPU/SIMD state (end of a time slice).
    fn save_guest_fpu(&mut self);
    /// The physical frame holding the hardware vCPU state (VMCB / VMCS), to free with the vCPU.
    fn state_frame(&self) -> u64;
    /// The processor state as Xen's HVM `CPU` save record (`XEN_DOMCTL_gethvmcontext`); `None` where the
    /// architecture has no such record. The vCPU must not be running.
    fn save_hvm_cpu(&self) -> Option<xen_abi::hvmsave::HvmHwCpu> {
        None
    }
    /// Loads a `CPU` save record (`XEN_DOMCTL_sethvmcontext`); false when the state is not one this hypervisor
    /// can run (nothing changed then).
    fn load_hvm_cpu(&mut self, _c: &xen_abi::hvmsave::HvmHwCpu) -> bool {
        false
    }
}

/// The instruction length of exits whose instruction has a fixed encoding.
pub fn fixed_length(exit: &Exit) -> u64 {
    match exit {
        Exit::Hypercall => 3,
        Exit::Cpuid { .. } | Exit::MsrRead(_) | Exit::MsrWrite(..) => 2,
        Exit::Halt => 1,
        _ => 0,
    }
}

/// Hypercall number and arguments from the x86 register convention of the guest's mode.
pub fn x86_hypercall_args<V: Vcpu + ?Sized>(v: &V) -> (u64, [u64; 5]) {
    if v.long_mode() {
        (
            v.reg(Reg::Rax),
            [
                v.reg(Reg::Rdi),
                v.reg(Reg::Rsi),
                v.reg(Reg::Rdx),
                v.reg(Reg::R10),
                v.reg(Reg::R8),
            ],
        )
    } else {
        let lo = |r| v.reg(r) & 0xffff_ffff;
        (
            lo(Reg::Rax),
            [
                lo(Reg::Rbx),
                lo(Reg::Rcx),
                lo(Reg::Rdx),
                lo(Reg::Rsi),
                lo(Reg::Rdi),
            ],
        )
    }
}
