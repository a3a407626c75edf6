//! Placeholder: tests for this class are added with its fix.
