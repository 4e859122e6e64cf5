//! Drives `asap-core` over mio sockets on servers. Filled by the transport-mio issue (#5).
