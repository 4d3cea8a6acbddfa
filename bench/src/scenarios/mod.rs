//! One module per scenario. Each measures berth first, then every installed peer doing the
//! same work, in the same run.

pub mod compose;
pub mod mass_start;
pub mod memory;
pub mod pull;
pub mod run_true;

use crate::env::Berth;
use crate::fixtures::Fixtures;
use crate::peers::Peers;

pub struct Ctx<'a> {
    pub berth: &'a Berth,
    pub peers: &'a Peers,
    pub fixtures: &'a Fixtures,
    pub runs: usize,
    pub warmup: usize,
}

pub const ALL: [&str; 5] = ["run", "start50", "compose", "pull", "memory"];
