//! Workspace-level integration tests of loam; the tests are in `tests/`.
