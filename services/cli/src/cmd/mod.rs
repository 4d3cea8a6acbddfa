//! One module per command.

pub mod events;
pub mod system;
