//! One loaded value (a kernel set, a layer engine) per live CUDA object — a context or a stream —
//! keyed by the object's address. The value holds its object, so each lookup first drops the
//! values whose object nobody else holds: a context or stream stays alive past its last candle
//! device only until the next lookup, never for the life of the process.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, Weak};

use candle_core::Result;

/// A loaded value and how many references to its object the value itself holds.
struct Loaded<K, V> {
    anchor: Weak<K>,
    value: Arc<V>,
    own_refs: usize,
}

impl<K, V> Loaded<K, V> {
    /// Nobody but the value holds the object any more.
    fn orphaned(&self) -> bool {
        self.anchor.strong_count() <= self.own_refs
    }
}

/// The cache; a `static` per kind of value.
pub(crate) struct DeviceCache<K, V> {
    loaded: OnceLock<Mutex<HashMap<usize, Loaded<K, V>>>>,
}

impl<K, V> DeviceCache<K, V> {
    pub const fn new() -> Self {
        Self {
            loaded: OnceLock::new(),
        }
    }

    /// The value for `anchor`, loaded by `load` on first use.
    pub fn get(&self, anchor: &Arc<K>, load: impl FnOnce() -> Result<V>) -> Result<Arc<V>> {
        let mut map = self
            .loaded
            .get_or_init(|| Mutex::new(HashMap::new()))
            .lock()
            .map_err(|_| {
                candle_core::Error::Msg("dgs kernel cache poisoned by an earlier panic".into())
            })?;
        map.retain(|_, loaded| !loaded.orphaned());
        let key = Arc::as_ptr(anchor) as usize;
        if let Some(loaded) = map.get(&key) {
            return Ok(loaded.value.clone());
        }
        let before = Arc::strong_count(anchor);
        let value = Arc::new(load()?);
        // Saturating: another thread dropping a reference during `load` must not underflow.
        let own_refs = Arc::strong_count(anchor).saturating_sub(before);
        map.insert(
            key,
            Loaded {
                anchor: Arc::downgrade(anchor),
                value: value.clone(),
                own_refs,
            },
        );
        Ok(value)
    }
}
