//! Xen error numbers (`xen/include/public/errno.h`). Hypercalls return them negated.

/// A Xen errno value; hypercalls return `-(value)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i32)]
pub enum Errno {
    /// Operation not permitted.
    Eperm = 1,
    /// No such file or directory.
    Enoent = 2,
    /// No such process.
    Esrch = 3,
    /// I/O error.
    Eio = 5,
    /// Argument list too long.
    E2big = 7,
    /// Try again.
    Eagain = 11,
    /// Out of memory.
    Enomem = 12,
    /// Permission denied.
    Eacces = 13,
    /// Bad address.
    Efault = 14,
    /// Device or resource busy.
    Ebusy = 16,
    /// Object exists.
    Eexist = 17,
    /// No such device.
    Enodev = 19,
    /// Invalid argument.
    Einval = 22,
    /// No space left on device.
    Enospc = 28,
    /// Math result not representable.
    Erange = 34,
    /// Function not implemented.
    Enosys = 38,
    /// No buffer space available.
    Enobufs = 105,
    /// Operation not supported.
    Eopnotsupp = 95,
}

impl Errno {
    /// The value a hypercall returns in `rax` for this error: the negated errno, sign-extended.
    pub const fn to_ret(self) -> u64 {
        (-(self as i64)) as u64
    }

    /// Decodes a hypercall return value; `None` when it is not a negative errno this crate knows.
    pub const fn from_ret(ret: i64) -> Option<Self> {
        Some(match -ret {
            1 => Self::Eperm,
            2 => Self::Enoent,
            3 => Self::Esrch,
            5 => Self::Eio,
            7 => Self::E2big,
            11 => Self::Eagain,
            12 => Self::Enomem,
            13 => Self::Eacces,
            14 => Self::Efault,
            16 => Self::Ebusy,
            17 => Self::Eexist,
            19 => Self::Enodev,
            22 => Self::Einval,
            28 => Self::Enospc,
            34 => Self::Erange,
            38 => Self::Enosys,
            95 => Self::Eopnotsupp,
            105 => Self::Enobufs,
            _ => return None,
        })
    }

    /// The symbolic name, as Xen's headers spell it.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Eperm => "EPERM",
            Self::Enoent => "ENOENT",
            Self::Esrch => "ESRCH",
            Self::Eio => "EIO",
            Self::E2big => "E2BIG",
            Self::Eagain => "EAGAIN",
            Self::Enomem => "ENOMEM",
            Self::Eacces => "EACCES",
            Self::Efault => "EFAULT",
            Self::Ebusy => "EBUSY",
            Self::Eexist => "EEXIST",
            Self::Enodev => "ENODEV",
            Self::Einval => "EINVAL",
            Self::Enospc => "ENOSPC",
            Self::Erange => "ERANGE",
            Self::Enosys => "ENOSYS",
            Self::Eopnotsupp => "EOPNOTSUPP",
            Self::Enobufs => "ENOBUFS",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn return_values_round_trip() {
        for e in [Errno::Eperm, Errno::Efault, Errno::Einval, Errno::Enosys] {
            let ret = e.to_ret() as i64;
            assert!(ret < 0);
            assert_eq!(Errno::from_ret(ret), Some(e));
        }
        assert_eq!(Errno::Enosys.to_ret(), (-38i64) as u64);
        assert_eq!(Errno::from_ret(0), None);
    }
}
