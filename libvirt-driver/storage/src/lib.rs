//! The storage backend of virtxend: `dir` and `fs` storage pools and their volumes, served by the daemon itself
//! (clients of virtxend talk to no other daemon). The behaviour follows libvirt's storage driver
//! (`storage_driver.c`, `storage_backend_fs.c`, `storage_util.c`); volumes are made and inspected with
//! `qemu-img`, as libvirt does.
//!
//! # Entry point
//!
//! [`StorageDriver::open`]`(config_dir, state_dir)` loads persistent pools from `<config_dir>/storage/*.xml`
//! (autostart links in `<config_dir>/storage/autostart/`), restores the pools that were active
//! (`<state_dir>/storage/*.xml`), and starts autostart pools. The driver is `Clone + Send + Sync`.
//!
//! # API map (libvirt call → method)
//!
//! | libvirt | method |
//! |---|---|
//! | `virStoragePoolDefineXML` / `CreateXML` | [`StorageDriver::define_pool`] / [`StorageDriver::create_pool`] |
//! | `virStoragePoolCreate` / `Build` / `Refresh` | [`StorageDriver::start_pool`] / [`StorageDriver::build_pool`] / [`StorageDriver::refresh_pool`] |
//! | `virStoragePoolDestroy` / `Delete` / `Undefine` | [`StorageDriver::destroy_pool`] / [`StorageDriver::delete_pool`] / [`StorageDriver::undefine_pool`] |
//! | `virStoragePoolGet/SetAutostart` | [`StorageDriver::autostart_of`] / [`StorageDriver::set_autostart`] |
//! | `virStoragePoolGetInfo` / `GetXMLDesc` | [`StorageDriver::pool_info`] / [`StorageDriver::pool_xml`] ([`StorageDriver::pool_def`] for the model) |
//! | `virStoragePoolIsActive` / `IsPersistent` | [`StorageDriver::is_active`] / [`StorageDriver::is_persistent`] |
//! | `virConnectListAllStoragePools` | [`StorageDriver::list_pools`] (flags as on the wire) |
//! | `virConnect(Num|List)(Defined)StoragePools` | [`StorageDriver::pool_names`] |
//! | `virStoragePoolLookupBy(Name|UUID|Volume|TargetPath)` | [`StorageDriver::lookup_pool_by_name`], `_by_uuid`, `_by_volume`, `_by_target_path` |
//! | `virStoragePoolListAllVolumes` / legacy list | [`StorageDriver::list_volumes`] / [`StorageDriver::volume_names`] |
//! | `virStorageVolCreateXML` / `CreateXMLFrom` | [`StorageDriver::create_volume`] / [`StorageDriver::create_volume_from`] |
//! | `virStorageVolDelete` / `Wipe(Pattern)` / `Resize` | [`StorageDriver::delete_volume`] / [`StorageDriver::wipe_volume`] / [`StorageDriver::resize_volume`] |
//! | `virStorageVolGetInfo(Flags)` / `GetXMLDesc` / `GetPath` | [`StorageDriver::volume_info`], [`StorageDriver::volume_info_flags`] / [`StorageDriver::volume_xml`] / [`StorageDriver::volume_path`] |
//! | `virConnectGetStoragePoolCapabilities` | [`xml::pool_capabilities`] |
//! | `virConnectFindStoragePoolSources` | [`StorageDriver::find_pool_sources`] (always libvirt's "does not support source discovery") |
//! | `virStorageVolLookupBy(Name|Key|Path)` | [`StorageDriver::lookup_volume_by_name`], `_by_key`, `_by_path` |
//! | `virStorageVolUpload` / `Download` | [`StorageDriver::upload`] → [`UploadSink`] / [`StorageDriver::download`] → [`DownloadSource`] |
//! | `virConnectStoragePoolEventRegisterAny` | [`StorageDriver::subscribe`] → [`PoolEvent`]s |
//!
//! Errors are [`Error`]: [`Error::code`] and [`Error::domain`] give the libvirt error number and domain
//! (`VIR_FROM_STORAGE`, 18) and [`Error::libvirt_message`] the message to send.
//!
//! XML goes through the daemon's libvirt XML models, `domain_xml::storage`: [`xml::parse_pool`] and
//! [`xml::parse_volume`] turn client documents into [`PoolDef`] and [`VolumeDef`] (or convert an already parsed
//! model with [`xml::pool_def_from_model`] / [`xml::volume_def_from_model`]); [`xml::format_pool`] and
//! [`xml::format_volume`] format through the same models, the volume with libvirt's live-only `<physical>` and
//! `<timestamps>` added.
//!
//! ```no_run
//! use std::path::Path;
//! use xen_storage::{flags, xml, Chunk, StorageDriver};
//!
//! # fn main() -> xen_storage::Result<()> {
//! let driver = StorageDriver::open(Path::new("/etc/libvirt"), Path::new("/run/libvirt"))?;
//! let (_id, events) = driver.subscribe(); // forward as REMOTE_PROC_STORAGE_POOL_EVENT_* messages
//!
//! // POOL_DEFINE_XML, POOL_BUILD, POOL_CREATE
//! let pool = driver.define_pool(xml::parse_pool(
//!     "<pool type='dir'><name>default</name><target><path>/var/lib/libvirt/images</path></target></pool>",
//! )?)?;
//! driver.build_pool(&pool, 0)?;
//! driver.start_pool(&pool, 0)?;
//!
//! // STORAGE_VOL_CREATE_XML
//! let vol = driver.create_volume(
//!     &pool,
//!     &xml::parse_volume("<volume><name>a.qcow2</name><capacity unit='G'>1</capacity>\
//!                         <target><format type='qcow2'/></target></volume>", true)?,
//!     0,
//! )?;
//!
//! // STORAGE_VOL_DOWNLOAD with VIR_STORAGE_VOL_DOWNLOAD_SPARSE_STREAM
//! let mut source = driver.download(&vol, 0, 0, flags::VOL_DOWNLOAD_SPARSE_STREAM)?;
//! while let Some(chunk) = source.next_chunk(262_120)? {
//!     match chunk {
//!         Chunk::Data(bytes) => { /* STREAM packet, status CONTINUE */ let _ = bytes; }
//!         Chunk::Hole(len) => { /* STREAM_HOLE packet */ let _ = len; }
//!     }
//! }
//! // then an empty STREAM packet (EOF)
//! # drop(events);
//! # Ok(())
//! # }
//! ```
//!
//! An error goes on the wire as `remote_error { code: err.code(), domain: err.domain(), message:
//! err.libvirt_message(), level: 2 }`.

mod driver;
mod error;
mod events;
pub mod flags;
mod model;
pub mod qemu_img;
mod stream;
mod sys;
pub mod xml;

pub use driver::{sanitize_path, StorageDriver};
pub use error::{code, Error, Result, VIR_FROM_STORAGE};
pub use events::{Lifecycle, PoolEvent, PoolEventKind, EVENT_ID_LIFECYCLE, EVENT_ID_REFRESH};
pub use model::*;
pub use stream::{Chunk, DownloadSource, UploadSink};
