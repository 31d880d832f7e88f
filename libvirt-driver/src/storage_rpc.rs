//! The storage procedures of the REMOTE program, served by the daemon itself through [`xen_storage`]
//! (clients of virtxend talk to no other daemon), with pool events and volume upload/download streams.

use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use uuid::Uuid;
use xen_storage::{Chunk, PoolEventKind, PoolRef, StorageDriver, VolRef};

use crate::driver::EventOut;
use crate::proto::{code, edomain, RpcError};
use crate::stream::{StreamSink, StreamSource};
use crate::xdr::{Dec, Enc};

/// Storage procedure numbers.
#[allow(missing_docs)]
pub mod procs {
    pub const NUM_OF_STORAGE_POOLS: i32 = 71;
    pub const LIST_STORAGE_POOLS: i32 = 72;
    pub const NUM_OF_DEFINED_STORAGE_POOLS: i32 = 73;
    pub const LIST_DEFINED_STORAGE_POOLS: i32 = 74;
    pub const FIND_STORAGE_POOL_SOURCES: i32 = 75;
    pub const POOL_CREATE_XML: i32 = 76;
    pub const POOL_DEFINE_XML: i32 = 77;
    pub const POOL_CREATE: i32 = 78;
    pub const POOL_BUILD: i32 = 79;
    pub const POOL_DESTROY: i32 = 80;
    pub const POOL_DELETE: i32 = 81;
    pub const POOL_UNDEFINE: i32 = 82;
    pub const POOL_REFRESH: i32 = 83;
    pub const POOL_LOOKUP_BY_NAME: i32 = 84;
    pub const POOL_LOOKUP_BY_UUID: i32 = 85;
    pub const POOL_LOOKUP_BY_VOLUME: i32 = 86;
    pub const POOL_GET_INFO: i32 = 87;
    pub const POOL_GET_XML_DESC: i32 = 88;
    pub const POOL_GET_AUTOSTART: i32 = 89;
    pub const POOL_SET_AUTOSTART: i32 = 90;
    pub const POOL_NUM_OF_VOLUMES: i32 = 91;
    pub const POOL_LIST_VOLUMES: i32 = 92;
    pub const VOL_CREATE_XML: i32 = 93;
    pub const VOL_DELETE: i32 = 94;
    pub const VOL_LOOKUP_BY_NAME: i32 = 95;
    pub const VOL_LOOKUP_BY_KEY: i32 = 96;
    pub const VOL_LOOKUP_BY_PATH: i32 = 97;
    pub const VOL_GET_INFO: i32 = 98;
    pub const VOL_GET_XML_DESC: i32 = 99;
    pub const VOL_GET_PATH: i32 = 100;
    pub const VOL_CREATE_XML_FROM: i32 = 125;
    pub const POOL_IS_ACTIVE: i32 = 154;
    pub const POOL_IS_PERSISTENT: i32 = 155;
    pub const VOL_WIPE: i32 = 165;
    pub const VOL_UPLOAD: i32 = 208;
    pub const VOL_DOWNLOAD: i32 = 209;
    pub const VOL_WIPE_PATTERN: i32 = 259;
    pub const VOL_RESIZE: i32 = 260;
    pub const LIST_ALL_STORAGE_POOLS: i32 = 281;
    pub const POOL_LIST_ALL_VOLUMES: i32 = 282;
    pub const POOL_EVENT_REGISTER_ANY: i32 = 368;
    pub const POOL_EVENT_DEREGISTER_ANY: i32 = 369;
    pub const POOL_EVENT_LIFECYCLE: i32 = 370;
    pub const POOL_EVENT_REFRESH: i32 = 373;
    pub const VOL_GET_INFO_FLAGS: i32 = 378;
    pub const POOL_LOOKUP_BY_TARGET_PATH: i32 = 391;
    pub const GET_STORAGE_POOL_CAPABILITIES: i32 = 403;
}

/// Whether `proc_` is a storage procedure handled here.
pub fn is_storage_proc(p: i32) -> bool {
    use procs::*;
    // Every procedure from 71 to 100 is a storage call.
    (NUM_OF_STORAGE_POOLS..=VOL_GET_PATH).contains(&p)
        || matches!(
            p,
            VOL_CREATE_XML_FROM
                | POOL_IS_ACTIVE
                | POOL_IS_PERSISTENT
                | VOL_WIPE
                | VOL_UPLOAD
                | VOL_DOWNLOAD
                | VOL_WIPE_PATTERN
                | VOL_RESIZE
                | LIST_ALL_STORAGE_POOLS
                | POOL_LIST_ALL_VOLUMES
                | POOL_EVENT_REGISTER_ANY
                | POOL_EVENT_DEREGISTER_ANY
                | VOL_GET_INFO_FLAGS
                | POOL_LOOKUP_BY_TARGET_PATH
                | GET_STORAGE_POOL_CAPABILITIES
        )
}

/// Whether the procedure changes state (refused on read-only connections).
fn is_write_proc(p: i32) -> bool {
    use procs::*;
    matches!(
        p,
        POOL_CREATE_XML
            | POOL_DEFINE_XML
            | POOL_CREATE
            | POOL_BUILD
            | POOL_DESTROY
            | POOL_DELETE
            | POOL_UNDEFINE
            | POOL_REFRESH
            | POOL_SET_AUTOSTART
            | VOL_CREATE_XML
            | VOL_CREATE_XML_FROM
            | VOL_DELETE
            | VOL_WIPE
            | VOL_WIPE_PATTERN
            | VOL_RESIZE
            | VOL_UPLOAD
            | VOL_DOWNLOAD
    )
}

fn serr(e: xen_storage::Error) -> RpcError {
    RpcError::new(e.code(), e.domain(), e.libvirt_message())
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn dec_pool(d: &mut Dec<'_>) -> Result<PoolRef, RpcError> {
    let name = d.str()?;
    let uuid = Uuid::from_slice(d.fixed(16)?).map_err(|e| RpcError::rpc(e.to_string()))?;
    Ok(PoolRef { name, uuid })
}

fn enc_pool(e: &mut Enc, p: &PoolRef) {
    e.str(&p.name);
    e.buf.extend_from_slice(p.uuid.as_bytes());
}

fn dec_vol(d: &mut Dec<'_>) -> Result<VolRef, RpcError> {
    Ok(VolRef {
        pool: d.str()?,
        name: d.str()?,
        key: d.str()?,
    })
}

fn enc_vol(e: &mut Enc, v: &VolRef) {
    e.str(&v.pool).str(&v.name).str(&v.key);
}

fn enc_names(e: &mut Enc, names: &[String], max: i32) -> Result<(), RpcError> {
    if !(0..=16384).contains(&max) {
        return Err(RpcError::rpc("maxnames > REMOTE_STORAGE_POOL_LIST_MAX"));
    }
    let n = names.len().min(max as usize);
    e.u32(n as u32);
    for s in &names[..n] {
        e.str(s);
    }
    Ok(())
}

struct PoolReg {
    callback_id: i32,
    conn: u64,
    event_id: i32,
    pool: Option<Uuid>,
    out: EventOut,
}

/// A stream opened by a storage call, for the server to attach.
pub enum StorageStream {
    /// Upload: the client sends data.
    Upload(Box<dyn StreamSink>),
    /// Download: the daemon sends data.
    Download(Box<dyn StreamSource>),
}

/// The storage side of the daemon.
pub struct StorageRpc {
    drv: StorageDriver,
    regs: Arc<Mutex<Vec<PoolReg>>>,
    next: AtomicI32,
}

impl StorageRpc {
    /// Wraps a storage driver and starts forwarding its pool events.
    pub fn new(drv: StorageDriver) -> StorageRpc {
        let regs: Arc<Mutex<Vec<PoolReg>>> = Arc::default();
        let (_id, rx) = drv.subscribe();
        let r2 = regs.clone();
        std::thread::spawn(move || {
            for ev in rx {
                let regs = lock(&r2);
                for r in regs.iter().filter(|r| {
                    r.event_id == ev.kind.event_id() && r.pool.is_none_or(|u| u == ev.pool.uuid)
                }) {
                    let mut e = Enc::new();
                    e.i32(r.callback_id);
                    enc_pool(&mut e, &ev.pool);
                    let proc_ = match ev.kind {
                        PoolEventKind::Lifecycle(l) => {
                            e.i32(l as i32).i32(0);
                            procs::POOL_EVENT_LIFECYCLE
                        }
                        PoolEventKind::Refresh => procs::POOL_EVENT_REFRESH,
                    };
                    (r.out)(proc_, e.buf);
                }
            }
        });
        StorageRpc {
            drv,
            regs,
            next: AtomicI32::new(1),
        }
    }

    /// Problems found when the storage driver started.
    pub fn startup_errors(&self) -> Vec<String> {
        self.drv.startup_errors()
    }

    /// Drops a connection's event registrations.
    pub fn drop_connection(&self, conn: u64) {
        lock(&self.regs).retain(|r| r.conn != conn);
    }

    /// Opens the stream of an upload (208) or download (209) call.
    pub fn open_stream(
        &self,
        proc_: i32,
        args: &[u8],
        readonly: bool,
    ) -> Result<StorageStream, RpcError> {
        if readonly {
            return Err(ro_error());
        }
        let mut d = Dec::new(args);
        let vol = dec_vol(&mut d)?;
        let offset = d.u64()?;
        let length = d.u64()?;
        let flags = d.u32()?;
        d.finish()?;
        if proc_ == procs::VOL_UPLOAD {
            let sink = self.drv.upload(&vol, offset, length, flags).map_err(serr)?;
            Ok(StorageStream::Upload(Box::new(Upload(Some(sink)))))
        } else {
            let src = self
                .drv
                .download(&vol, offset, length, flags)
                .map_err(serr)?;
            Ok(StorageStream::Download(Box::new(Download(src))))
        }
    }

    /// Executes one storage call.
    pub fn call(
        &self,
        conn: u64,
        readonly: bool,
        proc_: i32,
        args: &[u8],
        out: &EventOut,
    ) -> Result<Vec<u8>, RpcError> {
        use procs::*;
        if readonly && is_write_proc(proc_) {
            return Err(ro_error());
        }
        let mut d = Dec::new(args);
        let mut e = Enc::new();
        let drv = &self.drv;
        match proc_ {
            NUM_OF_STORAGE_POOLS | NUM_OF_DEFINED_STORAGE_POOLS => {
                d.finish()?;
                e.i32(drv.pool_names(proc_ == NUM_OF_STORAGE_POOLS).len() as i32);
            }
            LIST_STORAGE_POOLS | LIST_DEFINED_STORAGE_POOLS => {
                let max = d.i32()?;
                d.finish()?;
                enc_names(&mut e, &drv.pool_names(proc_ == LIST_STORAGE_POOLS), max)?;
            }
            FIND_STORAGE_POOL_SOURCES => {
                let ty = d.str()?;
                let spec = d.opt_str()?;
                let flags = d.u32()?;
                d.finish()?;
                e.str(
                    &drv.find_pool_sources(&ty, spec.as_deref(), flags)
                        .map_err(serr)?,
                );
            }
            POOL_CREATE_XML | POOL_DEFINE_XML => {
                let xml = d.str()?;
                let flags = d.u32()?;
                d.finish()?;
                let def = xen_storage::xml::parse_pool(&xml).map_err(serr)?;
                let p = if proc_ == POOL_CREATE_XML {
                    drv.create_pool(def, flags).map_err(serr)?
                } else {
                    if flags & !1 != 0 {
                        return Err(RpcError::new(
                            code::INVALID_ARG,
                            xen_storage::VIR_FROM_STORAGE,
                            format!("invalid argument: unsupported flags (0x{:x}) in function storagePoolDefineXML", flags & !1),
                        ));
                    }
                    drv.define_pool(def).map_err(serr)?
                };
                enc_pool(&mut e, &p);
            }
            POOL_CREATE | POOL_BUILD | POOL_DELETE | POOL_REFRESH => {
                let p = dec_pool(&mut d)?;
                let flags = d.u32()?;
                d.finish()?;
                match proc_ {
                    POOL_CREATE => drv.start_pool(&p, flags),
                    POOL_BUILD => drv.build_pool(&p, flags),
                    POOL_DELETE => drv.delete_pool(&p, flags),
                    _ => drv.refresh_pool(&p, flags),
                }
                .map_err(serr)?;
            }
            POOL_DESTROY | POOL_UNDEFINE => {
                let p = dec_pool(&mut d)?;
                d.finish()?;
                if proc_ == POOL_DESTROY {
                    drv.destroy_pool(&p)
                } else {
                    drv.undefine_pool(&p)
                }
                .map_err(serr)?;
            }
            POOL_LOOKUP_BY_NAME | POOL_LOOKUP_BY_TARGET_PATH => {
                let name = d.str()?;
                d.finish()?;
                let p = if proc_ == POOL_LOOKUP_BY_NAME {
                    drv.lookup_pool_by_name(&name)
                } else {
                    drv.lookup_pool_by_target_path(&name)
                }
                .map_err(serr)?;
                enc_pool(&mut e, &p);
            }
            POOL_LOOKUP_BY_UUID => {
                let u =
                    Uuid::from_slice(d.fixed(16)?).map_err(|er| RpcError::rpc(er.to_string()))?;
                d.finish()?;
                enc_pool(&mut e, &drv.lookup_pool_by_uuid(&u).map_err(serr)?);
            }
            POOL_LOOKUP_BY_VOLUME => {
                let v = dec_vol(&mut d)?;
                d.finish()?;
                enc_pool(&mut e, &drv.lookup_pool_by_volume(&v).map_err(serr)?);
            }
            POOL_GET_INFO => {
                let p = dec_pool(&mut d)?;
                d.finish()?;
                let i = drv.pool_info(&p).map_err(serr)?;
                e.i32(i.state as i32)
                    .u64(i.capacity)
                    .u64(i.allocation)
                    .u64(i.available);
            }
            POOL_GET_XML_DESC => {
                let p = dec_pool(&mut d)?;
                let flags = d.u32()?;
                d.finish()?;
                e.str(&drv.pool_xml(&p, flags).map_err(serr)?);
            }
            POOL_GET_AUTOSTART | POOL_IS_ACTIVE | POOL_IS_PERSISTENT => {
                let p = dec_pool(&mut d)?;
                d.finish()?;
                let v = match proc_ {
                    POOL_GET_AUTOSTART => drv.autostart_of(&p),
                    POOL_IS_ACTIVE => drv.is_active(&p),
                    _ => drv.is_persistent(&p),
                }
                .map_err(serr)?;
                e.i32(i32::from(v));
            }
            POOL_SET_AUTOSTART => {
                let p = dec_pool(&mut d)?;
                let on = d.i32()?;
                d.finish()?;
                drv.set_autostart(&p, on != 0).map_err(serr)?;
            }
            POOL_NUM_OF_VOLUMES => {
                let p = dec_pool(&mut d)?;
                d.finish()?;
                e.i32(drv.volume_names(&p).map_err(serr)?.len() as i32);
            }
            POOL_LIST_VOLUMES => {
                let p = dec_pool(&mut d)?;
                let max = d.i32()?;
                d.finish()?;
                enc_names(&mut e, &drv.volume_names(&p).map_err(serr)?, max)?;
            }
            VOL_CREATE_XML | VOL_CREATE_XML_FROM => {
                let p = dec_pool(&mut d)?;
                let xml = d.str()?;
                let src = if proc_ == VOL_CREATE_XML_FROM {
                    Some(dec_vol(&mut d)?)
                } else {
                    None
                };
                let flags = d.u32()?;
                d.finish()?;
                let def = xen_storage::xml::parse_volume(&xml, src.is_none()).map_err(serr)?;
                let v = match src {
                    Some(s) => drv.create_volume_from(&p, &def, &s, flags),
                    None => drv.create_volume(&p, &def, flags),
                }
                .map_err(serr)?;
                enc_vol(&mut e, &v);
            }
            VOL_DELETE | VOL_WIPE => {
                let v = dec_vol(&mut d)?;
                let flags = d.u32()?;
                d.finish()?;
                if proc_ == VOL_DELETE {
                    drv.delete_volume(&v, flags)
                } else {
                    drv.wipe_volume(&v, xen_storage::flags::VOL_WIPE_ALG_ZERO, flags)
                }
                .map_err(serr)?;
            }
            VOL_WIPE_PATTERN => {
                let v = dec_vol(&mut d)?;
                let alg = d.u32()?;
                let flags = d.u32()?;
                d.finish()?;
                drv.wipe_volume(&v, alg, flags).map_err(serr)?;
            }
            VOL_LOOKUP_BY_NAME => {
                let p = dec_pool(&mut d)?;
                let name = d.str()?;
                d.finish()?;
                enc_vol(&mut e, &drv.lookup_volume_by_name(&p, &name).map_err(serr)?);
            }
            VOL_LOOKUP_BY_KEY | VOL_LOOKUP_BY_PATH => {
                let k = d.str()?;
                d.finish()?;
                let v = if proc_ == VOL_LOOKUP_BY_KEY {
                    drv.lookup_volume_by_key(&k)
                } else {
                    drv.lookup_volume_by_path(&k)
                }
                .map_err(serr)?;
                enc_vol(&mut e, &v);
            }
            VOL_GET_INFO | VOL_GET_INFO_FLAGS => {
                let v = dec_vol(&mut d)?;
                let flags = if proc_ == VOL_GET_INFO_FLAGS {
                    d.u32()?
                } else {
                    0
                };
                d.finish()?;
                let i = drv.volume_info_flags(&v, flags).map_err(serr)?;
                e.i32(i.kind as i32).u64(i.capacity).u64(i.allocation);
            }
            VOL_GET_XML_DESC => {
                let v = dec_vol(&mut d)?;
                let flags = d.u32()?;
                d.finish()?;
                if flags != 0 {
                    return Err(RpcError::new(
                        code::INVALID_ARG,
                        xen_storage::VIR_FROM_STORAGE,
                        format!("invalid argument: unsupported flags (0x{flags:x}) in function storageVolGetXMLDesc"),
                    ));
                }
                e.str(&drv.volume_xml(&v).map_err(serr)?);
            }
            VOL_GET_PATH => {
                let v = dec_vol(&mut d)?;
                d.finish()?;
                e.str(&drv.volume_path(&v).map_err(serr)?);
            }
            VOL_RESIZE => {
                let v = dec_vol(&mut d)?;
                let cap = d.u64()?;
                let flags = d.u32()?;
                d.finish()?;
                drv.resize_volume(&v, cap, flags).map_err(serr)?;
            }
            LIST_ALL_STORAGE_POOLS => {
                let need = d.i32()?;
                let flags = d.u32()?;
                d.finish()?;
                let pools = drv.list_pools(flags).map_err(serr)?;
                if need != 0 {
                    e.u32(pools.len() as u32);
                    for p in &pools {
                        enc_pool(&mut e, p);
                    }
                } else {
                    e.u32(0);
                }
                e.u32(pools.len() as u32);
            }
            POOL_LIST_ALL_VOLUMES => {
                let p = dec_pool(&mut d)?;
                let need = d.i32()?;
                let flags = d.u32()?;
                d.finish()?;
                if flags != 0 {
                    return Err(RpcError::new(
                        code::INVALID_ARG,
                        xen_storage::VIR_FROM_STORAGE,
                        format!("invalid argument: unsupported flags (0x{flags:x}) in function storagePoolListAllVolumes"),
                    ));
                }
                let vols = drv.list_volumes(&p).map_err(serr)?;
                if need != 0 {
                    e.u32(vols.len() as u32);
                    for v in &vols {
                        enc_vol(&mut e, v);
                    }
                } else {
                    e.u32(0);
                }
                e.u32(vols.len() as u32);
            }
            POOL_EVENT_REGISTER_ANY => {
                let id = d.i32()?;
                let pool = if d.flag()? {
                    Some(dec_pool(&mut d)?)
                } else {
                    None
                };
                d.finish()?;
                if !(0..=1).contains(&id) {
                    return Err(RpcError::new(
                        code::INVALID_ARG,
                        edomain::REMOTE,
                        format!("invalid argument: unsupported storage pool event ID {id}"),
                    ));
                }
                let cb = self.next.fetch_add(1, Ordering::Relaxed);
                lock(&self.regs).push(PoolReg {
                    callback_id: cb,
                    conn,
                    event_id: id,
                    pool: pool.map(|p| p.uuid),
                    out: out.clone(),
                });
                e.i32(cb);
            }
            POOL_EVENT_DEREGISTER_ANY => {
                let id = d.i32()?;
                d.finish()?;
                let mut regs = lock(&self.regs);
                let before = regs.len();
                regs.retain(|r| !(r.conn == conn && r.callback_id == id));
                if regs.len() == before {
                    return Err(RpcError::new(
                        code::INVALID_ARG,
                        edomain::REMOTE,
                        format!(
                            "invalid argument: storage pool event callback {id} not registered"
                        ),
                    ));
                }
            }
            GET_STORAGE_POOL_CAPABILITIES => {
                let flags = d.u32()?;
                d.finish()?;
                if flags != 0 {
                    return Err(RpcError::new(
                        code::INVALID_ARG,
                        xen_storage::VIR_FROM_STORAGE,
                        format!("invalid argument: unsupported flags (0x{flags:x}) in function storageConnectGetStoragePoolCapabilities"),
                    ));
                }
                e.str(&xen_storage::xml::pool_capabilities());
            }
            _ => return Err(RpcError::unknown_procedure(proc_)),
        }
        Ok(e.buf)
    }
}

fn ro_error() -> RpcError {
    RpcError::new(
        6,
        xen_storage::VIR_FROM_STORAGE,
        "operation forbidden: read only access prevents this storage operation",
    )
}

struct Upload(Option<xen_storage::UploadSink>);

impl StreamSink for Upload {
    fn write(&mut self, data: &[u8]) -> Result<(), RpcError> {
        match self.0.as_mut() {
            Some(s) => s.write(data).map_err(serr),
            None => Err(RpcError::new(
                code::RPC,
                edomain::STREAMS,
                "stream is closed",
            )),
        }
    }
    fn hole(&mut self, len: u64) -> Result<(), RpcError> {
        match self.0.as_mut() {
            Some(s) => s.hole(len).map_err(serr),
            None => Err(RpcError::new(
                code::RPC,
                edomain::STREAMS,
                "stream is closed",
            )),
        }
    }
    fn finish(&mut self) -> Result<(), RpcError> {
        match self.0.take() {
            Some(s) => s.finish().map_err(serr),
            None => Ok(()),
        }
    }
    fn abort(&mut self) {
        if let Some(s) = self.0.take() {
            s.abort();
        }
    }
}

struct Download(xen_storage::DownloadSource);

impl StreamSource for Download {
    fn next(&mut self, max: usize) -> Result<Option<crate::stream::Chunk>, RpcError> {
        Ok(match self.0.next_chunk(max).map_err(serr)? {
            None => None,
            Some(Chunk::Data(b)) => Some(crate::stream::Chunk::Data(b)),
            Some(Chunk::Hole(n)) => Some(crate::stream::Chunk::Hole(n)),
        })
    }
}
