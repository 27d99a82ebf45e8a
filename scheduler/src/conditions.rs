//! Where a session's network and power conditions come from: a scripted
//! source the application (or a test) sets, and a Linux source that reads
//! sysfs and procfs.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::sync::watch;
use transfer_core::{ConditionSource, Conditions, NetworkKind, NetworkPath, Power};

mod network_manager;
mod routes;

use routes::default_interface;

/// Conditions the application sets, for platforms whose OS reports them
/// (and for tests): every [`set`](Self::set) is seen by the sessions using
/// the source at once.
#[derive(Debug)]
pub struct ScriptedConditions {
    tx: watch::Sender<Conditions>,
}

impl ScriptedConditions {
    /// A source reporting `initial` until told otherwise.
    pub fn new(initial: Conditions) -> ScriptedConditions {
        ScriptedConditions {
            tx: watch::Sender::new(initial),
        }
    }

    /// Reports `conditions` from now on.
    pub fn set(&self, conditions: Conditions) {
        self.tx.send_replace(conditions);
    }

    /// Changes the conditions reported with `f`.
    pub fn update(&self, f: impl FnOnce(&mut Conditions)) {
        self.tx.send_modify(f);
    }
}

#[async_trait::async_trait]
impl ConditionSource for ScriptedConditions {
    fn current(&self) -> Conditions {
        *self.tx.borrow()
    }

    async fn changed(&self, seen: Conditions) -> Conditions {
        wait_changed(self.tx.subscribe(), seen).await
    }
}

/// Waits on `rx` until it holds something other than `seen`.
async fn wait_changed(mut rx: watch::Receiver<Conditions>, seen: Conditions) -> Conditions {
    let now = rx.wait_for(|c| *c != seen).await.map(|c| *c);
    match now {
        Ok(c) => c,
        // The sender is gone: nothing will change any more.
        Err(_) => futures::future::pending().await,
    }
}

/// Settings of [`LinuxConditions`].
#[derive(Clone, Debug)]
pub struct LinuxConditionsConfig {
    /// The directory holding `sys/` and `proc/` (default `/`; a fake tree
    /// in tests).
    pub root: PathBuf,
    /// How often the files are read again (default 2 s).
    pub interval: Duration,
    /// Interfaces that are metered whatever their kind (a phone's hotspot
    /// seen as Wi-Fi, a metered uplink).
    pub expensive: HashSet<String>,
    /// Interfaces on which the user asked to save data.
    pub constrained: HashSet<String>,
    /// Where NetworkManager is asked whether the connection is metered
    /// (default: the system bus). Metered there makes the network
    /// expensive, as an interface in [`expensive`](Self::expensive) does.
    pub network_manager: NetworkManagerBus,
}

/// The D-Bus bus on which [`LinuxConditions`] follows NetworkManager's
/// `Metered` flag (yes and guess-yes count as metered, as on GNOME).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum NetworkManagerBus {
    /// The system bus, where NetworkManager runs (`DBUS_SYSTEM_BUS_ADDRESS`,
    /// else `/run/dbus/system_bus_socket`).
    #[default]
    System,
    /// The bus at this D-Bus address (`unix:path=/run/…/bus`).
    Address(String),
    /// Do not ask: only the files and the configured interfaces decide.
    Off,
}

impl Default for LinuxConditionsConfig {
    fn default() -> Self {
        LinuxConditionsConfig {
            root: PathBuf::from("/"),
            interval: Duration::from_secs(2),
            expensive: HashSet::new(),
            constrained: HashSet::new(),
            network_manager: NetworkManagerBus::System,
        }
    }
}

/// Conditions read from Linux: the default route's interface from
/// `proc/net/route`, else from `proc/net/ipv6_route`, and its kind from `sys/class/net` (Wi-Fi when it has
/// `wireless` or `phy80211`, cellular for WWAN devices, Ethernet otherwise),
/// batteries and mains from `sys/class/power_supply`, and low-power mode
/// from `sys/firmware/acpi/platform_profile`. Read again every
/// [`interval`](LinuxConditionsConfig::interval); a file that is missing or
/// unreadable makes its part unknown (network `Other`; power as on mains),
/// never an error. The network is also expensive while NetworkManager calls
/// it metered, followed over D-Bus as it changes (see
/// [`network_manager`](LinuxConditionsConfig::network_manager)); without a
/// bus or NetworkManager, the rest decides.
#[derive(Debug)]
pub struct LinuxConditions {
    rx: watch::Receiver<Conditions>,
}

impl LinuxConditions {
    /// Reads the conditions now and starts polling, and following
    /// NetworkManager, on the current tokio runtime (neither delays the
    /// start: NetworkManager's answer comes in as a change); both stop when
    /// the source is dropped.
    pub fn start(config: LinuxConditionsConfig) -> LinuxConditions {
        let mut files = read(&config);
        let (tx, rx) = watch::channel(files);
        let (metered_tx, mut metered_rx) = watch::channel(false);
        tokio::spawn(network_manager::follow(
            config.network_manager.clone(),
            metered_tx,
        ));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(config.interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            let mut following = true;
            loop {
                tokio::select! {
                    _ = tick.tick() => {
                        let root = config.clone();
                        let Ok(now) = tokio::task::spawn_blocking(move || read(&root)).await else {
                            return;
                        };
                        files = now;
                    }
                    changed = metered_rx.changed(), if following => {
                        // Gone: it said "not metered" last; stop listening.
                        following = changed.is_ok();
                    }
                    () = tx.closed() => return,
                }
                let now = metered(files, *metered_rx.borrow_and_update());
                tx.send_if_modified(|c| {
                    let changed = *c != now;
                    *c = now;
                    changed
                });
            }
        });
        LinuxConditions { rx }
    }

    /// The conditions as they change.
    pub fn subscribe(&self) -> watch::Receiver<Conditions> {
        self.rx.clone()
    }
}

#[async_trait::async_trait]
impl ConditionSource for LinuxConditions {
    fn current(&self) -> Conditions {
        *self.rx.borrow()
    }

    async fn changed(&self, seen: Conditions) -> Conditions {
        wait_changed(self.rx.clone(), seen).await
    }
}

/// Reads the conditions once from the tree under `config.root`.
pub fn read(config: &LinuxConditionsConfig) -> Conditions {
    Conditions {
        network: network(config),
        power: power(&config.root),
    }
}

/// The conditions now, as [`read`] finds them in the files, with
/// NetworkManager's metered flag asked once over D-Bus (see
/// [`LinuxConditionsConfig::network_manager`]) when it answers within
/// `wait`: what a one-off command shows, where [`LinuxConditions::start`]
/// follows both.
pub async fn read_now(config: &LinuxConditionsConfig, wait: std::time::Duration) -> Conditions {
    let files = read(config);
    let asked = tokio::time::timeout(wait, network_manager::ask(&config.network_manager)).await;
    metered(files, matches!(asked, Ok(Some(true))))
}

/// `files` with the network expensive if NetworkManager calls it
/// `metered` (and there is a network to be expensive).
fn metered(mut files: Conditions, metered: bool) -> Conditions {
    if metered && files.network.is_connected() {
        files.network.expensive = true;
    }
    files
}

fn text(path: &Path) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_owned())
}

fn network(config: &LinuxConditionsConfig) -> NetworkPath {
    let iface = match default_interface(&config.root) {
        Err(()) => {
            return NetworkPath {
                kind: NetworkKind::Other,
                expensive: false,
                constrained: false,
            };
        }
        Ok(None) => return NetworkPath::NONE,
        Ok(Some(iface)) => iface,
    };
    let dir = config.root.join("sys/class/net").join(&iface);
    let wwan = text(&dir.join("uevent"))
        .is_some_and(|u| u.lines().any(|l| l.trim() == "DEVTYPE=wwan"))
        || ["wwan", "rmnet", "ccmni"]
            .iter()
            .any(|p| iface.starts_with(p));
    let kind = if !dir.exists() {
        NetworkKind::Other
    } else if dir.join("wireless").exists() || dir.join("phy80211").exists() {
        NetworkKind::Wifi
    } else if wwan {
        NetworkKind::Cellular
    } else {
        NetworkKind::Ethernet
    };
    NetworkPath {
        kind,
        expensive: kind == NetworkKind::Cellular || config.expensive.contains(&iface),
        constrained: config.constrained.contains(&iface),
    }
}

fn power(root: &Path) -> Power {
    let low_power =
        text(&root.join("sys/firmware/acpi/platform_profile")).is_some_and(|p| p == "low-power");
    let Ok(supplies) = std::fs::read_dir(root.join("sys/class/power_supply")) else {
        return Power {
            low_power,
            ..Power::MAINS
        };
    };
    let mut levels = Vec::new();
    let mut external = false;
    let mut any_mains = false;
    for supply in supplies.flatten() {
        let dir = supply.path();
        match text(&dir.join("type")).as_deref() {
            Some("Battery") => {
                // A mouse's or a headset's battery says nothing of ours.
                if text(&dir.join("scope")).as_deref() == Some("Device") {
                    continue;
                }
                if let Some(level) = text(&dir.join("capacity")).and_then(|c| c.parse::<u8>().ok())
                {
                    levels.push(level.min(100));
                }
                // "Not charging": plugged in, held below full.
                if matches!(
                    text(&dir.join("status")).as_deref(),
                    Some("Charging" | "Full" | "Not charging")
                ) {
                    external = true;
                }
            }
            Some("Mains" | "USB" | "USB_C" | "USB_PD") => {
                any_mains = true;
                if text(&dir.join("online")).as_deref() == Some("1") {
                    external = true;
                }
            }
            _ => {}
        }
    }
    if levels.is_empty() {
        // No battery we can read: a machine on mains, unless a mains supply
        // says it is offline.
        return Power {
            battery: None,
            external_power: external || !any_mains,
            low_power,
        };
    }
    let battery = (levels.iter().map(|&l| u32::from(l)).sum::<u32>() / levels.len() as u32) as u8;
    Power {
        battery: Some(battery),
        external_power: external,
        low_power,
    }
}
