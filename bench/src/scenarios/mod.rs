//! One module per scenario. Each measures berth first, then every installed peer doing the
//! same work, in the same run.

pub mod compose;
pub mod create_exec;
pub mod mass_start;
pub mod memory;
pub mod network;
pub mod pull;
pub mod run_true;
pub mod unpack;

use crate::env::Berth;
use crate::fixtures::Fixtures;
use crate::peers::Peers;

pub struct Ctx<'a> {
    pub berth: &'a Berth,
    pub peers: &'a Peers,
    pub fixtures: &'a Fixtures,
    pub runs: usize,
    pub warmup: usize,
    /// What berth runs: `busybox:latest` (loaded image) or `--rootfs DIR` (the same busybox
    /// root filesystem unpacked, when the image could not be loaded).
    pub berth_image: String,
}

impl Ctx<'_> {
    /// A Compose service body line for berth's busybox.
    pub fn berth_compose_image(&self) -> String {
        match self.berth_image.strip_prefix("--rootfs ") {
            Some(dir) => format!("x-berth: {{rootfs: {dir}}}"),
            None => format!("image: {}", self.berth_image),
        }
    }
}

pub const ALL: [&str; 8] = [
    "run", "create", "start50", "compose", "network", "pull", "unpack", "memory",
];
