//! Hypercall numbers (`xen/include/public/xen.h`) and the sub-operation codes the project implements.

/// `__HYPERVISOR_memory_op`.
pub const MEMORY_OP: u64 = 12;
/// `__HYPERVISOR_set_timer_op`.
pub const SET_TIMER_OP: u64 = 15;
/// `__HYPERVISOR_xen_version`.
pub const XEN_VERSION: u64 = 17;
/// `__HYPERVISOR_console_io`.
pub const CONSOLE_IO: u64 = 18;
/// `__HYPERVISOR_grant_table_op`.
pub const GRANT_TABLE_OP: u64 = 20;
/// `__HYPERVISOR_vm_assist`.
pub const VM_ASSIST: u64 = 21;
/// `__HYPERVISOR_vcpu_op`.
pub const VCPU_OP: u64 = 24;
/// `__HYPERVISOR_sched_op`.
pub const SCHED_OP: u64 = 29;
/// `__HYPERVISOR_event_channel_op`.
pub const EVENT_CHANNEL_OP: u64 = 32;
/// `__HYPERVISOR_hvm_op`.
pub const HVM_OP: u64 = 34;
/// `__HYPERVISOR_sysctl`.
pub const SYSCTL: u64 = 35;
/// `__HYPERVISOR_domctl`.
pub const DOMCTL: u64 = 36;

/// `console_io` sub-operations.
pub mod consoleio {
    /// `CONSOLEIO_write`.
    pub const WRITE: u64 = 0;
    /// `CONSOLEIO_read`.
    pub const READ: u64 = 1;
}

/// `sched_op` sub-operations and shutdown reasons.
pub mod schedop {
    /// `SCHEDOP_yield`.
    pub const YIELD: u64 = 0;
    /// `SCHEDOP_block`.
    pub const BLOCK: u64 = 1;
    /// `SCHEDOP_shutdown`.
    pub const SHUTDOWN: u64 = 2;
    /// `SHUTDOWN_poweroff`.
    pub const SHUTDOWN_POWEROFF: u32 = 0;
    /// `SHUTDOWN_reboot`.
    pub const SHUTDOWN_REBOOT: u32 = 1;
    /// `SHUTDOWN_suspend`.
    pub const SHUTDOWN_SUSPEND: u32 = 2;
    /// `SHUTDOWN_crash`.
    pub const SHUTDOWN_CRASH: u32 = 3;
    /// `SHUTDOWN_watchdog`.
    pub const SHUTDOWN_WATCHDOG: u32 = 4;
}

/// `xen_version` sub-operations.
pub mod xenver {
    /// `XENVER_version`: returns `major << 16 | minor`.
    pub const VERSION: u64 = 0;
    /// `XENVER_extraversion`.
    pub const EXTRAVERSION: u64 = 1;
    /// `XENVER_compile_info`.
    pub const COMPILE_INFO: u64 = 2;
    /// `XENVER_capabilities`.
    pub const CAPABILITIES: u64 = 3;
    /// `XENVER_changeset`.
    pub const CHANGESET: u64 = 4;
    /// `XENVER_platform_parameters`.
    pub const PLATFORM_PARAMETERS: u64 = 5;
    /// `XENVER_get_features`.
    pub const GET_FEATURES: u64 = 6;
    /// `XENVER_pagesize`.
    pub const PAGESIZE: u64 = 7;
    /// `XENVER_guest_handle`.
    pub const GUEST_HANDLE: u64 = 8;
    /// `XENVER_commandline`.
    pub const COMMANDLINE: u64 = 9;
}
