//! Maps and sets keyed by task id.

use std::collections::{HashMap, HashSet};

use transfer_core::TaskId;

/// A map keyed by task id. Ids are the engine's own (counted, or random in
/// a shared session), never chosen by a peer, so they need no
/// flood-resistant hash: Fx costs a multiply where SipHash runs rounds, on
/// every event of every task.
pub(crate) type IdMap<V> = HashMap<TaskId, V, rustc_hash::FxBuildHasher>;
/// A set of task ids; see [`IdMap`].
pub(crate) type IdSet = HashSet<TaskId, rustc_hash::FxBuildHasher>;
