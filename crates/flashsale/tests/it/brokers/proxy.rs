//! A TCP proxy in front of a broker, which the test turns into a broker that is down (every
//! connection cut, new ones closed at once) or hung (connections kept open, nothing relayed, as
//! behind a partition), and back. The shared brokers are never stopped: their sinks reach them
//! through one of these.

use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reach {
    Up,
    Refusing,
    Hanging,
}

pub struct Proxy {
    pub addr: SocketAddr,
    reach: watch::Sender<Reach>,
}

impl Proxy {
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("proxy binds");
        let addr = listener.local_addr().expect("proxy address");
        let reach = watch::Sender::new(Reach::Up);
        let watching = reach.clone();
        tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                // Subscribed before the look: a change made after it still reaches the relay.
                let changes = watching.subscribe();
                let now = *changes.borrow();
                match now {
                    Reach::Refusing => drop(inbound),
                    Reach::Hanging => {
                        tokio::spawn(hold_until_up(vec![inbound], changes));
                    }
                    Reach::Up => {
                        tokio::spawn(relay(inbound, target, changes));
                    }
                }
            }
        });
        Self { addr, reach }
    }

    pub fn set(&self, reach: Reach) {
        self.reach.send_replace(reach);
    }
}

async fn relay(mut inbound: TcpStream, target: SocketAddr, mut changes: watch::Receiver<Reach>) {
    let Ok(mut outbound) = TcpStream::connect(target).await else {
        return;
    };
    let changed = tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => None,
        reach = changes.wait_for(|reach| *reach != Reach::Up) => reach.ok().map(|reach| *reach),
    };
    if changed == Some(Reach::Hanging) {
        // Nothing read or written any more; the peers find out only when the sockets close,
        // once the network "heals".
        hold_until_up(vec![inbound, outbound], changes).await;
    }
}

async fn hold_until_up(sockets: Vec<TcpStream>, mut changes: watch::Receiver<Reach>) {
    let _ = changes.wait_for(|reach| *reach == Reach::Up).await;
    drop(sockets);
}
