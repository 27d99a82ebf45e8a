//! Serde glue for the `http` crate's types, which do not implement serde.
//!
//! Used through `#[serde(with = "...")]` on the model's fields; the encodings are
//! part of the persisted format, so they change only with a format version bump.

use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// `Method` as its string form.
pub(crate) mod method {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(m: &Method, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(m.as_str())
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Method, D::Error> {
        let s = String::deserialize(d)?;
        Method::from_bytes(s.as_bytes()).map_err(D::Error::custom)
    }
}

/// `StatusCode` as a number.
pub(crate) mod status {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(c: &StatusCode, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u16(c.as_u16())
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<StatusCode, D::Error> {
        let n = u16::deserialize(d)?;
        StatusCode::from_u16(n).map_err(D::Error::custom)
    }
}

/// A header value: text when it is visible ASCII, raw bytes otherwise.
#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum Value {
    Text(String),
    Bytes(Vec<u8>),
}

/// `HeaderMap` as a list of `[name, value]` pairs, keeping order and repeats.
pub(crate) mod headers {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(h: &HeaderMap, s: S) -> Result<S::Ok, S::Error> {
        let pairs: Vec<(&str, Value)> = h
            .iter()
            .map(|(k, v)| {
                let value = match v.to_str() {
                    Ok(t) => Value::Text(t.to_owned()),
                    Err(_) => Value::Bytes(v.as_bytes().to_vec()),
                };
                (k.as_str(), value)
            })
            .collect();
        pairs.serialize(s)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<HeaderMap, D::Error> {
        let pairs = Vec::<(String, Value)>::deserialize(d)?;
        let mut map = HeaderMap::with_capacity(pairs.len());
        for (k, v) in pairs {
            let name = HeaderName::from_bytes(k.as_bytes()).map_err(D::Error::custom)?;
            let value = match v {
                Value::Text(t) => HeaderValue::from_str(&t),
                Value::Bytes(b) => HeaderValue::from_bytes(&b),
            }
            .map_err(D::Error::custom)?;
            map.append(name, value);
        }
        Ok(map)
    }
}
