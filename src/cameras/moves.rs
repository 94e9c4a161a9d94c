//! When a camera added from discovery shows up at another address: follow it, or ask the
//! resident. Pure decision logic, no I/O.
//!
//! A camera is identified by its ONVIF endpoint reference, which survives DHCP renumbering, so
//! re-discovery can notice a move. But any host on the LAN can claim any endpoint reference
//! (WS-Discovery is unauthenticated), and the box must never send a camera's credentials —
//! not even a UsernameToken digest, which can be brute-forced offline — to an address the
//! resident did not approve. The rule:
//!
//! The box re-points a camera to the new address **automatically** only when all hold:
//!
//! 1. both addresses are IPv4 and inside the subnet of one of the box's own interfaces (the
//!    same LAN segment as the approved address);
//! 2. the old address no longer answers discovery with that endpoint reference (a device
//!    that really moved, not a second device claiming the first one's identity);
//! 3. the device at the new address answers `GetDeviceInformation` **without credentials**
//!    with the serial number recorded when the resident added it.
//!
//! Otherwise the move is recorded as *pending* (shown in `GET /api/v1/cameras` as
//! `onvif.pending_move` with a reason) and the camera keeps its approved address until the
//! resident approves the new one (`PATCH /api/v1/cameras/{id}` with `approve_move`).
//!
//! Why this is safe enough: a host able to pass 1–3 sits on the same segment as the camera
//! and could already take the approved address itself (ARP spoofing) and receive the
//! credentials on it; the rule gives such a host nothing new. A host on another subnet — a
//! guest VLAN, a routed network — cannot pass 1 and always needs the resident. A camera that
//! requires credentials for `GetDeviceInformation` cannot pass 3 and always needs the
//! resident, which costs a click after a DHCP change, never a credential leak.

use std::net::{IpAddr, Ipv4Addr};

use serde::Serialize;

/// What the unauthenticated `GetDeviceInformation` at the new address said.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SerialCheck {
    /// The recorded serial number.
    Same,
    /// Another serial number.
    Different,
    /// No answer usable without credentials, or no serial recorded; the reason in words.
    Unverified(String),
}

/// Why a move waits for the resident.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PendingReason {
    /// The new address is not on the approved address's LAN subnet (or not IPv4).
    OtherSubnet,
    /// The old address still answers with the same endpoint reference.
    OldAddressStillAnswers,
    /// The device at the new address reports another serial number.
    SerialDiffers,
    /// The serial number could not be checked without credentials.
    SerialUnverified,
}

impl PendingReason {
    /// The snake_case word.
    pub fn as_str(self) -> &'static str {
        match self {
            PendingReason::OtherSubnet => "other_subnet",
            PendingReason::OldAddressStillAnswers => "old_address_still_answers",
            PendingReason::SerialDiffers => "serial_differs",
            PendingReason::SerialUnverified => "serial_unverified",
        }
    }
}

/// What to do with a camera seen at a new address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MoveDecision {
    /// Same address: nothing to do.
    Unchanged,
    /// Follow it: ask the new address for the streams (with credentials) and restart.
    Repoint,
    /// Record it and wait for the resident.
    Pending(PendingReason),
}

/// One of the box's IPv4 subnets (address and netmask of an interface).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Subnet {
    /// An address on it.
    pub addr: Ipv4Addr,
    /// Its netmask.
    pub netmask: Ipv4Addr,
}

impl Subnet {
    /// Whether `ip` is on this subnet.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        let m = u32::from(self.netmask);
        u32::from(self.addr) & m == u32::from(ip) & m
    }
}

/// Whether `a` and `b` are IPv4 addresses on one of `subnets`.
pub fn same_subnet(a: IpAddr, b: IpAddr, subnets: &[Subnet]) -> bool {
    match (a, b) {
        (IpAddr::V4(a), IpAddr::V4(b)) => subnets.iter().any(|s| s.contains(a) && s.contains(b)),
        _ => false,
    }
}

/// Whether the subnet and "old address silent" conditions allow checking the serial at all.
/// The serial check itself needs a request to the new address (unauthenticated), so it is
/// made only when this says yes.
pub fn precheck(
    approved: IpAddr,
    seen: IpAddr,
    subnets: &[Subnet],
    old_still_answers: bool,
) -> MoveDecision {
    if approved == seen {
        return MoveDecision::Unchanged;
    }
    if !same_subnet(approved, seen, subnets) {
        return MoveDecision::Pending(PendingReason::OtherSubnet);
    }
    if old_still_answers {
        return MoveDecision::Pending(PendingReason::OldAddressStillAnswers);
    }
    MoveDecision::Repoint
}

/// The whole rule (see the module doc).
pub fn decide(
    approved: IpAddr,
    seen: IpAddr,
    subnets: &[Subnet],
    old_still_answers: bool,
    serial: &SerialCheck,
) -> MoveDecision {
    match precheck(approved, seen, subnets, old_still_answers) {
        MoveDecision::Repoint => match serial {
            SerialCheck::Same => MoveDecision::Repoint,
            SerialCheck::Different => MoveDecision::Pending(PendingReason::SerialDiffers),
            SerialCheck::Unverified(_) => MoveDecision::Pending(PendingReason::SerialUnverified),
        },
        other => other,
    }
}

/// Compares what the device reported with the recorded serial.
pub fn check_serial(recorded: Option<&str>, reported: Option<&str>) -> SerialCheck {
    match (recorded, reported) {
        (None, _) => {
            SerialCheck::Unverified("no serial number was recorded when it was added".into())
        }
        (Some(_), None) => SerialCheck::Unverified("the device reports no serial number".into()),
        (Some(a), Some(b)) if a.trim().eq_ignore_ascii_case(b.trim()) => SerialCheck::Same,
        (Some(_), Some(_)) => SerialCheck::Different,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn lan() -> Vec<Subnet> {
        vec![
            Subnet {
                addr: "192.168.1.2".parse().unwrap(),
                netmask: "255.255.255.0".parse().unwrap(),
            },
            Subnet {
                addr: "10.20.0.2".parse().unwrap(),
                netmask: "255.255.0.0".parse().unwrap(),
            },
        ]
    }

    #[test]
    fn move_rule_table() {
        use MoveDecision::*;
        use PendingReason::*;
        let same = SerialCheck::Same;
        let diff = SerialCheck::Different;
        let unver = SerialCheck::Unverified("auth required".into());
        let cases: &[(&str, &str, &str, bool, &SerialCheck, MoveDecision)] = &[
            (
                "dhcp_renumber_same_lan_same_serial",
                "192.168.1.20",
                "192.168.1.33",
                false,
                &same,
                Repoint,
            ),
            (
                "same_address_is_no_move",
                "192.168.1.20",
                "192.168.1.20",
                false,
                &diff,
                Unchanged,
            ),
            (
                "other_lan_subnet",
                "192.168.1.20",
                "10.20.5.5",
                false,
                &same,
                Pending(OtherSubnet),
            ),
            (
                "subnet_the_box_is_not_on",
                "192.168.1.20",
                "192.168.2.20",
                false,
                &same,
                Pending(OtherSubnet),
            ),
            (
                "old_address_still_answers",
                "192.168.1.20",
                "192.168.1.33",
                true,
                &same,
                Pending(OldAddressStillAnswers),
            ),
            (
                "serial_differs",
                "192.168.1.20",
                "192.168.1.33",
                false,
                &diff,
                Pending(SerialDiffers),
            ),
            (
                "serial_needs_credentials",
                "192.168.1.20",
                "192.168.1.33",
                false,
                &unver,
                Pending(SerialUnverified),
            ),
            (
                "ipv6_never_automatic",
                "fe80::1",
                "fe80::2",
                false,
                &same,
                Pending(OtherSubnet),
            ),
            (
                "wider_subnet",
                "10.20.0.9",
                "10.20.200.9",
                false,
                &same,
                Repoint,
            ),
        ];
        for (name, a, b, old, serial, want) in cases {
            assert_eq!(
                decide(ip(a), ip(b), &lan(), *old, serial),
                *want,
                "case {name}"
            );
        }
    }

    #[test]
    fn serials_compare_trimmed_and_case_blind() {
        assert_eq!(
            check_serial(Some("PC0001"), Some(" pc0001 ")),
            SerialCheck::Same
        );
        assert_eq!(
            check_serial(Some("PC0001"), Some("PC0002")),
            SerialCheck::Different
        );
        assert!(matches!(
            check_serial(None, Some("x")),
            SerialCheck::Unverified(_)
        ));
        assert!(matches!(
            check_serial(Some("x"), None),
            SerialCheck::Unverified(_)
        ));
    }
}
