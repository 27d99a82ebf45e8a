//! Identifiers of sessions, tasks and completion events.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::spec::SpecError;

/// A session's stable identifier, such as `"com.example.sync"`.
///
/// Building a session with an identifier that already has state attaches to
/// that state. Identifiers are 1–128 characters of ASCII letters, digits and
/// `.`, `-`, `_`, so they are safe as file names and object-key segments.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SessionId(String);

impl SessionId {
    /// Validates and wraps a session identifier.
    pub fn new(id: impl Into<String>) -> Result<Self, SpecError> {
        let id = id.into();
        let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_');
        if id.is_empty() || id.len() > 128 || !id.chars().all(ok_char) || id.starts_with('.') {
            return Err(SpecError::InvalidSessionId(id));
        }
        Ok(SessionId(id))
    }

    /// The identifier as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for SessionId {
    type Error = SpecError;
    fn try_from(s: String) -> Result<Self, SpecError> {
        SessionId::new(s)
    }
}

impl From<SessionId> for String {
    fn from(id: SessionId) -> String {
        id.0
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

macro_rules! hex_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(u64);

        impl $name {
            /// Wraps a raw value (normally drawn from a random source by the scheduler).
            pub const fn from_u64(v: u64) -> Self {
                $name(v)
            }
            /// The raw value.
            pub const fn as_u64(self) -> u64 {
                self.0
            }
        }

        impl fmt::Display for $name {
            /// Sixteen lower-case hex digits.
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:016x}", self.0)
            }
        }

        impl FromStr for $name {
            type Err = SpecError;
            fn from_str(s: &str) -> Result<Self, SpecError> {
                if s.len() != 16 {
                    return Err(SpecError::InvalidId(s.to_owned()));
                }
                u64::from_str_radix(s, 16)
                    .map($name)
                    .map_err(|_| SpecError::InvalidId(s.to_owned()))
            }
        }
    };
}

hex_id!(
    /// A task's stable identifier, unique within its session.
    TaskId
);
hex_id!(
    /// A completion event's identifier in the session's outbox.
    EventId
);

/// A random 64-bit number from the standard library's randomly keyed hasher
/// and the time: for values that must differ between writes and processes
/// (multipart boundaries, lease beats), not for secrets.
pub fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish()
}
