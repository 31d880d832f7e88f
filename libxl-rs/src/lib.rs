//! Toolstack library equivalent to Xen's libxl: domain configuration, domain builder, lifecycle, xl

pub mod builder;
pub mod config;
pub mod console;
pub mod lifecycle;
pub mod save;
pub mod transport;
pub mod xenstore;
pub mod xl_cli;
pub mod xlcfg;
