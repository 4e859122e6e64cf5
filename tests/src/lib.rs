//! Test harnesses shared by the workspace-level tests.
