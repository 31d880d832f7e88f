//! The sandbox control channel's port on aarch64: the virt machine has one UART, the console, so there is no
//! second serial line for the control domain and the channel is never present.

/// A control-channel port that cannot exist on this machine (the type has no values).
pub enum NoCtlPort {}

impl NoCtlPort {
    /// There is no second UART: always `None`.
    pub fn probe() -> Option<Self> {
        None
    }

    /// Never called: no value of this type exists.
    pub fn read(&mut self, _buf: &mut [u8]) -> usize {
        match *self {}
    }

    /// Never called: no value of this type exists.
    pub fn write(&mut self, _data: &[u8]) {
        match *self {}
    }
}
