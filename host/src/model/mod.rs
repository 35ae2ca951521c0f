//! What a project is: its manifest, how it is found on disk, its versions,
//! and the registry whose routing snapshot the request path reads.

pub mod build;
pub(crate) mod compute;
pub mod discovery;
pub mod events;
pub mod manifest;
pub mod metrics;
pub mod oci_ref;
pub mod project;
pub mod registry;
pub mod router;
pub mod version;
