//! A TCP relay that keeps one address while the server behind it comes
//! and goes. A test that takes a server down and brings it back points
//! clients at the relay and the relay at each new server (on a fresh port):
//! no port is ever released and bound again, which another process could
//! take in between.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use tokio::{
    net::{TcpListener, TcpStream},
    sync::watch,
    task::JoinHandle,
};

/// A relay on 127.0.0.1 with a free port. While it has no target, a
/// connection is closed as soon as it is accepted, as a peer that is down
/// looks to a client.
#[derive(Debug)]
pub struct Relay {
    addr: SocketAddr,
    target: Arc<Mutex<Option<SocketAddr>>>,
    /// Bumped on every change of target: relayed connections end with it.
    generation: watch::Sender<u64>,
    accepting: JoinHandle<()>,
}

impl Relay {
    /// Starts a relay to `target` (`None`: down until [`Relay::point_to`]),
    /// inside a tokio runtime.
    pub async fn start(target: Option<SocketAddr>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the relay");
        let addr = listener.local_addr().expect("relay address");
        let target = Arc::new(Mutex::new(target));
        let (generation, _) = watch::channel(0);
        let accepting = tokio::spawn(accept(
            listener,
            Arc::clone(&target),
            generation.subscribe(),
        ));
        Self {
            addr,
            target,
            generation,
            accepting,
        }
    }

    /// The address clients are given.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Relays new connections to `target`; connections relayed so far end.
    pub fn point_to(&self, target: SocketAddr) {
        self.set(Some(target));
    }

    /// Ends every relayed connection and closes new ones at once, until
    /// [`Relay::point_to`].
    pub fn cut(&self) {
        self.set(None);
    }

    fn set(&self, target: Option<SocketAddr>) {
        *self.target.lock().expect("relay lock") = target;
        self.generation.send_modify(|generation| *generation += 1);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.accepting.abort();
        self.generation.send_modify(|generation| *generation += 1);
    }
}

async fn accept(
    listener: TcpListener,
    target: Arc<Mutex<Option<SocketAddr>>>,
    generation: watch::Receiver<u64>,
) {
    while let Ok((mut inbound, _)) = listener.accept().await {
        let Some(to) = *target.lock().expect("relay lock") else {
            continue;
        };
        let mut changed = generation.clone();
        changed.mark_unchanged();
        tokio::spawn(async move {
            let Ok(mut outbound) = TcpStream::connect(to).await else {
                return;
            };
            tokio::select! {
                _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                _ = changed.changed() => {}
            }
        });
    }
}
