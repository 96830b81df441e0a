//! Layered configuration: built-in defaults, then a TOML file, then the
//! environment, then the command line.
//!
//! Systemd units set a file; a developer or a test overrides one key with an
//! environment variable or a flag without writing a file.

use std::path::Path;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::Serialize;
use serde::de::DeserializeOwned;
use thiserror::Error;

/// A configuration that cannot be read or does not fit the service's schema.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The named file does not exist.
    #[error("configuration file {0} not found")]
    Missing(String),
    /// A layer has a value of the wrong type, an unknown key, or bad TOML.
    #[error("invalid configuration: {0}")]
    Invalid(#[from] Box<figment::Error>),
}

/// Builds `C` for `service` from its defaults, `file`, the environment
/// (`FISHCHAT_<SERVICE>_<KEY>`, nested keys joined by `__`) and `overrides`
/// (the command-line options that were given; absent ones must serialize as
/// nothing, e.g. with `skip_serializing_if = "Option::is_none"`).
pub fn load_config<C>(
    service: &str,
    file: Option<&Path>,
    overrides: &impl Serialize,
) -> Result<C, ConfigError>
where
    C: Default + Serialize + DeserializeOwned,
{
    let mut figment = Figment::from(Serialized::defaults(C::default()));
    if let Some(file) = file {
        if !file.exists() {
            return Err(ConfigError::Missing(file.display().to_string()));
        }
        figment = figment.merge(Toml::file(file));
    }
    let prefix = format!("FISHCHAT_{}_", service.to_uppercase().replace('-', "_"));
    figment
        .merge(Env::prefixed(&prefix).split("__"))
        .merge(Serialized::defaults(overrides))
        .extract()
        .map_err(|err| ConfigError::Invalid(Box::new(err)))
}

#[cfg(test)]
// figment::Jail's closures must return its own (large) error type.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Default, Serialize, Deserialize, PartialEq)]
    #[serde(default, deny_unknown_fields)]
    struct Sample {
        listen: String,
        limit: u32,
        name: String,
    }

    #[derive(Serialize)]
    struct Cli {
        #[serde(skip_serializing_if = "Option::is_none")]
        limit: Option<u32>,
    }

    #[test]
    fn layers_override_in_order() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "s.toml",
                "listen = \"0.0.0.0:1\"\nlimit = 5\nname = \"file\"",
            )?;
            jail.set_env("FISHCHAT_SAMPLE_SVC_NAME", "env");
            let cfg: Sample = load_config(
                "sample-svc",
                Some(Path::new("s.toml")),
                &Cli { limit: Some(9) },
            )
            .map_err(|e| e.to_string())?;
            assert_eq!(
                cfg,
                Sample {
                    listen: "0.0.0.0:1".into(),
                    limit: 9,
                    name: "env".into()
                }
            );
            let cfg: Sample =
                load_config("sample-svc", None, &Cli { limit: None }).map_err(|e| e.to_string())?;
            assert_eq!(cfg.limit, 0);
            Ok(())
        });
    }

    #[test]
    fn unknown_keys_and_missing_files_are_errors() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("bad.toml", "listn = \"x\"")?;
            let err = load_config::<Sample>("s", Some(Path::new("bad.toml")), &Cli { limit: None })
                .expect_err("unknown key accepted");
            assert!(err.to_string().contains("listn"), "{err}");
            let err =
                load_config::<Sample>("s", Some(Path::new("nope.toml")), &Cli { limit: None })
                    .expect_err("missing file accepted");
            assert!(matches!(err, ConfigError::Missing(_)));
            Ok(())
        });
    }
}
