//! Plain definitions the driver works on. The daemon's XML layer (`domain_xml::storage`) converts its pool and
//! volume models to and from these.

use std::path::PathBuf;

use uuid::Uuid;

/// Default mode of a pool's target directory (libvirt's `VIR_STORAGE_DEFAULT_POOL_PERM_MODE`).
pub const DEFAULT_POOL_MODE: u32 = 0o711;
/// Default mode of a new volume (libvirt's `VIR_STORAGE_DEFAULT_VOL_PERM_MODE`).
pub const DEFAULT_VOL_MODE: u32 = 0o600;

/// The pool types this backend serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolType {
    /// A directory on an existing file system (`<pool type='dir'>`).
    Dir,
    /// A block device (or image file) with a file system that is mounted on the target (`<pool type='fs'>`).
    Fs,
}

impl PoolType {
    /// The XML name (`dir`, `fs`).
    pub fn as_str(self) -> &'static str {
        match self {
            PoolType::Dir => "dir",
            PoolType::Fs => "fs",
        }
    }

    /// Parses the XML name.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "dir" => Some(PoolType::Dir),
            "fs" => Some(PoolType::Fs),
            _ => None,
        }
    }

    /// The `VIR_CONNECT_LIST_STORAGE_POOLS_<TYPE>` bit of this type.
    pub fn list_flag(self) -> u32 {
        match self {
            PoolType::Dir => crate::flags::LIST_POOLS_DIR,
            PoolType::Fs => crate::flags::LIST_POOLS_FS,
        }
    }
}

/// `<permissions>`: mode, owner and group; `None` leaves the value as the system makes it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Permissions {
    /// File mode bits (`<mode>`, octal in XML).
    pub mode: Option<u32>,
    /// Owner uid (`<owner>`).
    pub owner: Option<u32>,
    /// Group gid (`<group>`).
    pub group: Option<u32>,
}

/// `<source>` of an fs pool.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PoolSource {
    /// `<device path='...'/>`: the block device (or image file) holding the file system.
    pub device: Option<PathBuf>,
    /// `<format type='...'/>`: the file system type (`ext4`, `xfs`, ...); `auto` or absent lets mount probe.
    pub format: Option<String>,
}

/// A pool definition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolDef {
    /// The pool's name: unique, no `/`.
    pub name: String,
    /// The pool's UUID; `None` on input makes the driver generate one.
    pub uuid: Option<Uuid>,
    /// Pool type.
    pub kind: PoolType,
    /// `<target><path>`: the directory that holds the volumes (for fs: the mount point).
    pub target: PathBuf,
    /// `<target><permissions>` used when building the target directory.
    pub permissions: Permissions,
    /// `<source>` (fs pools).
    pub source: PoolSource,
}

impl PoolDef {
    /// A dir pool definition with a generated UUID and default permissions.
    pub fn dir(name: &str, target: impl Into<PathBuf>) -> Self {
        PoolDef {
            name: name.to_string(),
            uuid: None,
            kind: PoolType::Dir,
            target: target.into(),
            permissions: Permissions::default(),
            source: PoolSource::default(),
        }
    }
}

/// Pool states (`virStoragePoolState`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i32)]
pub enum PoolState {
    /// Not running.
    Inactive = 0,
    /// Being built.
    Building = 1,
    /// Running.
    Running = 2,
    /// Running but degraded.
    Degraded = 3,
    /// Running but not accessible.
    Inaccessible = 4,
}

/// `virStoragePoolInfo`: what `virsh pool-info` shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolInfo {
    /// Current state.
    pub state: PoolState,
    /// Bytes in the file system holding the target (0 while inactive).
    pub capacity: u64,
    /// Bytes used in that file system.
    pub allocation: u64,
    /// Bytes available to unprivileged users.
    pub available: u64,
}

/// The identity of a pool as the RPC layer carries it (`remote_nonnull_storage_pool`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PoolRef {
    /// Pool name.
    pub name: String,
    /// Pool UUID.
    pub uuid: Uuid,
}

/// The identity of a volume as the RPC layer carries it (`remote_nonnull_storage_vol`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct VolRef {
    /// Name of the pool holding the volume.
    pub pool: String,
    /// Volume name (file name in the pool's target directory).
    pub name: String,
    /// Volume key: its path, for dir and fs pools.
    pub key: String,
}

/// Volume formats the backend creates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VolFormat {
    /// A plain (sparse) file.
    Raw,
    /// A qcow2 image made by `qemu-img create`.
    Qcow2,
}

impl VolFormat {
    /// The format's name as qemu-img and libvirt spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            VolFormat::Raw => "raw",
            VolFormat::Qcow2 => "qcow2",
        }
    }

    /// Parses a format name.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "raw" => Some(VolFormat::Raw),
            "qcow2" => Some(VolFormat::Qcow2),
            _ => None,
        }
    }
}

/// `<backingStore>` of a new volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackingStore {
    /// Path of the backing image.
    pub path: PathBuf,
    /// Its format; `None` makes the driver probe it with qemu-img.
    pub format: Option<VolFormat>,
}

/// A volume definition for create and create-from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeDef {
    /// File name in the pool; no `/`.
    pub name: String,
    /// Capacity (virtual size) in bytes.
    pub capacity: u64,
    /// Bytes to allocate up front (raw: preallocated with fallocate); `None` means sparse.
    pub allocation: Option<u64>,
    /// Format.
    pub format: VolFormat,
    /// Backing image (qcow2 only).
    pub backing_store: Option<BackingStore>,
    /// Mode/owner/group of the new file.
    pub permissions: Permissions,
    /// qcow2 `<compat>` (`0.10` or `1.1`); libvirt's default for qcow2 is `1.1`.
    pub compat: Option<String>,
    /// qcow2 `<features><lazy_refcounts/>`.
    pub lazy_refcounts: bool,
    /// qcow2 `<clusterSize>` in bytes (`cluster_size=` for qemu-img).
    pub cluster_size: Option<u64>,
    /// qcow2 `<features><extended_l2/>` (subcluster allocation).
    pub extended_l2: bool,
}

impl VolumeDef {
    /// A sparse volume of the given format and capacity with default permissions.
    pub fn new(name: &str, format: VolFormat, capacity: u64) -> Self {
        VolumeDef {
            name: name.to_string(),
            capacity,
            allocation: None,
            format,
            backing_store: None,
            permissions: Permissions::default(),
            compat: None,
            lazy_refcounts: false,
            cluster_size: None,
            extended_l2: false,
        }
    }
}

/// Volume types (`virStorageVolType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i32)]
pub enum VolType {
    /// A regular file.
    File = 0,
    /// A block device.
    Block = 1,
}

impl VolType {
    /// The XML name.
    pub fn as_str(self) -> &'static str {
        match self {
            VolType::File => "file",
            VolType::Block => "block",
        }
    }
}

/// `virStorageVolInfo`: what `virsh vol-info` shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VolInfo {
    /// Volume type.
    pub kind: VolType,
    /// Capacity (virtual size) in bytes.
    pub capacity: u64,
    /// Bytes allocated on disk.
    pub allocation: u64,
}

/// A time stamp with nanoseconds, as `<timestamps>` shows it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Timestamp {
    /// Seconds since the epoch.
    pub sec: i64,
    /// Nanoseconds.
    pub nsec: i64,
}

/// The backing image of an existing volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeBacking {
    /// Path as stored in the image.
    pub path: String,
    /// Format as stored in the image, if any.
    pub format: Option<String>,
}

/// Everything known about an existing volume, from `stat` and `qemu-img info`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Volume {
    /// Name in the pool.
    pub name: String,
    /// Key (the path).
    pub key: String,
    /// Absolute path.
    pub path: PathBuf,
    /// File or block device.
    pub kind: VolType,
    /// Virtual size in bytes.
    pub capacity: u64,
    /// Bytes allocated on disk.
    pub allocation: u64,
    /// Size of the file (or device) in bytes.
    pub physical: u64,
    /// Format as qemu-img names it (`raw`, `qcow2`, `vmdk`, ...).
    pub format: String,
    /// Backing image, if any.
    pub backing_store: Option<VolumeBacking>,
    /// Mode, owner and group of the file.
    pub permissions: Permissions,
    /// Access time.
    pub atime: Timestamp,
    /// Modification time.
    pub mtime: Timestamp,
    /// Change time.
    pub ctime: Timestamp,
    /// qcow2 compat level.
    pub compat: Option<String>,
    /// qcow2 cluster size.
    pub cluster_size: Option<u64>,
    /// qcow2 lazy refcounts feature.
    pub lazy_refcounts: bool,
    /// qcow2 extended L2 entries feature.
    pub extended_l2: bool,
}

impl Volume {
    /// The volume's identity in the pool named `pool`.
    pub fn vol_ref(&self, pool: &str) -> VolRef {
        VolRef {
            pool: pool.to_string(),
            name: self.name.clone(),
            key: self.key.clone(),
        }
    }

    /// `virStorageVolInfo` of this volume.
    pub fn info(&self) -> VolInfo {
        VolInfo {
            kind: self.kind,
            capacity: self.capacity,
            allocation: self.allocation,
        }
    }
}
