//! Mutex access that cannot panic: a poisoned lock (a panic while it was held, already caught
//! and reported per image) still guards consistent-enough maps of caches and counters, so the
//! guard is taken back instead of propagating the panic to every later caller.

use std::sync::{Mutex, MutexGuard, PoisonError};

pub trait LockExt<T> {
    fn locked(&self) -> MutexGuard<'_, T>;
}

impl<T> LockExt<T> for Mutex<T> {
    fn locked(&self) -> MutexGuard<'_, T> {
        self.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
