//! One module per command.

pub mod events;
pub mod login;
pub mod logout;
pub mod pull;
pub mod system;
pub mod exec;
pub mod inspect;
pub mod kill;
pub mod logs;
pub mod pause;
pub mod ps;
pub mod restart;
pub mod rm;
pub mod run;
pub mod start;
pub mod stats;
pub mod stop;
pub mod unpause;
