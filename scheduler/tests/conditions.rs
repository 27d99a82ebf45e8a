#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The Linux condition source on fake sysfs/procfs trees: every network kind
//! and power state maps to the right conditions, broken files degrade to
//! "unknown" without a panic, and changes are noticed while polling;
//! NetworkManager's metered flag, served by a fake on a real dbus-daemon,
//! makes the network expensive as it changes. The scripted source reports
//! what it is told.

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use scheduler::conditions::read;
use scheduler::{LinuxConditions, LinuxConditionsConfig, NetworkManagerBus, ScriptedConditions};
use transfer_core::{ConditionSource, Conditions, NetworkKind, NetworkPath, Power};

fn write(root: &Path, rel: &str, text: &str) {
    let path = root.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

const ROUTE_HEADER: &str =
    "Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n";

/// A default route through `iface` (plus a local route through `lo`).
fn route(root: &Path, iface: &str, metric: u32) -> String {
    let table = format!(
        "{ROUTE_HEADER}lo\t0000007F\t00000000\t0001\t0\t0\t0\t000000FF\t0\t0\t0\n\
         {iface}\t00000000\t0101A8C0\t0003\t0\t0\t{metric}\t00000000\t0\t0\t0\n"
    );
    write(root, "proc/net/route", &table);
    table
}

#[derive(Clone, Copy, Debug)]
enum Net {
    Wifi,
    Ethernet,
    Cellular,
    None,
}

#[derive(Clone, Copy, Debug)]
enum Pow {
    /// A battery at 55%, discharging; mains offline.
    Discharging,
    /// No battery, mains online (a desktop).
    Mains,
    /// A battery at 20%, charging; mains online.
    Charging,
    /// A battery at 80%, discharging, in the low-power platform profile.
    LowPower,
}

fn tree(root: &Path, net: Net, pow: Pow) {
    match net {
        Net::Wifi => {
            route(root, "wlp2s0", 600);
            write(
                root,
                "sys/class/net/wlp2s0/uevent",
                "DEVTYPE=wlan\nINTERFACE=wlp2s0\n",
            );
            std::fs::create_dir_all(root.join("sys/class/net/wlp2s0/wireless")).unwrap();
        }
        Net::Ethernet => {
            route(root, "enp3s0", 100);
            write(root, "sys/class/net/enp3s0/uevent", "INTERFACE=enp3s0\n");
        }
        Net::Cellular => {
            route(root, "wwan0", 700);
            write(
                root,
                "sys/class/net/wwan0/uevent",
                "DEVTYPE=wwan\nINTERFACE=wwan0\n",
            );
        }
        Net::None => {
            write(
                root,
                "proc/net/route",
                &format!(
                    "{ROUTE_HEADER}lo\t0000007F\t00000000\t0001\t0\t0\t0\t000000FF\t0\t0\t0\n"
                ),
            );
        }
    }
    let battery = |root: &Path, level: &str, status: &str| {
        write(root, "sys/class/power_supply/BAT0/type", "Battery\n");
        write(root, "sys/class/power_supply/BAT0/capacity", level);
        write(root, "sys/class/power_supply/BAT0/status", status);
        // A wireless mouse's battery: not the machine's.
        write(
            root,
            "sys/class/power_supply/hidpp_battery_0/type",
            "Battery\n",
        );
        write(
            root,
            "sys/class/power_supply/hidpp_battery_0/scope",
            "Device\n",
        );
        write(
            root,
            "sys/class/power_supply/hidpp_battery_0/capacity",
            "5\n",
        );
    };
    let mains = |root: &Path, online: &str| {
        write(root, "sys/class/power_supply/AC/type", "Mains\n");
        write(root, "sys/class/power_supply/AC/online", online);
    };
    match pow {
        Pow::Discharging => {
            battery(root, "55\n", "Discharging\n");
            mains(root, "0\n");
        }
        Pow::Mains => mains(root, "1\n"),
        Pow::Charging => {
            battery(root, "20\n", "Charging\n");
            mains(root, "1\n");
        }
        Pow::LowPower => {
            battery(root, "80\n", "Discharging\n");
            mains(root, "0\n");
            write(root, "sys/firmware/acpi/platform_profile", "low-power\n");
        }
    }
}

/// The tree at `root` alone decides: not this machine's NetworkManager.
fn config(root: &Path) -> LinuxConditionsConfig {
    LinuxConditionsConfig {
        root: root.to_owned(),
        network_manager: NetworkManagerBus::Off,
        ..LinuxConditionsConfig::default()
    }
}

#[test]
fn every_network_and_power_state_maps_to_its_conditions() {
    for net in [Net::Wifi, Net::Ethernet, Net::Cellular, Net::None] {
        for pow in [Pow::Discharging, Pow::Mains, Pow::Charging, Pow::LowPower] {
            let dir = tempfile::tempdir().unwrap();
            tree(dir.path(), net, pow);
            let got = read(&config(dir.path()));
            let network = match net {
                Net::Wifi => NetworkPath::WIFI,
                Net::Ethernet => NetworkPath::ETHERNET,
                Net::Cellular => NetworkPath::CELLULAR,
                Net::None => NetworkPath::NONE,
            };
            let power = match pow {
                Pow::Discharging => Power::on_battery(55),
                Pow::Mains => Power::MAINS,
                Pow::Charging => Power {
                    battery: Some(20),
                    external_power: true,
                    low_power: false,
                },
                Pow::LowPower => Power {
                    low_power: true,
                    ..Power::on_battery(80)
                },
            };
            assert_eq!(got, Conditions { network, power }, "{net:?} / {pow:?}");
        }
    }
}

#[test]
fn the_lowest_metric_default_route_wins_and_overrides_mark_interfaces() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    tree(root, Net::Ethernet, Pow::Mains);
    // Wi-Fi as well, with a worse metric: Ethernet carries the traffic.
    let table = std::fs::read_to_string(root.join("proc/net/route")).unwrap();
    write(
        root,
        "proc/net/route",
        &format!("{table}wlp2s0\t00000000\t0101A8C0\t0003\t0\t0\t600\t00000000\t0\t0\t0\n"),
    );
    std::fs::create_dir_all(root.join("sys/class/net/wlp2s0/phy80211")).unwrap();
    assert_eq!(read(&config(root)).network, NetworkPath::ETHERNET);
    // A metered, data-saving uplink, by configuration.
    let marked = LinuxConditionsConfig {
        expensive: HashSet::from(["enp3s0".to_owned()]),
        constrained: HashSet::from(["enp3s0".to_owned()]),
        ..config(root)
    };
    assert_eq!(
        read(&marked).network,
        NetworkPath {
            kind: NetworkKind::Ethernet,
            expensive: true,
            constrained: true,
        }
    );
}

#[test]
fn missing_or_unreadable_files_degrade_to_unknown() {
    // Nothing at all: network unknown, power as on mains.
    let dir = tempfile::tempdir().unwrap();
    let got = read(&config(dir.path()));
    assert_eq!(got.network.kind, NetworkKind::Other);
    assert_eq!(got.power, Power::MAINS);

    // Files that are directories (unreadable even to root), garbage, and a
    // route table without the columns it should have.
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    tree(root, Net::Wifi, Pow::Discharging);
    for f in ["capacity", "status"] {
        let p = root.join("sys/class/power_supply/BAT0").join(f);
        std::fs::remove_file(&p).unwrap();
        std::fs::create_dir(&p).unwrap();
    }
    std::fs::create_dir_all(root.join("sys/firmware/acpi/platform_profile")).unwrap();
    let got = read(&config(root));
    assert_eq!(got.network, NetworkPath::WIFI);
    // No readable battery level; mains says offline.
    assert_eq!(
        got.power,
        Power {
            battery: None,
            external_power: false,
            low_power: false,
        }
    );
    write(
        root,
        "proc/net/route",
        "Iface\tDestination\nwlp2s0\tzz\n\u{0}\u{ff}garbage",
    );
    write(root, "sys/class/power_supply/BAT0/type", "\u{0}\u{1}");
    assert_eq!(read(&config(root)).network, NetworkPath::NONE);
    // The route table unreadable: unknown, not none.
    std::fs::remove_file(root.join("proc/net/route")).unwrap();
    std::fs::create_dir(root.join("proc/net/route")).unwrap();
    assert_eq!(read(&config(root)).network.kind, NetworkKind::Other);
    // A default route through an interface sysfs does not know.
    std::fs::remove_dir(root.join("proc/net/route")).unwrap();
    route(root, "ghost0", 0);
    assert_eq!(read(&config(root)).network.kind, NetworkKind::Other);
}

/// An IPv6 table line (as the kernel writes it) for a route to `dest` of
/// prefix length `len` through `iface`, with `metric` and `flags` in hex.
fn ipv6_line(dest: &str, len: &str, metric: &str, flags: &str, iface: &str) -> String {
    let zero = "0".repeat(32);
    format!(
        "{dest} {len} {zero} 00 fe800000000000000000000000000001 {metric} 00000001 00000000 {flags} {iface:>8}\n"
    )
}

/// The kernel's fallback in every IPv6 table: `::/0` unreachable through
/// `lo` (flags `RTF_REJECT | RTF_NONEXTHOP`, not `RTF_UP`).
fn ipv6_reject() -> String {
    ipv6_line(&"0".repeat(32), "00", "ffffffff", "00200200", "lo")
}

/// An IPv6 table with a default route through `iface` (by a gateway, up),
/// a link route beside it, and the kernel's reject route.
fn ipv6_route(root: &Path, iface: &str, metric: u32) {
    let table = format!(
        "{}{}{}",
        ipv6_line(
            "fd000000000000000000000000000000",
            "40",
            "00000100",
            "00000001",
            iface
        ),
        ipv6_line(
            &"0".repeat(32),
            "00",
            &format!("{metric:08x}"),
            "00000003",
            iface
        ),
        ipv6_reject(),
    );
    write(root, "proc/net/ipv6_route", &table);
}

#[test]
fn an_ipv6_only_default_route_is_a_network_of_its_interfaces_kind() {
    for (net, want) in [
        (Net::Wifi, NetworkPath::WIFI),
        (Net::Ethernet, NetworkPath::ETHERNET),
        (Net::Cellular, NetworkPath::CELLULAR),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        tree(root, net, Pow::Mains);
        let iface = std::fs::read_dir(root.join("sys/class/net"))
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .file_name()
            .into_string()
            .unwrap();
        // No IPv4 default route: only the loopback's.
        tree(root, Net::None, Pow::Mains);
        assert_eq!(read(&config(root)).network, NetworkPath::NONE, "{net:?}");
        ipv6_route(root, &iface, 1024);
        assert_eq!(read(&config(root)).network, want, "{net:?} over IPv6");
        // Even with no IPv4 table at all (a kernel without IPv4 routing).
        std::fs::remove_file(root.join("proc/net/route")).unwrap();
        assert_eq!(read(&config(root)).network, want, "{net:?}, no IPv4 table");
    }
}

#[test]
fn the_kernels_ipv6_reject_route_through_lo_is_no_network() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    tree(root, Net::None, Pow::Mains);
    write(root, "sys/class/net/eth0/uevent", "INTERFACE=eth0\n");
    write(root, "proc/net/ipv6_route", &ipv6_reject());
    assert_eq!(read(&config(root)).network, NetworkPath::NONE);
    // A default route through eth0 that is not up is none either.
    write(
        root,
        "proc/net/ipv6_route",
        &format!(
            "{}{}",
            ipv6_line(&"0".repeat(32), "00", "00000400", "00000002", "eth0"),
            ipv6_reject()
        ),
    );
    assert_eq!(read(&config(root)).network, NetworkPath::NONE);
    // Nor is a route to a prefix that is not ::/0.
    write(
        root,
        "proc/net/ipv6_route",
        &format!(
            "{}{}",
            ipv6_line(
                "20010db8000000000000000000000000",
                "20",
                "00000400",
                "00000003",
                "eth0"
            ),
            ipv6_reject()
        ),
    );
    assert_eq!(read(&config(root)).network, NetworkPath::NONE);
}

#[test]
fn with_both_families_the_ipv4_default_route_decides() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    // IPv4 by Ethernet; IPv6 by Wi-Fi with a lower metric: Ethernet, as
    // the IPv4 table alone says.
    tree(root, Net::Ethernet, Pow::Mains);
    write(root, "sys/class/net/wlp2s0/uevent", "DEVTYPE=wlan\n");
    std::fs::create_dir_all(root.join("sys/class/net/wlp2s0/wireless")).unwrap();
    ipv6_route(root, "wlp2s0", 1);
    assert_eq!(read(&config(root)).network, NetworkPath::ETHERNET);
    // Among IPv6 default routes, the lowest metric wins.
    tree(root, Net::None, Pow::Mains);
    write(
        root,
        "proc/net/ipv6_route",
        &format!(
            "{}{}{}",
            ipv6_line(&"0".repeat(32), "00", "00000258", "00000003", "wlp2s0"),
            ipv6_line(&"0".repeat(32), "00", "00000064", "00000003", "enp3s0"),
            ipv6_reject()
        ),
    );
    assert_eq!(read(&config(root)).network, NetworkPath::ETHERNET);
    // The IPv6 table unreadable beside an IPv4 table without a default
    // route: no network, as before.
    std::fs::remove_file(root.join("proc/net/ipv6_route")).unwrap();
    std::fs::create_dir(root.join("proc/net/ipv6_route")).unwrap();
    assert_eq!(read(&config(root)).network, NetworkPath::NONE);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_are_noticed_while_polling() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_owned();
    tree(&root, Net::Wifi, Pow::Discharging);
    let source = LinuxConditions::start(LinuxConditionsConfig {
        interval: Duration::from_millis(20),
        ..config(&root)
    });
    let seen = source.current();
    assert_eq!(seen.network, NetworkPath::WIFI);
    // The laptop is plugged in.
    write(&root, "sys/class/power_supply/AC/online", "1\n");
    write(&root, "sys/class/power_supply/BAT0/status", "Charging\n");
    let now = tokio::time::timeout(Duration::from_secs(5), source.changed(seen))
        .await
        .expect("the change is noticed");
    assert!(now.power.external_power);
    assert_eq!(now.power.battery, Some(55));
    assert_eq!(source.current(), now);
}

/// A dbus-daemon of the test's own, listening on a socket in a scratch
/// directory; stopped when dropped.
struct Bus {
    daemon: std::process::Child,
    address: String,
    _dir: tempfile::TempDir,
}

impl Bus {
    /// Starts the daemon, or says on stderr why it cannot (`dbus-daemon`
    /// missing) and returns `None`: the test is skipped.
    #[allow(clippy::print_stderr)]
    fn start() -> Option<Bus> {
        use std::io::BufRead;
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("bus.conf");
        std::fs::write(
            &config,
            format!(
                r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path={}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
"#,
                dir.path().join("bus").display()
            ),
        )
        .unwrap();
        let daemon = std::process::Command::new("dbus-daemon")
            .arg(format!("--config-file={}", config.display()))
            .args(["--nofork", "--print-address"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            // It warns that it cannot raise its descriptor limit.
            .stderr(std::process::Stdio::null())
            .spawn();
        let mut daemon = match daemon {
            Ok(daemon) => daemon,
            Err(e) => {
                eprintln!(
                    "skipped: cannot run dbus-daemon ({e}); `cargo xtask test` installs it (Debian package dbus-daemon)"
                );
                return None;
            }
        };
        // The address is printed once the daemon listens.
        let mut address = String::new();
        std::io::BufReader::new(daemon.stdout.take().unwrap())
            .read_line(&mut address)
            .unwrap();
        let address = address.trim().to_owned();
        assert!(
            address.starts_with("unix:"),
            "dbus-daemon printed {address:?}"
        );
        Some(Bus {
            daemon,
            address,
            _dir: dir,
        })
    }
}

impl Drop for Bus {
    fn drop(&mut self) {
        let _ = self.daemon.kill();
        let _ = self.daemon.wait();
    }
}

/// NetworkManager as far as the metered flag goes: `Metered` on the
/// `org.freedesktop.NetworkManager` interface, an `NMMetered` value.
struct FakeNetworkManager {
    metered: u32,
}

#[zbus::interface(name = "org.freedesktop.NetworkManager")]
impl FakeNetworkManager {
    #[zbus(property)]
    fn metered(&self) -> u32 {
        self.metered
    }
}

const NM_PATH: &str = "/org/freedesktop/NetworkManager";

/// Serves a fake NetworkManager on `bus` under its well-known name,
/// saying `metered`.
async fn network_manager(bus: &Bus, metered: u32) -> zbus::Connection {
    zbus::connection::Builder::address(bus.address.as_str())
        .unwrap()
        .serve_at(NM_PATH, FakeNetworkManager { metered })
        .unwrap()
        .name("org.freedesktop.NetworkManager")
        .unwrap()
        .build()
        .await
        .unwrap()
}

/// Changes the fake's `Metered`, announcing it with `PropertiesChanged`.
async fn set_metered(nm: &zbus::Connection, metered: u32) {
    let iface = nm
        .object_server()
        .interface::<_, FakeNetworkManager>(NM_PATH)
        .await
        .unwrap();
    iface.get_mut().await.metered = metered;
    iface
        .get()
        .await
        .metered_changed(iface.signal_emitter())
        .await
        .unwrap();
}

/// Waits until the source reports a network that is `expensive` or not.
async fn until_expensive(source: &LinuxConditions, expensive: bool, what: &str) {
    let mut rx = source.subscribe();
    tokio::time::timeout(
        Duration::from_secs(10),
        rx.wait_for(|c| c.network.expensive == expensive),
    )
    .await
    .unwrap_or_else(|_| panic!("{what}: still expensive = {}", !expensive))
    .unwrap();
}

/// NetworkManager's `Metered` makes Wi-Fi expensive and cheap again as it
/// flips (yes and guess-yes are metered; no, guess-no and unknown are
/// not), with no polling of files in between (the interval is an hour):
/// the change itself wakes the source. Before NetworkManager is on the
/// bus, and after it leaves, the files decide.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_managers_metered_flag_makes_the_network_expensive_as_it_changes() {
    let Some(bus) = Bus::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    tree(dir.path(), Net::Wifi, Pow::Mains);
    let source = LinuxConditions::start(LinuxConditionsConfig {
        interval: Duration::from_secs(3600),
        network_manager: NetworkManagerBus::Address(bus.address.clone()),
        ..config(dir.path())
    });
    // No NetworkManager on the bus (yet): Wi-Fi, cheap.
    assert_eq!(source.current().network, NetworkPath::WIFI);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(source.current().network, NetworkPath::WIFI);

    // It starts, on a phone's hotspot: metered.
    let nm = network_manager(&bus, 1).await;
    until_expensive(&source, true, "NetworkManager started saying yes").await;
    assert_eq!(source.current().network.kind, NetworkKind::Wifi);
    for (value, expensive, what) in [
        (2, false, "no"),
        (3, true, "guess-yes"),
        (4, false, "guess-no"),
        (1, true, "yes"),
        (0, false, "unknown"),
        (1, true, "yes again"),
    ] {
        set_metered(&nm, value).await;
        until_expensive(&source, expensive, what).await;
    }
    assert_eq!(
        source.current().network,
        NetworkPath {
            expensive: true,
            ..NetworkPath::WIFI
        }
    );
    // It leaves the bus: nothing says metered any more.
    drop(nm);
    until_expensive(&source, false, "NetworkManager left").await;
    assert_eq!(source.current().network, NetworkPath::WIFI);
}

/// Already metered when the source starts; an interface the user listed
/// as metered stays expensive whatever NetworkManager says; a session
/// waiting on the conditions is woken by the change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_manager_and_the_configured_interfaces_both_make_it_expensive() {
    let Some(bus) = Bus::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    tree(dir.path(), Net::Ethernet, Pow::Mains);
    let nm = network_manager(&bus, 3).await;
    let source = LinuxConditions::start(LinuxConditionsConfig {
        interval: Duration::from_secs(3600),
        network_manager: NetworkManagerBus::Address(bus.address.clone()),
        ..config(dir.path())
    });
    until_expensive(&source, true, "guess-yes at the start").await;
    let seen = source.current();
    set_metered(&nm, 4).await;
    let now = tokio::time::timeout(Duration::from_secs(10), source.changed(seen))
        .await
        .expect("a waiter hears NetworkManager's change");
    assert_eq!(now.network, NetworkPath::ETHERNET);

    let marked = LinuxConditions::start(LinuxConditionsConfig {
        interval: Duration::from_secs(3600),
        network_manager: NetworkManagerBus::Address(bus.address.clone()),
        expensive: HashSet::from(["enp3s0".to_owned()]),
        ..config(dir.path())
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(marked.current().network.expensive, "listed as metered");
}

/// A one-off reading (`ferry conditions`) asks NetworkManager once: metered
/// when it says so, as the files say when it does not or is not there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_off_reading_asks_network_manager() {
    let Some(bus) = Bus::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    tree(dir.path(), Net::Wifi, Pow::Mains);
    let asking = LinuxConditionsConfig {
        network_manager: NetworkManagerBus::Address(bus.address.clone()),
        ..config(dir.path())
    };
    let wait = Duration::from_secs(5);
    let now = scheduler::conditions::read_now(&asking, wait).await;
    assert!(!now.network.expensive, "no NetworkManager on the bus yet");
    let nm = network_manager(&bus, 1).await;
    let now = scheduler::conditions::read_now(&asking, wait).await;
    assert!(now.network.expensive, "NetworkManager says metered");
    assert!(now.network.is_connected());
    set_metered(&nm, 2).await;
    let now = scheduler::conditions::read_now(&asking, wait).await;
    assert_eq!(now.network, NetworkPath::WIFI);
    let nowhere = LinuxConditionsConfig {
        network_manager: NetworkManagerBus::Address(format!(
            "unix:path={}",
            dir.path().join("no-bus-here").display()
        )),
        ..config(dir.path())
    };
    let now = scheduler::conditions::read_now(&nowhere, wait).await;
    assert_eq!(now.network, NetworkPath::WIFI);
}

/// No bus at the address: the start does not wait, nothing fails, and the
/// files decide.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_bus_the_files_decide() {
    let dir = tempfile::tempdir().unwrap();
    tree(dir.path(), Net::Wifi, Pow::Mains);
    let nowhere = dir.path().join("no-bus-here");
    let started = std::time::Instant::now();
    let source = LinuxConditions::start(LinuxConditionsConfig {
        interval: Duration::from_millis(20),
        network_manager: NetworkManagerBus::Address(format!("unix:path={}", nowhere.display())),
        ..config(dir.path())
    });
    assert!(started.elapsed() < Duration::from_millis(500));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(source.current().network, NetworkPath::WIFI);
}

#[tokio::test]
async fn the_scripted_source_reports_what_it_is_told() {
    let source = std::sync::Arc::new(ScriptedConditions::new(Conditions::default()));
    let seen = source.current();
    let waiter = tokio::spawn({
        let source = source.clone();
        async move { source.changed(seen).await }
    });
    let cellular = Conditions {
        network: NetworkPath::CELLULAR,
        power: Power::on_battery(40),
    };
    source.set(cellular);
    let got = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("the waiter hears the change")
        .unwrap();
    assert_eq!(got, cellular);
    source.update(|c| c.power.low_power = true);
    assert!(source.current().power.low_power);
    // Already different from what the caller saw: returns at once.
    assert_eq!(source.changed(seen).await, source.current());
}
