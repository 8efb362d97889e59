//! What the pods webhook knows about migration runs: an in-memory cache of the MigrationRuns
//! (a kube-rs reflector), so admitting a pod never calls the API server.

use std::sync::Arc;

use futures::StreamExt;
use kube::core::{ApiResource, DynamicObject};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client};

use crate::mutate::once::migration_run_resource;

/// Whether the migration run of a fingerprint has succeeded in a namespace.
pub trait RunLookup: Send + Sync {
    fn succeeded(&self, namespace: &str, fingerprint: &str) -> bool;
}

/// MigrationRuns of every namespace, kept current by a watch.
pub struct RunCache {
    store: Store<DynamicObject>,
    resource: ApiResource,
}

impl RunCache {
    /// Starts the watch in the background; until its first list completes, no run counts as
    /// succeeded (pods keep their waiter, which is always safe).
    pub fn start(client: Client) -> Arc<RunCache> {
        let resource = migration_run_resource();
        let writer = reflector::store::Writer::new(resource.clone());
        let store = writer.as_reader();
        let api: Api<DynamicObject> = Api::all_with(client, &resource);
        let stream =
            reflector::reflector(writer, watcher::watcher(api, watcher::Config::default()))
                .default_backoff();
        tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            while let Some(event) = stream.next().await {
                if let Err(e) = event {
                    tracing::warn!(error = %e, "watching MigrationRuns failed; retrying");
                }
            }
        });
        Arc::new(RunCache { store, resource })
    }
}

impl RunLookup for RunCache {
    fn succeeded(&self, namespace: &str, fingerprint: &str) -> bool {
        let key = ObjectRef::new_with(fingerprint, self.resource.clone()).within(namespace);
        self.store.get(&key).is_some_and(|run| {
            run.data.pointer("/status/phase").and_then(|p| p.as_str()) == Some("Succeeded")
        })
    }
}
