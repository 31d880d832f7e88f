//! polkit authorization for the daemon's Unix sockets, following libvirt's model.
//!
//! Root peers are trusted without asking. Every other peer is checked by polkitd over the system D-Bus with
//! `org.freedesktop.PolicyKit1.Authority.CheckAuthorization`, using a `unix-process` subject (pid, process start
//! time, uid) and the action [`ACTION_MANAGE`] on the read-write socket or [`ACTION_MONITOR`] on the read-only
//! socket. The action and rules files the packages install are in `polkit/data/`.

use std::collections::HashMap;

use zbus::zvariant::Value;

/// The action checked for clients of the read-write socket.
pub const ACTION_MANAGE: &str = "org.libvirt.unix.manage";
/// The action checked for clients of the read-only socket.
pub const ACTION_MONITOR: &str = "org.libvirt.unix.monitor";

const POLKIT_NAME: &str = "org.freedesktop.PolicyKit1";
const POLKIT_PATH: &str = "/org/freedesktop/PolicyKit1/Authority";
const POLKIT_IFACE: &str = "org.freedesktop.PolicyKit1.Authority";
/// `CheckAuthorizationFlags.AllowUserInteraction`.
const FLAG_ALLOW_USER_INTERACTION: u32 = 1;

/// Errors talking to polkitd.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The system bus could not be reached.
    #[error("cannot connect to the system message bus")]
    Bus(#[source] zbus::Error),
    /// polkitd refused or failed the call.
    #[error("polkit CheckAuthorization failed")]
    Call(#[source] zbus::Error),
    /// The process start time could not be read.
    #[error("cannot read the start time of process {pid}")]
    StartTime {
        /// The process.
        pid: u32,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// polkitd's reply had an unexpected shape.
    #[error("unexpected reply from polkit")]
    Reply(#[source] zbus::Error),
}

/// The process whose authorization is checked: a `unix-process` subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subject {
    /// Process id of the peer.
    pub pid: u32,
    /// The process start time in clock ticks since boot (field 22 of `/proc/PID/stat`), which polkit uses to
    /// detect pid reuse.
    pub start_time: u64,
    /// User id of the peer.
    pub uid: u32,
}

impl Subject {
    /// Builds the subject for a peer known by its credentials, reading its start time from `/proc`.
    pub fn from_peer(pid: u32, uid: u32) -> Result<Self, Error> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map_err(|source| Error::StartTime { pid, source })?;
        let start_time = parse_start_time(&stat).ok_or_else(|| Error::StartTime {
            pid,
            source: std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "malformed /proc stat line",
            ),
        })?;
        Ok(Self {
            pid,
            start_time,
            uid,
        })
    }
}

/// Extracts field 22 (starttime) of a `/proc/PID/stat` line. The command name (field 2) may contain spaces and
/// parentheses, so fields are counted from the last `)`.
pub fn parse_start_time(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    // After ")" come field 3 (state) onwards; starttime is field 22, the 20th of these.
    rest.split_ascii_whitespace().nth(19)?.parse().ok()
}

/// polkit's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// The subject may perform the action.
    Authorized,
    /// The subject could be authorized after authenticating (an agent must answer a challenge).
    Challenge,
    /// The subject is not authorized; `dismissed` is set when the user cancelled an authentication dialog.
    Denied {
        /// The user dismissed the authentication dialog.
        dismissed: bool,
    },
}

/// A connection to polkitd's authority.
pub struct Authority {
    conn: zbus::blocking::Connection,
}

impl Authority {
    /// Connects to the system bus (honours `DBUS_SYSTEM_BUS_ADDRESS`).
    pub fn system() -> Result<Self, Error> {
        let conn = zbus::blocking::Connection::system().map_err(Error::Bus)?;
        Ok(Self { conn })
    }

    /// Connects to the bus at `address` (a D-Bus address such as `unix:path=/run/dbus/system_bus_socket`).
    pub fn at(address: &str) -> Result<Self, Error> {
        let conn = zbus::blocking::connection::Builder::address(address)
            .and_then(|b| b.build())
            .map_err(Error::Bus)?;
        Ok(Self { conn })
    }

    /// Asks polkitd whether `subject` may perform `action`. With `allow_interaction`, polkit may answer
    /// [`Decision::Challenge`] when an authentication agent could authorize the subject.
    pub fn check(
        &self,
        subject: &Subject,
        action: &str,
        allow_interaction: bool,
    ) -> Result<Decision, Error> {
        let mut details: HashMap<&str, Value<'_>> = HashMap::new();
        details.insert("pid", Value::U32(subject.pid));
        details.insert("start-time", Value::U64(subject.start_time));
        // polkit's unix-process subject carries the uid as int32, as libvirt sends it.
        details.insert("uid", Value::I32(subject.uid as i32));
        let flags = if allow_interaction {
            FLAG_ALLOW_USER_INTERACTION
        } else {
            0
        };
        let no_details: HashMap<&str, &str> = HashMap::new();
        let reply = self
            .conn
            .call_method(
                Some(POLKIT_NAME),
                POLKIT_PATH,
                Some(POLKIT_IFACE),
                "CheckAuthorization",
                &(("unix-process", details), action, no_details, flags, ""),
            )
            .map_err(Error::Call)?;
        let (authorized, challenge, result_details): (bool, bool, HashMap<String, String>) =
            reply.body().deserialize().map_err(Error::Reply)?;
        Ok(if authorized {
            Decision::Authorized
        } else if challenge {
            Decision::Challenge
        } else {
            let dismissed = result_details.contains_key("polkit.dismissed");
            Decision::Denied { dismissed }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_time_is_field_22() {
        let line =
            "1234 (a b) c) S 1 1234 1234 0 -1 4194560 100 0 0 0 5 3 0 0 20 0 1 0 987654 1000 200";
        assert_eq!(parse_start_time(line), Some(987_654));
        assert_eq!(parse_start_time("garbage"), None);
        assert_eq!(parse_start_time("1 (x) S 1"), None);
    }

    #[test]
    fn own_process_has_a_start_time() {
        let s = Subject::from_peer(std::process::id(), 0).unwrap();
        assert!(s.start_time > 0);
    }
}
