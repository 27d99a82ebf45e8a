//! The commands, one file each (`get` and `put` share one: both run their
//! transfers and wait for them). `main` parses the command line and calls
//! one of these.

pub(crate) mod add;
pub(crate) mod change;
pub(crate) mod conditions;
pub(crate) mod help;
pub(crate) mod ls;
pub(crate) mod repair;
pub(crate) mod run;
pub(crate) mod transfer;
