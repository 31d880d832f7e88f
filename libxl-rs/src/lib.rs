//! Toolstack library equivalent to Xen's libxl: domain configuration, domain builder, lifecycle, xl

pub mod config;
pub mod xlcfg;
