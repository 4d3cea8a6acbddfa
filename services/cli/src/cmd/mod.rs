//! One module per command.

pub mod apply;
pub mod compose;
pub mod down;
pub mod events;
pub mod exec;
pub mod history;
pub mod inspect;
pub mod kill;
pub mod login;
pub mod logout;
pub mod logs;
pub mod ls;
pub mod pause;
pub mod plan;
pub mod ps;
pub mod pull;
pub mod restart;
pub mod rm;
pub mod rollback;
pub mod run;
pub mod start;
pub mod stats;
pub mod stop;
pub mod system;
pub mod unpause;
pub mod volume;
