//! libvirt XML object models (domain, snapshot, storage, capabilities) with parse and format
