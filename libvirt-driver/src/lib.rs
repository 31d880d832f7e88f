//! A virtxend-compatible daemon speaking libvirt's remote protocol for xen-hv
