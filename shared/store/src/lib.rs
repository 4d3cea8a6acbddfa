//! The content store of a node. See docs/architecture.md.
