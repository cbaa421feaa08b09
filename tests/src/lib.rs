//! Cross-crate and real-process tests for solo. The tests live in `tests/tests/`; this library
//! holds the helpers they share.
