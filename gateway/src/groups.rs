//! Subscription group configs (UPDATE_AND_CREATE_SUBSCRIPTIONGROUP): RocketMQ
//! keeps a group's retry limit (`retryMaxTimes`) here, and old clients (before
//! 3.4.9, the C++ client among them) get their limit from it, not from the
//! request. Persisted as `config/subscriptionGroup.json` in RocketMQ's shape.

use std::collections::BTreeMap;
use std::path::PathBuf;

use node_l::snapshot::{read_json, write_json, FileError};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct GroupFile {
    subscription_group_table: BTreeMap<String, Value>,
}

/// The table.
pub struct SubscriptionGroups {
    path: PathBuf,
    table: Mutex<BTreeMap<String, Value>>,
}

impl SubscriptionGroups {
    /// Load `path` (empty if missing).
    pub fn open(path: PathBuf) -> Result<Self, FileError> {
        let f: GroupFile = read_json(&path)?.unwrap_or_default();
        Ok(Self {
            path,
            table: Mutex::new(f.subscription_group_table),
        })
    }

    /// Create or replace a group's config (the JSON body of code 200).
    pub fn put(&self, config: Value) -> Result<(), String> {
        let name = config
            .get("groupName")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
            .ok_or("subscription group config without groupName")?
            .to_owned();
        let mut t = self.table.lock();
        t.insert(name, config);
        self.persist(&t).map_err(|e| e.to_string())
    }

    /// Delete a group's config.
    pub fn remove(&self, name: &str) -> Result<(), String> {
        let mut t = self.table.lock();
        if t.remove(name).is_some() {
            self.persist(&t).map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// A group's `retryMaxTimes`, if configured.
    pub fn retry_max_times(&self, name: &str) -> Option<i32> {
        self.table
            .lock()
            .get(name)?
            .get("retryMaxTimes")?
            .as_i64()
            .map(|n| n as i32)
    }

    /// Every group's config as RocketMQ's GET_ALL_SUBSCRIPTIONGROUP_CONFIG body.
    pub fn all_json(&self) -> Value {
        serde_json::json!({
            "subscriptionGroupTable": self.table.lock().clone(),
            "dataVersion": {"timestamp": 0, "counter": 0},
        })
    }

    fn persist(&self, t: &BTreeMap<String, Value>) -> Result<(), FileError> {
        write_json(
            &self.path,
            &GroupFile {
                subscription_group_table: t.clone(),
            },
        )
    }
}
