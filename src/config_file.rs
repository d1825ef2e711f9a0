//! A node's configuration as plain data, for node binaries that read it from a file in
//! whatever format they like (TOML, JSON, YAML: anything serde reads).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::core::NodeId;
use crate::error::Result;

/// [`Config`] as data: every field but `id` and `listen` is optional and defaults as
/// [`Config::new`] does. Unknown fields are refused, so a typo is an error, not a default.
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// // In a real binary: the text of a file, read with the format crate of your choice.
/// let file: quorate::ConfigFile = serde_json::from_str(r#"{
///     "id": 1,
///     "listen": "0.0.0.0:7001",
///     "advertise": "10.0.0.1:7001",
///     "peers": { "2": "10.0.0.2:7001", "3": "10.0.0.3:7001" },
///     "cluster_id": "bank",
///     "data_dir": "/var/lib/bank/node-1",
///     "election_timeout_ms": 500
/// }"#)?;
/// let config = file.into_config()?;
/// assert_eq!(config.id(), 1);
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// This node's id (not 0).
    pub id: NodeId,
    /// The address it listens on (peers and remote clients alike).
    pub listen: SocketAddr,
    /// See [`Config::advertise`].
    #[serde(default)]
    pub advertise: Option<SocketAddr>,
    /// See [`Config::metadata`].
    #[serde(default)]
    pub metadata: Option<String>,
    /// The other initial voters, by id (see [`Config::peer`]).
    #[serde(default)]
    pub peers: BTreeMap<NodeId, SocketAddr>,
    /// Start with no configuration and wait to be added (see [`Config::join`]).
    #[serde(default)]
    pub join: bool,
    /// See [`Config::cluster_id`].
    #[serde(default)]
    pub cluster_id: Option<String>,
    /// See [`Config::cluster_secret`]. Keep the file private, or leave this out and set
    /// the secret from the environment.
    #[serde(default)]
    pub cluster_secret: Option<String>,
    /// See [`Config::data_dir`]; without it the node runs in memory mode.
    #[serde(default)]
    pub data_dir: Option<PathBuf>,
    /// See [`Config::election_timeout`].
    #[serde(default)]
    pub election_timeout_ms: Option<u64>,
    /// See [`Config::heartbeat_interval`].
    #[serde(default)]
    pub heartbeat_interval_ms: Option<u64>,
    /// See [`Config::request_timeout`].
    #[serde(default)]
    pub request_timeout_ms: Option<u64>,
    /// See [`Config::client_queue`].
    #[serde(default)]
    pub client_queue: Option<usize>,
    /// See [`Config::snapshot_threshold`]: `[entries, bytes]`.
    #[serde(default)]
    pub snapshot_threshold: Option<(u64, u64)>,
    /// See [`Config::max_frame_bytes`].
    #[serde(default)]
    pub max_frame_bytes: Option<usize>,
}

impl ConfigFile {
    /// The [`Config`] these settings describe, validated.
    pub fn into_config(self) -> Result<Config> {
        let mut c = Config::new(self.id, self.listen).members(self.peers);
        let ms = Duration::from_millis;
        if let Some(addr) = self.advertise {
            c = c.advertise(addr);
        }
        if let Some(metadata) = self.metadata {
            c = c.metadata(metadata);
        }
        if self.join {
            c = c.join();
        }
        if let Some(id) = self.cluster_id {
            c = c.cluster_id(id);
        }
        if let Some(secret) = self.cluster_secret {
            c = c.cluster_secret(secret);
        }
        if let Some(dir) = self.data_dir {
            c = c.data_dir(dir);
        }
        if let Some(t) = self.election_timeout_ms {
            c = c.election_timeout(ms(t));
        }
        if let Some(t) = self.heartbeat_interval_ms {
            c = c.heartbeat_interval(ms(t));
        }
        if let Some(t) = self.request_timeout_ms {
            c = c.request_timeout(ms(t));
        }
        if let Some(n) = self.client_queue {
            c = c.client_queue(n);
        }
        if let Some((entries, bytes)) = self.snapshot_threshold {
            c = c.snapshot_threshold(entries, bytes);
        }
        if let Some(bytes) = self.max_frame_bytes {
            c = c.max_frame_bytes(bytes);
        }
        c.validate()?;
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_setting_reaches_the_config_and_bad_ones_are_refused() {
        let file = ConfigFile {
            id: 2,
            listen: "127.0.0.1:7002".parse().unwrap(),
            advertise: Some("10.0.0.2:7002".parse().unwrap()),
            metadata: Some("api=10.0.0.2:8002".into()),
            peers: [(1, "10.0.0.1:7001".parse().unwrap())].into(),
            join: false,
            cluster_id: Some("bank".into()),
            cluster_secret: Some("sixteen bytes at least".into()),
            data_dir: None,
            election_timeout_ms: Some(800),
            heartbeat_interval_ms: Some(100),
            request_timeout_ms: Some(2000),
            client_queue: Some(128),
            snapshot_threshold: Some((1000, 1 << 20)),
            max_frame_bytes: None,
        };
        let c = file.clone().into_config().unwrap();
        assert_eq!((c.id, c.advertised(), c.cluster_id.as_str()), (2, "10.0.0.2:7002".parse().unwrap(), "bank"));
        assert_eq!((c.client_queue, c.request_timeout), (128, Duration::from_secs(2)));
        assert!(c.cluster_key.is_secret());
        let short_secret = ConfigFile { cluster_secret: Some("short".into()), ..file.clone() };
        assert!(short_secret.into_config().is_err());
        let joining_with_peers = ConfigFile { join: true, ..file };
        assert!(joining_with_peers.into_config().is_err());
    }
}
