//! Tests of the fill engine against the fake hub of `testkit`: one file per concern.

mod blocking;
mod completion;
mod failover;
mod fds;
mod observer;
mod own_pieces;
mod panics;
mod priority;
mod progress;
mod reload;
mod tokens;
