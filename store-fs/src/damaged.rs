//! A damaged state database fails in words, never with a panic: every call
//! into redb runs under [`guarded`], which turns a panic into an error
//! naming the file (redb may panic on a file changed under it, where it
//! trusts what it wrote), and [`damaged`] says what to do about it.
//!
//! A caught panic is not printed by the process's panic hook either: the
//! first guarded call installs a hook that stays silent for a panic on a
//! thread inside [`guarded`] and hands every other panic to the hook that
//! was there before. The panic is logged (tracing, at error level) and
//! returned as the error instead.

use std::cell::Cell;
use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::sync::Once;

use transfer_core::{StoreError, StoreErrorKind};

/// What to do about a damaged database, said in every error about one.
pub(crate) const WHAT_TO_DO: &str = "run `ferry repair` to set it aside and start a fresh \
     database with every record that still reads";

/// The error for the database at `path`, damaged as `detail` says.
pub(crate) fn damaged(path: &Path, detail: impl std::fmt::Display) -> StoreError {
    StoreError::new(
        StoreErrorKind::Corrupt,
        format!(
            "the state database {} is damaged ({detail}): {WHAT_TO_DO}",
            path.display()
        ),
    )
}

/// `e` as an error about the database at `path`: a [`StoreErrorKind::Corrupt`]
/// one becomes [`damaged`], others are left as they are.
pub(crate) fn name_damage(path: &Path, e: StoreError) -> StoreError {
    if e.kind() == StoreErrorKind::Corrupt {
        damaged(path, e)
    } else {
        e
    }
}

thread_local! {
    /// How deep this thread is in [`guarded`] calls.
    static GUARDED: Cell<u32> = const { Cell::new(0) };
}

/// Runs `f` for the database at `path`, `doing` what it says: a panic in
/// it becomes a [`damaged`] error.
pub(crate) fn guarded<T>(
    path: &Path,
    doing: &str,
    f: impl FnOnce() -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    catch(f).unwrap_or_else(|message| {
        tracing::error!(database = %path.display(), panic = %message, "the database panicked {doing}");
        Err(damaged(path, format_args!("{doing}: {message}")))
    })
}

/// Runs `f`, giving the message of a panic in it as the error, without
/// the panic hook printing it.
pub(crate) fn catch<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    install_quiet_hook();
    GUARDED.with(|g| g.set(g.get() + 1));
    let result = std::panic::catch_unwind(AssertUnwindSafe(f));
    GUARDED.with(|g| g.set(g.get().saturating_sub(1)));
    result.map_err(|panic| panic_message(panic.as_ref()))
}

/// The text a panic carried.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned())
}

/// Installs, once per process, the hook that is silent for guarded panics.
fn install_quiet_hook() {
    static INSTALLED: Once = Once::new();
    INSTALLED.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if GUARDED.with(Cell::get) == 0 {
                previous(info);
            }
        }));
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_becomes_an_error_that_names_the_file_and_what_to_do() {
        let path = Path::new("/state/ferry.redb");
        let result: Result<(), StoreError> =
            guarded(path, "reading", || panic!("entered unreachable code"));
        let e = result.unwrap_err();
        assert_eq!(e.kind(), StoreErrorKind::Corrupt);
        let text = e.to_string();
        assert!(text.contains("/state/ferry.redb"), "{text}");
        assert!(text.contains("reading: entered unreachable code"), "{text}");
        assert!(text.contains("ferry repair"), "{text}");
        // Unguarded again: the count is back to zero.
        assert_eq!(GUARDED.with(Cell::get), 0);
        assert_eq!(guarded(path, "x", || Ok(7)).ok(), Some(7));
    }
}
