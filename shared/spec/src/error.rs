//! A spec error: one line, `file:line:column: message`.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecError {
    pub file: String,
    /// 1-based; 0 when the position is not known.
    pub line: u32,
    pub column: u32,
    pub message: String,
}

impl SpecError {
    pub fn new(file: &str, pos: Option<(u32, u32)>, message: impl Into<String>) -> SpecError {
        let (line, column) = pos.unwrap_or((0, 0));
        SpecError {
            file: file.to_string(),
            line,
            column,
            message: message.into(),
        }
    }
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line > 0 {
            write!(
                f,
                "{}:{}:{}: {}",
                self.file, self.line, self.column, self.message
            )
        } else {
            write!(f, "{}: {}", self.file, self.message)
        }
    }
}

impl std::error::Error for SpecError {}
