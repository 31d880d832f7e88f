//! polkit authorization for the daemon's sockets over the system D-Bus
