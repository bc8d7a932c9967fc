//! The API's request and answer types: those of `boxoffice-api`, shared with the
//! node, so that what this client reads is what the node writes.

pub use boxoffice_api::*;
