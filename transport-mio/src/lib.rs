//! Drives `asap-core` over mio sockets on servers, and the `asap` command's building
//! blocks. The socket event loop is the transport-mio issue's work; what is here now is
//! the topology report behind `asap topology`.

pub mod report;
