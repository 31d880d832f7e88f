//! Prints timings of the operations whose cost grows with data: a pool refresh (one qemu-img probe per
//! volume), upload and download throughput, and a sparse download of a mostly empty volume.
//! Run with `cargo bench -p xen-storage`.

use std::path::PathBuf;
use std::time::Instant;

use xen_storage::{flags, Chunk, PoolDef, StorageDriver, VolFormat, VolumeDef};

const MIB: u64 = 1 << 20;

fn main() {
    let root = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("xen-storage-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).expect("bench dir");
    if let Err(err) = run(&root) {
        eprintln!("bench failed: {}", err.libvirt_message());
    }
    let _ = std::fs::remove_dir_all(&root);
}

fn run(root: &std::path::Path) -> xen_storage::Result<()> {
    let driver = StorageDriver::open(&root.join("etc"), &root.join("run"))?;
    let pool = driver.define_pool(PoolDef::dir("bench", root.join("pool")))?;
    driver.build_pool(&pool, 0)?;
    driver.start_pool(&pool, 0)?;

    const VOLUMES: usize = 100;
    let started = Instant::now();
    for i in 0..VOLUMES {
        let format = if i % 2 == 0 {
            VolFormat::Raw
        } else {
            VolFormat::Qcow2
        };
        driver.create_volume(
            &pool,
            &VolumeDef::new(&format!("v{i}"), format, 64 * MIB),
            0,
        )?;
    }
    let per_create = started.elapsed() / VOLUMES as u32;
    let started = Instant::now();
    driver.refresh_pool(&pool, 0)?;
    let refresh = started.elapsed();
    println!("create volume (raw/qcow2 alternating): {per_create:?} each");
    println!("refresh of a pool with {VOLUMES} unchanged volumes: {refresh:?}");
    let started = Instant::now();
    let restarted = StorageDriver::open(&root.join("etc"), &root.join("run"))?;
    println!(
        "daemon restart (every volume probed with qemu-img): {:?}",
        started.elapsed()
    );
    drop(restarted);

    let big = driver.create_volume(
        &pool,
        &VolumeDef::new("big.raw", VolFormat::Raw, 256 * MIB),
        0,
    )?;
    let chunk = vec![0xA5u8; 256 * 1024];
    let started = Instant::now();
    let mut sink = driver.upload(&big, 0, 0, 0)?;
    for _ in 0..(256 * MIB / chunk.len() as u64) {
        sink.write(&chunk)?;
    }
    sink.finish()?;
    let secs = started.elapsed().as_secs_f64();
    println!(
        "upload 256 MiB in 256 KiB chunks: {:.0} MiB/s",
        256.0 / secs
    );

    let started = Instant::now();
    let mut source = driver.download(&big, 0, 0, 0)?;
    let mut bytes = 0u64;
    while let Some(Chunk::Data(d)) = source.next_chunk(256 * 1024)? {
        bytes += d.len() as u64;
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "download {} MiB: {:.0} MiB/s",
        bytes / MIB,
        (bytes / MIB) as f64 / secs
    );

    let sparse = driver.create_volume(
        &pool,
        &VolumeDef::new("sparse.raw", VolFormat::Raw, 1024 * MIB),
        0,
    )?;
    let mut sink = driver.upload(&sparse, 512 * MIB, 0, 0)?;
    sink.write(&vec![1u8; 8 * MIB as usize])?;
    sink.finish()?;
    let started = Instant::now();
    let mut source = driver.download(&sparse, 0, 0, flags::VOL_DOWNLOAD_SPARSE_STREAM)?;
    let (mut data, mut holes, mut packets) = (0u64, 0u64, 0u32);
    while let Some(chunk) = source.next_chunk(256 * 1024)? {
        packets += 1;
        match chunk {
            Chunk::Data(d) => data += d.len() as u64,
            Chunk::Hole(n) => holes += n,
        }
    }
    println!(
        "sparse download of 1 GiB with 8 MiB data: {:?}, {packets} packets, {} MiB data, {} MiB holes",
        started.elapsed(),
        data / MIB,
        holes / MIB
    );
    driver.destroy_pool(&pool)?;
    Ok(())
}
