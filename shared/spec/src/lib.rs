//! The Compose file format. See docs/architecture.md.
