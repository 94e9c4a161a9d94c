//! A shutdown signal that long-lived tasks race every await against.
//!
//! Leaf layer: imports nothing of this crate. The daemon holds the one [`ShutdownTrigger`] and
//! hands clones of [`Shutdown`] to every worker (ingest, cameras, uplink, pairing, sharing, web).
//! A dropped trigger also means stop, so a daemon that unwinds never leaves a worker waiting.
//!
//! Why not a `CancellationToken`: tokio-util would be a dependency for eleven lines, and a
//! `watch<bool>` already gives "resolves at once if it already fired" and "the sender is gone".

use tokio::sync::watch;

/// A signal that long-lived tasks race every await against.
#[derive(Clone, Debug)]
pub struct Shutdown(watch::Receiver<bool>);

/// The sending side of a [`Shutdown`].
#[derive(Debug)]
pub struct ShutdownTrigger(watch::Sender<bool>);

impl Shutdown {
    /// A new signal and its trigger.
    pub fn new() -> (ShutdownTrigger, Shutdown) {
        let (tx, rx) = watch::channel(false);
        (ShutdownTrigger(tx), Shutdown(rx))
    }

    /// Resolves once shutdown has been triggered (at once if it already was).
    pub async fn wait(&self) {
        let mut rx = self.0.clone();
        // An error means the trigger was dropped, which also means: stop.
        let _ = rx.wait_for(|v| *v).await;
    }

    /// Whether shutdown has been triggered.
    pub fn is_triggered(&self) -> bool {
        *self.0.borrow()
    }
}

impl ShutdownTrigger {
    /// Tells every holder of the matching [`Shutdown`] to stop.
    pub fn trigger(&self) {
        let _ = self.0.send(true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn wait_resolves_after_trigger_and_at_once_when_already_triggered() {
        let (trigger, shutdown) = Shutdown::new();
        assert!(!shutdown.is_triggered());
        let waiter = tokio::spawn({
            let s = shutdown.clone();
            async move { s.wait().await }
        });
        trigger.trigger();
        waiter.await.unwrap();
        assert!(shutdown.is_triggered());
        shutdown.wait().await;
    }

    #[tokio::test]
    async fn a_dropped_trigger_also_means_stop() {
        let (trigger, shutdown) = Shutdown::new();
        drop(trigger);
        shutdown.wait().await;
    }
}
