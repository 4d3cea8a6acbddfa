//! Per-pull progress: bytes done and total per layer, read by the event ticker.

use berth_proto::puller::{LayerProgress, LayerState};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

#[derive(Default)]
pub struct Progress {
    layers: Mutex<Vec<LayerProgress>>,
    changed: AtomicBool,
}

impl Progress {
    pub fn set_layers(&self, layers: &[(String, u64)]) {
        *self.layers.lock().unwrap() = layers
            .iter()
            .map(|(d, size)| LayerProgress {
                digest: d.clone(),
                done: 0,
                total: *size,
                state: LayerState::Waiting,
            })
            .collect();
        self.changed.store(true, Ordering::Relaxed);
    }

    fn with(&self, idx: usize, f: impl FnOnce(&mut LayerProgress)) {
        if let Some(l) = self.layers.lock().unwrap().get_mut(idx) {
            f(l);
            self.changed.store(true, Ordering::Relaxed);
        }
    }

    pub fn set(&self, idx: usize, done: u64, state: LayerState) {
        self.with(idx, |l| {
            l.done = done;
            l.state = state;
        });
    }

    pub fn state(&self, idx: usize, state: LayerState) {
        self.with(idx, |l| l.state = state);
    }

    pub fn add(&self, idx: usize, n: u64) {
        self.with(idx, |l| l.done += n);
    }

    /// Layers, bytes done and bytes total.
    pub fn snapshot(&self) -> (Vec<LayerProgress>, u64, u64) {
        let l = self.layers.lock().unwrap().clone();
        let done = l.iter().map(|x| x.done).sum();
        let total = l.iter().map(|x| x.total).sum();
        (l, done, total)
    }

    /// Whether anything changed since the last call.
    pub fn take_changed(&self) -> bool {
        self.changed.swap(false, Ordering::Relaxed)
    }
}
