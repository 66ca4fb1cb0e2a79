//! Tests of the fill engine against the fake hub of `testkit`: one file per concern.

mod blocking;
mod completion;
mod fds;
mod panics;
mod priority;
mod progress;
mod tokens;
