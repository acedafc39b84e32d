//! Broker settings: an optional TOML file plus `FERRYMQ_*` environment
//! overrides (`__` separates sections, e.g. `FERRYMQ_STORE__FLUSHDISKTYPE`).
//!
//! The `config` crate lowercases environment keys, while `StoreConfig` uses
//! RocketMQ's camelCase names, so keys are matched to the struct's field names
//! ignoring case, `_` and `-`. Unknown keys are rejected rather than silently
//! ignored: a typo in a durability setting must not fall back to a default.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use config::{Config, Environment, File, FileFormat, Map, Value, ValueKind};
use gateway::GatewayConfig;
use node_a::NodeAConfig;
use node_l::LConfig;
use serde::de::{self, Deserialize, Visitor};
use shared_store::StoreConfig;

/// Everything the broker reads from its configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The `[store]` section.
    pub store: StoreConfig,
    /// The `[mqtt]` section (the A node).
    pub mqtt: NodeAConfig,
    /// The `[broker]` section (the L role: topics, offsets, sessions).
    pub broker: LConfig,
    /// The `[gateway]` section (RocketMQ NameServer and Broker roles).
    pub gateway: GatewayConfig,
}

/// Where settings come from.
pub struct Sources<'a> {
    /// TOML file, if any (must exist when given).
    pub file: Option<&'a Path>,
    /// Default root for data; the store lives in `<data_dir>/store` unless
    /// `storePath` is set.
    pub data_dir: &'a Path,
    /// Environment to read instead of the process's (tests).
    pub env: Option<HashMap<String, String>>,
}

impl Settings {
    /// Load file then environment; environment wins.
    pub fn load(src: Sources<'_>) -> Result<Self> {
        let mut store = Map::new();
        let mut mqtt = Map::new();
        let mut broker = Map::new();
        let mut gateway = Map::new();
        if let Some(path) = src.file {
            let file = Config::builder()
                .add_source(File::from(path).format(FileFormat::Toml).required(true))
                .build()
                .with_context(|| format!("reading config file {}", path.display()))?;
            let origin = path.display().to_string();
            merge_section(&mut store, &file, "store", store_fields(), &origin)?;
            merge_section(&mut mqtt, &file, "mqtt", mqtt_fields(), &origin)?;
            merge_section(
                &mut broker,
                &file,
                "broker",
                fields_of::<LConfig>(),
                &origin,
            )?;
        }
        let env = Environment::with_prefix("FERRYMQ")
            .prefix_separator("_")
            .separator("__")
            .source(src.env);
        let env = Config::builder()
            .add_source(env)
            .build()
            .context("reading FERRYMQ_* environment variables")?;
        merge_section(&mut store, &env, "store", store_fields(), "the environment")?;
        merge_section(&mut mqtt, &env, "mqtt", mqtt_fields(), "the environment")?;
        merge_section(
            &mut broker,
            &env,
            "broker",
            fields_of::<LConfig>(),
            "the environment",
        )?;
        let broker: LConfig = Value::new(None, ValueKind::Table(broker))
            .try_deserialize()
            .context("invalid [broker] settings")?;
        merge_section(
            &mut gateway,
            &env,
            "gateway",
            fields_of::<GatewayConfig>(),
            "the environment",
        )?;
        let gateway: GatewayConfig = Value::new(None, ValueKind::Table(gateway))
            .try_deserialize()
            .context("invalid [gateway] settings")?;
        let mqtt: NodeAConfig = Value::new(None, ValueKind::Table(mqtt))
            .try_deserialize()
            .context("invalid [mqtt] settings")?;

        let has_path = store.contains_key("storePath");
        let mut store: StoreConfig = Value::new(None, ValueKind::Table(store))
            .try_deserialize()
            .context("invalid [store] settings")?;
        if !has_path {
            store.store_path = src.data_dir.join("store");
        }
        Ok(Self {
            store,
            mqtt,
            broker,
            gateway,
        })
    }
}

/// Copy `section` of `cfg` into `out` under canonical field names.
fn merge_section(
    out: &mut Map<String, Value>,
    cfg: &Config,
    section: &str,
    fields: &'static [&'static str],
    origin: &str,
) -> Result<()> {
    let table = match cfg.get_table(section) {
        Ok(t) => t,
        Err(config::ConfigError::NotFound(_)) => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("[{section}] in {origin}")),
    };
    for (key, value) in table {
        let Some(field) = canonical(fields, &key) else {
            bail!(
                "unknown setting {section}.{key} in {origin}; known settings: {}",
                fields.join(", ")
            );
        };
        out.insert(field.to_string(), value);
    }
    Ok(())
}

fn canonical(fields: &'static [&'static str], key: &str) -> Option<&'static str> {
    let squash = |s: &str| {
        s.chars()
            .filter(|c| *c != '_' && *c != '-')
            .flat_map(char::to_lowercase)
            .collect::<String>()
    };
    let want = squash(key);
    fields.iter().copied().find(|f| squash(f) == want)
}

/// The serde field names of `StoreConfig`, learned from its own derive so new
/// store settings are accepted without touching this file.
fn store_fields() -> &'static [&'static str] {
    fields_of::<StoreConfig>()
}

fn mqtt_fields() -> &'static [&'static str] {
    fields_of::<NodeAConfig>()
}

/// The field names a config struct deserializes (read off its serde impl).
fn fields_of<'de, T: Deserialize<'de>>() -> &'static [&'static str] {
    let mut probe = FieldProbe(None);
    let _ = T::deserialize(&mut probe);
    probe.0.unwrap_or(&[])
}

/// A deserializer that only records the field list a struct asks for.
struct FieldProbe(Option<&'static [&'static str]>);

impl<'de> de::Deserializer<'de> for &mut FieldProbe {
    type Error = de::value::Error;

    fn deserialize_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, Self::Error> {
        Err(de::Error::custom("field probe"))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.0 = Some(fields);
        Err(de::Error::custom("field probe"))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map enum identifier ignored_any
    }
}

/// Default data directory.
pub fn default_data_dir() -> PathBuf {
    PathBuf::from("./data")
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared_store::FlushDiskType;
    use std::io::Write;

    fn env(pairs: &[(&str, &str)]) -> Option<HashMap<String, String>> {
        Some(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn probe_finds_store_fields() {
        let f = store_fields();
        assert!(f.contains(&"flushDiskType"));
        assert!(f.contains(&"storePath"));
    }

    #[test]
    fn defaults_put_store_under_data_dir() {
        let s = Settings::load(Sources {
            file: None,
            data_dir: Path::new("/d"),
            env: env(&[]),
        })
        .expect("load");
        assert_eq!(s.store.store_path, PathBuf::from("/d/store"));
        assert_eq!(s.store.flush_disk_type, FlushDiskType::AsyncFlush);
    }

    #[test]
    fn env_overrides_file_and_keys_ignore_case() {
        let mut f = tempfile::NamedTempFile::new().expect("temp file");
        writeln!(
            f,
            "[store]\nflushDiskType = \"ASYNC_FLUSH\"\nmappedFileSizeCommitLog = 65536\nstorePath = \"/s\""
        )
        .expect("write");
        let s = Settings::load(Sources {
            file: Some(f.path()),
            data_dir: Path::new("/d"),
            env: env(&[
                ("FERRYMQ_STORE__FLUSHDISKTYPE", "SYNC_FLUSH"),
                ("FERRYMQ_STORE__SYNC_FLUSH_TIMEOUT", "42"),
                ("UNRELATED", "x"),
            ]),
        })
        .expect("load");
        assert_eq!(s.store.flush_disk_type, FlushDiskType::SyncFlush);
        assert_eq!(s.store.sync_flush_timeout, 42);
        assert_eq!(s.store.mapped_file_size_commit_log, 65536);
        assert_eq!(s.store.store_path, PathBuf::from("/s"));
    }

    #[test]
    fn unknown_key_is_an_error() {
        let err = Settings::load(Sources {
            file: None,
            data_dir: Path::new("/d"),
            env: env(&[("FERRYMQ_STORE__FLUSHDISKTYP", "SYNC_FLUSH")]),
        })
        .expect_err("typo must be rejected");
        assert!(format!("{err:#}").contains("flushdisktyp"), "{err:#}");
    }
}

#[cfg(test)]
mod example_file {
    use super::*;

    #[test]
    fn example_config_parses_to_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("ferrymq.example.toml");
        let s = Settings::load(Sources {
            file: Some(&path),
            data_dir: Path::new("/tmp/x"),
            env: Some(HashMap::new()),
        })
        .unwrap();
        let d = StoreConfig::default();
        assert_eq!(
            s.store.mapped_file_size_commit_log,
            d.mapped_file_size_commit_log
        );
        assert_eq!(s.store.flush_disk_type, d.flush_disk_type);
        assert_eq!(
            s.mqtt.max_queued_messages,
            NodeAConfig::default().max_queued_messages
        );
        assert_eq!(s.mqtt.listen, NodeAConfig::default().listen);
        assert!(s.mqtt.tls.is_none());
        assert_eq!(s.broker, LConfig::default());
        assert_eq!(s.gateway, GatewayConfig::default());
    }
}
