//! Free ports that stay ours: a port released and bound again can be taken
//! by another process in between.

use std::{net::SocketAddr, sync::OnceLock};

use tokio::net::{TcpListener, TcpSocket};

/// A free port on 127.0.0.1, bound but not listening: connections to it
/// are refused, as to a server that is down, until [`FreePort::listen`]
/// turns it into the server's listener. Nothing else can bind it
/// meanwhile.
#[derive(Debug)]
pub struct FreePort {
    socket: TcpSocket,
    addr: SocketAddr,
}

impl FreePort {
    /// Binds a fresh port.
    pub fn new() -> Self {
        let socket = TcpSocket::new_v4().expect("a TCP socket");
        socket
            .bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .expect("bind 127.0.0.1:0");
        let addr = socket.local_addr().expect("a bound address");
        Self { socket, addr }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The port as a listener (inside a tokio runtime).
    pub fn listen(self) -> TcpListener {
        self.socket.listen(1024).expect("listen on a bound port")
    }
}

impl Default for FreePort {
    fn default() -> Self {
        Self::new()
    }
}

/// An address on 127.0.0.1 where nothing listens, held for the life of the
/// test process: a peer that is down, whose port no one else can take.
pub fn unserved_addr() -> SocketAddr {
    static PORT: OnceLock<FreePort> = OnceLock::new();
    PORT.get_or_init(FreePort::new).addr()
}
