//! The request path: accept a connection on one of the request workers,
//! route each request to a project, and run it on a fresh instance's state of
//! that project's current version.

pub(crate) mod affinity;
pub(crate) mod body_limit;
pub(crate) mod connection;
pub(crate) mod error;
pub mod handler;
pub mod invoke;
pub(crate) mod listener;
mod ready_body;
pub(crate) mod request_id;
pub(crate) mod responses;
pub(crate) mod slow_lane;
pub(crate) mod workers;
