//! The Arm Power State Coordination Interface (PSCI 1.0, DEN0022) as a guest sees it: function identifiers
//! decoded into calls, and the return codes. Arm guests start and stop vCPUs and the system through it
//! (`hvc #0` or `smc #0`, function id in x0, arguments x1..x3, result in x0), as under Xen's virtual PSCI.

/// `PSCI_VERSION`.
pub const VERSION: u64 = 0x8400_0000;
/// `CPU_OFF`.
pub const CPU_OFF: u64 = 0x8400_0002;
/// `CPU_ON`, SMC32 convention.
pub const CPU_ON_32: u64 = 0x8400_0003;
/// `CPU_ON`, SMC64 convention.
pub const CPU_ON_64: u64 = 0xc400_0003;
/// `AFFINITY_INFO`, SMC32.
pub const AFFINITY_INFO_32: u64 = 0x8400_0004;
/// `AFFINITY_INFO`, SMC64.
pub const AFFINITY_INFO_64: u64 = 0xc400_0004;
/// `MIGRATE_INFO_TYPE`.
pub const MIGRATE_INFO_TYPE: u64 = 0x8400_0006;
/// `SYSTEM_OFF`.
pub const SYSTEM_OFF: u64 = 0x8400_0008;
/// `SYSTEM_RESET`.
pub const SYSTEM_RESET: u64 = 0x8400_0009;
/// `PSCI_FEATURES`.
pub const FEATURES: u64 = 0x8400_000a;

/// The version reported: 1.0.
pub const VERSION_1_0: u64 = 0x1_0000;
/// Return code: success.
pub const SUCCESS: i64 = 0;
/// Return code: not supported.
pub const NOT_SUPPORTED: i64 = -1;
/// Return code: invalid parameters.
pub const INVALID_PARAMETERS: i64 = -2;
/// Return code: the target vCPU is already on.
pub const ALREADY_ON: i64 = -4;
/// Return code: internal failure.
pub const INTERNAL_FAILURE: i64 = -6;
/// `MIGRATE_INFO_TYPE`: no trusted OS needs migrating.
pub const MIGRATE_NOT_REQUIRED: i64 = 2;
/// `AFFINITY_INFO`: on.
pub const AFFINITY_ON: i64 = 0;
/// `AFFINITY_INFO`: off.
pub const AFFINITY_OFF: i64 = 1;

/// A decoded PSCI call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    /// `PSCI_VERSION`.
    Version,
    /// `CPU_ON`: start vCPU `target` (an MPIDR) at `entry` with x0 = `context`.
    CpuOn {
        /// Target MPIDR.
        target: u64,
        /// Entry point.
        entry: u64,
        /// x0 at entry.
        context: u64,
    },
    /// `CPU_OFF` of the caller.
    CpuOff,
    /// `AFFINITY_INFO` of `target` at affinity `level`.
    AffinityInfo {
        /// Target MPIDR.
        target: u64,
        /// Lowest affinity level.
        level: u64,
    },
    /// `MIGRATE_INFO_TYPE`.
    MigrateInfoType,
    /// `SYSTEM_OFF`.
    SystemOff,
    /// `SYSTEM_RESET`.
    SystemReset,
    /// `PSCI_FEATURES` of a function id.
    Features(u64),
    /// Anything else (answered with [`NOT_SUPPORTED`]).
    Unknown(u64),
}

/// Decodes function `fid` with arguments x1..x3; SMC32 calls see only the low 32 bits of their arguments.
pub fn decode(fid: u64, args: [u64; 3]) -> Call {
    let fid = fid & 0xffff_ffff;
    let a32 = args.map(|a| a & 0xffff_ffff);
    match fid {
        VERSION => Call::Version,
        CPU_OFF => Call::CpuOff,
        CPU_ON_32 => Call::CpuOn {
            target: a32[0],
            entry: a32[1],
            context: a32[2],
        },
        CPU_ON_64 => Call::CpuOn {
            target: args[0],
            entry: args[1],
            context: args[2],
        },
        AFFINITY_INFO_32 => Call::AffinityInfo {
            target: a32[0],
            level: a32[1],
        },
        AFFINITY_INFO_64 => Call::AffinityInfo {
            target: args[0],
            level: args[1],
        },
        MIGRATE_INFO_TYPE => Call::MigrateInfoType,
        SYSTEM_OFF => Call::SystemOff,
        SYSTEM_RESET => Call::SystemReset,
        FEATURES => Call::Features(args[0] & 0xffff_ffff),
        other => Call::Unknown(other),
    }
}

/// True for the functions [`decode`] understands (what `PSCI_FEATURES` reports as present).
pub fn supported(fid: u64) -> bool {
    !matches!(decode(fid, [0; 3]), Call::Unknown(_))
}

/// The vCPU index an MPIDR names (Aff0; higher affinity levels must be 0), `None` otherwise.
pub fn vcpu_of(mpidr: u64) -> Option<u32> {
    (mpidr & 0xff_ffff_ff00 == 0).then_some((mpidr & 0xff) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_calls() {
        assert_eq!(decode(VERSION, [9; 3]), Call::Version);
        assert_eq!(
            decode(CPU_ON_64, [1, 0x4008_0000, 7]),
            Call::CpuOn {
                target: 1,
                entry: 0x4008_0000,
                context: 7
            }
        );
        assert_eq!(
            decode(CPU_ON_32, [1 << 32 | 2, 0x1_4008_0000, 3]),
            Call::CpuOn {
                target: 2,
                entry: 0x4008_0000,
                context: 3
            }
        );
        assert_eq!(
            decode(AFFINITY_INFO_64, [1, 0, 0]),
            Call::AffinityInfo {
                target: 1,
                level: 0
            }
        );
        assert_eq!(decode(SYSTEM_OFF, [0; 3]), Call::SystemOff);
        assert_eq!(
            decode(FEATURES, [CPU_ON_64, 0, 0]),
            Call::Features(CPU_ON_64)
        );
        assert_eq!(decode(0xc400_0001, [0; 3]), Call::Unknown(0xc400_0001));
        assert!(supported(CPU_ON_64) && supported(SYSTEM_RESET));
        assert!(!supported(0x8400_0001));
        assert_eq!(vcpu_of(2), Some(2));
        assert_eq!(vcpu_of(1 << 8), None);
        assert_eq!(vcpu_of(1 << 31 | 1), None);
    }
}
