//! The inbox: requests from the center, durable before they are acknowledged.
//!
//! The box subscribes to `{root}/gw/{gw}/request` at QoS 1 with manual acknowledgements. A
//! request is written to the sled tree `uplink.inbox` and flushed, and only then is its PUBACK
//! sent; a request that arrives while the box is busy, restarting or crashing is therefore
//! either acknowledged and on disk, or redelivered by the broker (the session is persistent).
//! The consumer (sharing) takes entries in arrival order with [`InboxReader::next`] and deletes
//! each with [`Inbox::done`] once its outcome (reply, audit) is durable itself. Entries left at
//! a restart are handed out again: request handling must be idempotent per request id (a
//! replayed `jti` is rejected, which is itself idempotent).

use std::sync::Arc;

use tokio::sync::Notify;

/// Most requests held unprocessed; beyond this new ones are not acknowledged (the broker keeps
/// them) until the consumer catches up.
pub const MAX_PENDING: usize = 1024;

/// The durable inbox shared by the uplink worker (writer) and sharing (reader).
#[derive(Clone)]
pub struct Inbox {
    db: sled::Db,
    tree: sled::Tree,
    notify: Arc<Notify>,
}

/// Why a request could not be taken in.
#[derive(Debug, thiserror::Error)]
pub enum InboxError {
    /// sled failed.
    #[error("inbox: {0}")]
    Sled(#[from] sled::Error),
    /// The consumer is far behind.
    #[error("inbox full ({MAX_PENDING} requests unprocessed)")]
    Full,
}

impl Inbox {
    /// Opens the inbox tree in `db`.
    pub fn open(db: &sled::Db) -> Result<Inbox, InboxError> {
        Ok(Inbox {
            db: db.clone(),
            tree: db.open_tree("uplink.inbox")?,
            notify: Arc::new(Notify::new()),
        })
    }

    /// Stores a request durably; returns its key. Call before acknowledging it.
    pub fn put(&self, payload: &[u8]) -> Result<u64, InboxError> {
        if self.tree.len() >= MAX_PENDING {
            return Err(InboxError::Full);
        }
        // Keys only ever grow (sled's persistent id generator), even when the tree empties, so
        // a reader's position stays valid.
        let key = self.db.generate_id()?;
        self.tree.insert(key.to_be_bytes(), payload)?;
        self.tree.flush()?;
        self.notify.notify_one();
        Ok(key)
    }

    /// Deletes a processed request.
    pub fn done(&self, key: u64) -> Result<(), InboxError> {
        self.tree.remove(key.to_be_bytes())?;
        self.tree.flush()?;
        Ok(())
    }

    /// Deletes every pending request (unpairing). Returns how many there were.
    pub fn clear(&self) -> Result<usize, InboxError> {
        let n = self.tree.len();
        self.tree.clear()?;
        self.tree.flush()?;
        Ok(n)
    }

    /// Requests not yet done.
    pub fn len(&self) -> usize {
        self.tree.len()
    }

    /// Whether every request is done.
    pub fn is_empty(&self) -> bool {
        self.tree.is_empty()
    }

    /// A reader that starts with the oldest pending request.
    pub fn reader(&self) -> InboxReader {
        InboxReader {
            inbox: self.clone(),
            next_key: 0,
        }
    }
}

fn decode_key(k: &[u8]) -> u64 {
    k.try_into().map(u64::from_be_bytes).unwrap_or(0)
}

/// Hands out pending requests in order (one consumer).
pub struct InboxReader {
    inbox: Inbox,
    next_key: u64,
}

impl InboxReader {
    /// The next request `(key, payload)`, waiting for one if none is pending.
    pub async fn next(&mut self) -> (u64, Vec<u8>) {
        loop {
            let notified = self.inbox.notify.notified();
            if let Ok(Some((k, v))) = self
                .inbox
                .tree
                .range(self.next_key.to_be_bytes()..)
                .next()
                .transpose()
            {
                let key = decode_key(&k);
                self.next_key = key + 1;
                return (key, v.to_vec());
            }
            notified.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn requests_come_out_in_order_and_survive_a_reopen_until_done() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = sled::open(dir.path()).unwrap();
            let inbox = Inbox::open(&db).unwrap();
            let a = inbox.put(b"a").unwrap();
            inbox.put(b"b").unwrap();
            let mut r = inbox.reader();
            let (k, v) = r.next().await;
            assert_eq!((k, v.as_slice()), (a, &b"a"[..]));
            inbox.done(k).unwrap();
        }
        let db = sled::open(dir.path()).unwrap();
        let inbox = Inbox::open(&db).unwrap();
        let mut r = inbox.reader();
        let (kb, b) = r.next().await;
        assert_eq!(b, b"b".to_vec());
        inbox.done(kb).unwrap();
        // The tree is empty now; keys keep growing after a reopen and after emptying, so the
        // reader (already past `b`) still sees what comes next.
        let kc = inbox.put(b"c").unwrap();
        assert!(kc > kb);
        assert_eq!(r.next().await, (kc, b"c".to_vec()));
    }

    #[tokio::test]
    async fn a_waiting_reader_wakes_when_a_request_arrives() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let inbox = Inbox::open(&db).unwrap();
        let mut r = inbox.reader();
        let waiter = tokio::spawn(async move { r.next().await });
        tokio::task::yield_now().await;
        inbox.put(b"x").unwrap();
        let got = tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got.1, b"x");
    }
}
