//! Lifecycle events (change detected, compiled, live, rejected, draining,
//! released, removed), broadcast to whoever listens: the admin API streams
//! them to `GET /events` clients (`admin/events.rs`).

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use tokio::sync::{broadcast, watch};

/// Events kept for slow readers before they skip ahead.
const BACKLOG: usize = 1024;

/// The sending side; cheap to clone.
#[derive(Clone)]
pub struct Events {
    sender: broadcast::Sender<Arc<str>>,
    /// Set at shutdown: every open stream ends, so none holds up the drain.
    closed: Arc<watch::Sender<bool>>,
}

impl Default for Events {
    fn default() -> Self {
        Self {
            sender: broadcast::channel(BACKLOG).0,
            closed: Arc::new(watch::Sender::new(false)),
        }
    }
}

impl Events {
    /// Publishes event `kind` about `project`, with extra JSON `fields`.
    pub(crate) fn emit(&self, kind: &str, project: &str, fields: Value) {
        if self.sender.receiver_count() == 0 {
            return;
        }
        let at = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        let mut event = json!({ "event": kind, "project": project, "at": at });
        if let (Some(event), Value::Object(fields)) = (event.as_object_mut(), fields) {
            event.extend(fields);
        }
        let _ = self
            .sender
            .send(format!("event: {kind}\ndata: {event}\n\n").into());
    }

    /// Ends every open stream.
    pub(crate) fn close(&self) {
        self.closed.send_replace(true);
    }

    /// A receiver of every event from now on, and one that turns true when
    /// streams must end (shutdown).
    pub(crate) fn subscribe(&self) -> (broadcast::Receiver<Arc<str>>, watch::Receiver<bool>) {
        (self.sender.subscribe(), self.closed.subscribe())
    }
}
