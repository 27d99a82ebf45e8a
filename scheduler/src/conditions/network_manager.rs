//! Whether NetworkManager calls the connection metered, asked and followed
//! over D-Bus.
//!
//! Why: a Linux desktop learns that a connection costs money from
//! NetworkManager, not from the interface's kind: a phone's hotspot over
//! Wi-Fi announces itself (NetworkManager guesses "metered" from it), and
//! users mark connections metered in their settings. Without this, such a
//! connection would count as cheap Wi-Fi.
//!
//! How: the `Metered` property of `org.freedesktop.NetworkManager` (an
//! `NMMetered`: 0 unknown, 1 yes, 2 no, 3 guess-yes, 4 guess-no) is read once
//! and then followed through `PropertiesChanged`, and read again whenever
//! NetworkManager (re)appears on the bus. Yes and guess-yes count as metered,
//! as GNOME counts them. No bus, or no NetworkManager on it, is not an error:
//! the flag stays "not metered" and the rest of the conditions decide.

use futures::StreamExt;
use tokio::sync::watch;
use zbus::fdo::{DBusProxy, PropertiesProxy};
use zbus::names::InterfaceName;
use zbus::proxy::CacheProperties;

use super::NetworkManagerBus;

/// NetworkManager's well-known name on the bus.
const SERVICE: &str = "org.freedesktop.NetworkManager";
/// The object holding the global state.
const PATH: &str = "/org/freedesktop/NetworkManager";
/// The interface that has `Metered`.
const INTERFACE: &str = "org.freedesktop.NetworkManager";
/// The property: the primary connection's `NMMetered`.
const METERED: &str = "Metered";

/// Whether an `NMMetered` value means metered: yes (1) and guess-yes (3).
fn is_metered(value: u32) -> bool {
    matches!(value, 1 | 3)
}

/// Keeps `metered` at whether NetworkManager on `bus` calls the connection
/// metered, until every receiver of `metered` is gone or the bus goes away
/// (then it says "not metered"). Returns at once when there is no bus.
pub(super) async fn follow(bus: NetworkManagerBus, metered: watch::Sender<bool>) {
    let connection = match connect(&bus).await {
        Ok(Some(connection)) => connection,
        Ok(None) => return,
        Err(error) => {
            tracing::debug!(?bus, %error, "no D-Bus: NetworkManager's metered flag is not followed");
            return;
        }
    };
    if let Err(error) = watch(&connection, &metered).await {
        tracing::debug!(?bus, %error, "stopped following NetworkManager's metered flag");
    }
    set(&metered, None);
}

/// Whether NetworkManager on `bus` calls the connection metered now, asked
/// once; `None` when there is no bus or no NetworkManager to answer.
pub(super) async fn ask(bus: &NetworkManagerBus) -> Option<bool> {
    let connection = match connect(bus).await {
        Ok(Some(connection)) => connection,
        Ok(None) => return None,
        Err(error) => {
            tracing::debug!(?bus, %error, "no D-Bus: NetworkManager's metered flag is not asked");
            return None;
        }
    };
    let properties = PropertiesProxy::builder(&connection)
        .destination(SERVICE)
        .ok()?
        .path(PATH)
        .ok()?
        .cache_properties(CacheProperties::No)
        .build()
        .await
        .ok()?;
    read(&properties).await.map(is_metered)
}

/// A connection to `bus`; `None` when told not to ask.
async fn connect(bus: &NetworkManagerBus) -> zbus::Result<Option<zbus::Connection>> {
    let builder = match bus {
        NetworkManagerBus::System => zbus::connection::Builder::system()?,
        NetworkManagerBus::Address(address) => {
            zbus::connection::Builder::address(address.as_str())?
        }
        NetworkManagerBus::Off => return Ok(None),
    };
    builder.build().await.map(Some)
}

/// Follows the property on `connection` into `metered` until every receiver
/// is gone (`Ok`) or the connection ends.
async fn watch(connection: &zbus::Connection, metered: &watch::Sender<bool>) -> zbus::Result<()> {
    let properties = PropertiesProxy::builder(connection)
        .destination(SERVICE)?
        .path(PATH)?
        .cache_properties(CacheProperties::No)
        .build()
        .await?;
    // Listen first, then read: a change in between is not lost.
    let mut changes = properties
        .receive_properties_changed_with_args(&[(0, INTERFACE)])
        .await?;
    let mut owners = DBusProxy::new(connection)
        .await?
        .receive_name_owner_changed_with_args(&[(0, SERVICE)])
        .await?;
    set(metered, read(&properties).await);
    loop {
        tokio::select! {
            () = metered.closed() => return Ok(()),
            change = changes.next() => {
                let Some(change) = change else { return Ok(()) };
                let args = change.args()?;
                if let Some(value) = args.changed_properties().get(METERED) {
                    set(metered, u32::try_from(value).ok());
                } else if args.invalidated_properties().contains(&METERED) {
                    set(metered, read(&properties).await);
                }
            }
            owner = owners.next() => {
                let Some(owner) = owner else { return Ok(()) };
                // Started (again): ask; gone: nothing says metered.
                let now = match owner.args()?.new_owner().as_ref() {
                    Some(_) => read(&properties).await,
                    None => None,
                };
                set(metered, now);
            }
        }
    }
}

/// The property now; `None` when NetworkManager is not there to answer.
async fn read(properties: &PropertiesProxy<'_>) -> Option<u32> {
    let interface = InterfaceName::from_static_str_unchecked(INTERFACE);
    match properties.get(interface, METERED).await {
        Ok(value) => u32::try_from(value).ok(),
        Err(error) => {
            tracing::debug!(%error, "no NetworkManager on the bus");
            None
        }
    }
}

/// Records the `NMMetered` value `value` (`None`: no answer) in `metered`.
fn set(metered: &watch::Sender<bool>, value: Option<u32>) {
    let now = value.is_some_and(is_metered);
    tracing::debug!(?value, metered = now, "NetworkManager's metered flag");
    metered.send_if_modified(|m| std::mem::replace(m, now) != now);
}
