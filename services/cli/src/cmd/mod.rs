//! One module per command.

pub mod events;
pub mod login;
pub mod logout;
pub mod pull;
pub mod system;
