//! The environment a transfer runs in: the network path and the power state,
//! and the [`ConditionSource`] trait that reports them.

use std::fmt;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

/// The kind of network the default route goes through.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum NetworkKind {
    /// No usable network.
    None,
    /// Wi-Fi.
    Wifi,
    /// Wired Ethernet.
    Ethernet,
    /// A cellular modem.
    Cellular,
    /// Anything else (VPN, loopback-only, unknown).
    Other,
}

impl fmt::Display for NetworkKind {
    /// The kind in words: `none`, `Wi-Fi`, `Ethernet`, `cellular`, `other
    /// or unknown`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NetworkKind::None => "none",
            NetworkKind::Wifi => "Wi-Fi",
            NetworkKind::Ethernet => "Ethernet",
            NetworkKind::Cellular => "cellular",
            NetworkKind::Other => "other or unknown",
        })
    }
}

/// The network path: its kind and whether it is expensive or constrained.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct NetworkPath {
    /// The kind of network.
    pub kind: NetworkKind,
    /// Metered or otherwise costly (cellular, a phone's hotspot, a metered link).
    pub expensive: bool,
    /// The user asked to save data on this network (iOS "Low Data Mode").
    pub constrained: bool,
}

impl NetworkPath {
    /// No network.
    pub const NONE: NetworkPath = NetworkPath {
        kind: NetworkKind::None,
        expensive: false,
        constrained: false,
    };
    /// Unmetered, unconstrained Ethernet.
    pub const ETHERNET: NetworkPath = NetworkPath {
        kind: NetworkKind::Ethernet,
        expensive: false,
        constrained: false,
    };
    /// Unmetered, unconstrained Wi-Fi.
    pub const WIFI: NetworkPath = NetworkPath {
        kind: NetworkKind::Wifi,
        expensive: false,
        constrained: false,
    };
    /// A cellular network (expensive).
    pub const CELLULAR: NetworkPath = NetworkPath {
        kind: NetworkKind::Cellular,
        expensive: true,
        constrained: false,
    };

    /// Whether there is a network at all.
    pub fn is_connected(&self) -> bool {
        self.kind != NetworkKind::None
    }

    /// Cellular or marked expensive.
    pub fn is_metered(&self) -> bool {
        self.kind == NetworkKind::Cellular || self.expensive
    }

    /// Whether `self` is at least as permissive as `other` for every policy:
    /// connected if `other` is, not cellular unless `other` is, not expensive
    /// or constrained unless `other` is. Any path is at least as good as none.
    pub fn at_least_as_good_as(&self, other: &NetworkPath) -> bool {
        if !other.is_connected() {
            return true;
        }
        self.is_connected()
            && (self.kind != NetworkKind::Cellular || other.kind == NetworkKind::Cellular)
            && (!self.expensive || other.expensive)
            && (!self.constrained || other.constrained)
    }
}

impl fmt::Display for NetworkPath {
    /// The kind, then what else holds: `cellular, expensive`, `Wi-Fi,
    /// constrained`, `Ethernet`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.kind)?;
        if self.expensive {
            f.write_str(", expensive")?;
        }
        if self.constrained {
            f.write_str(", constrained")?;
        }
        Ok(())
    }
}

/// The power state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Power {
    /// Battery charge in percent, `None` when there is no battery.
    pub battery: Option<u8>,
    /// On external power (charging, or full and plugged in).
    pub external_power: bool,
    /// The system is in a low-power mode.
    pub low_power: bool,
}

impl Power {
    /// A machine on mains power without a battery.
    pub const MAINS: Power = Power {
        battery: None,
        external_power: true,
        low_power: false,
    };

    /// On battery at `level` percent, not charging.
    pub fn on_battery(level: u8) -> Power {
        Power {
            battery: Some(level.min(100)),
            external_power: false,
            low_power: false,
        }
    }

    /// Whether `self` is at least as permissive as `other`: external power if
    /// `other` has it, at least the same charge (no battery counts as full),
    /// and not in low-power mode unless `other` is.
    pub fn at_least_as_good_as(&self, other: &Power) -> bool {
        (self.external_power || !other.external_power)
            && (!self.low_power || other.low_power)
            && self.battery.unwrap_or(100) >= other.battery.unwrap_or(100)
    }
}

impl fmt::Display for Power {
    /// The charge, the supply, and low power mode if on: `battery 20%, not
    /// charging`, `no battery, on external power, low power mode`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.battery {
            Some(level) => write!(f, "battery {level}%")?,
            None => f.write_str("no battery")?,
        }
        f.write_str(if self.external_power {
            ", on external power"
        } else {
            ", not charging"
        })?;
        if self.low_power {
            f.write_str(", low power mode")?;
        }
        Ok(())
    }
}

/// Network path and power, as observed at one moment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Conditions {
    /// The network path.
    pub network: NetworkPath,
    /// The power state.
    pub power: Power,
}

impl Default for Conditions {
    /// Unmetered Ethernet on mains power: what a server or desktop has.
    fn default() -> Self {
        Conditions {
            network: NetworkPath::ETHERNET,
            power: Power::MAINS,
        }
    }
}

impl Conditions {
    /// Whether `self` is at least as permissive as `other` in network and power.
    pub fn at_least_as_good_as(&self, other: &Conditions) -> bool {
        self.network.at_least_as_good_as(&other.network)
            && self.power.at_least_as_good_as(&other.power)
    }
}

/// Reports the current [`Conditions`] and their changes.
///
/// Implementations: a scripted source (tests, and apps whose OS tells them the
/// conditions) and a Linux source reading sysfs, in the scheduler crate.
#[async_trait]
pub trait ConditionSource: Send + Sync {
    /// The conditions now.
    fn current(&self) -> Conditions;

    /// Waits until the conditions differ from `seen`, and returns the new ones.
    /// Returns at once when they already differ.
    async fn changed(&self, seen: Conditions) -> Conditions;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn network_paths_read_as_words() {
        assert_eq!(NetworkPath::NONE.to_string(), "none");
        assert_eq!(NetworkPath::WIFI.to_string(), "Wi-Fi");
        assert_eq!(NetworkPath::ETHERNET.to_string(), "Ethernet");
        assert_eq!(NetworkPath::CELLULAR.to_string(), "cellular, expensive");
        let other = NetworkPath {
            kind: NetworkKind::Other,
            expensive: true,
            constrained: true,
        };
        assert_eq!(
            other.to_string(),
            "other or unknown, expensive, constrained"
        );
    }

    #[test]
    fn power_reads_as_words() {
        assert_eq!(Power::MAINS.to_string(), "no battery, on external power");
        assert_eq!(
            Power::on_battery(20).to_string(),
            "battery 20%, not charging"
        );
        let saving = Power {
            battery: Some(80),
            external_power: true,
            low_power: true,
        };
        assert_eq!(
            saving.to_string(),
            "battery 80%, on external power, low power mode"
        );
    }
}
