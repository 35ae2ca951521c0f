//! The request path: accept a connection, route each request to a project,
//! and run it in a fresh instance of that project's current version.

pub mod body_limit;
pub mod error;
pub mod handler;
pub mod invoke;
pub mod listener;
pub mod responses;
pub mod slow_lane;
