//! Username/password authentication against a password file of salted
//! argon2id hashes (`user:$argon2id$...` per line, written by `ferrymq passwd`).

use std::path::Path;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use hashbrown::HashMap;

/// Errors loading or writing a password file.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The file could not be read or written.
    #[error("password file {path}: {source}")]
    Io {
        /// File.
        path: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// A line is not `user:hash`.
    #[error("password file line {line}: {reason}")]
    Format {
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// Hashing failed.
    #[error("hashing failed: {0}")]
    Hash(String),
}

/// Argon2id with a small memory cost: devices reconnect in storms, and a
/// broker verifying thousands of CONNECTs per second cannot spend 19 MiB and
/// tens of milliseconds on each; the salt and the hash still make offline
/// guessing expensive.
fn hasher() -> Argon2<'static> {
    let params = Params::new(4096, 2, 1, None).unwrap_or_default();
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// Hash `password` with a fresh random salt (PHC string).
pub fn hash_password(password: &str) -> Result<String, AuthError> {
    let mut salt_bytes = [0u8; 16];
    getrandom::fill(&mut salt_bytes).map_err(|e| AuthError::Hash(e.to_string()))?;
    let salt = SaltString::encode_b64(&salt_bytes).map_err(|e| AuthError::Hash(e.to_string()))?;
    hasher()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| AuthError::Hash(e.to_string()))
}

/// Users and their password hashes.
#[derive(Debug, Default, Clone)]
pub struct PasswordFile {
    users: HashMap<String, String>,
}

impl PasswordFile {
    /// Parse the file's text.
    pub fn parse(text: &str) -> Result<Self, AuthError> {
        let mut users = HashMap::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((user, hash)) = line.split_once(':') else {
                return Err(AuthError::Format {
                    line: i + 1,
                    reason: "expected user:hash".into(),
                });
            };
            if PasswordHash::new(hash).is_err() {
                return Err(AuthError::Format {
                    line: i + 1,
                    reason: "not a PHC password hash".into(),
                });
            }
            users.insert(user.to_string(), hash.to_string());
        }
        Ok(Self { users })
    }

    /// Load from a file.
    pub fn load(path: &Path) -> Result<Self, AuthError> {
        let text = std::fs::read_to_string(path).map_err(|source| AuthError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text)
    }

    /// Add or replace a user and write the file back (`ferrymq passwd`).
    pub fn set_user(path: &Path, user: &str, password: &str) -> Result<(), AuthError> {
        let mut f = if path.exists() {
            Self::load(path)?
        } else {
            Self::default()
        };
        if user.is_empty() || user.contains(':') {
            return Err(AuthError::Format {
                line: 0,
                reason: "user names must be non-empty and without ':'".into(),
            });
        }
        f.users.insert(user.to_string(), hash_password(password)?);
        let mut names: Vec<_> = f.users.keys().cloned().collect();
        names.sort();
        let mut out = String::new();
        for n in names {
            out.push_str(&format!("{n}:{}\n", f.users[&n]));
        }
        std::fs::write(path, out).map_err(|source| AuthError::Io {
            path: path.display().to_string(),
            source,
        })
    }

    /// Whether `password` is the password of `user`.
    pub fn verify(&self, user: &str, password: &[u8]) -> bool {
        let Some(hash) = self.users.get(user) else {
            return false;
        };
        let Ok(parsed) = PasswordHash::new(hash) else {
            return false;
        };
        hasher().verify_password(password, &parsed).is_ok()
    }

    /// Number of users.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// True if no user is defined.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_then_verify() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("passwd");
        PasswordFile::set_user(&p, "alice", "s3cret").unwrap();
        PasswordFile::set_user(&p, "bob", "hunter2").unwrap();
        let f = PasswordFile::load(&p).unwrap();
        assert_eq!(f.len(), 2);
        assert!(f.verify("alice", b"s3cret"));
        assert!(!f.verify("alice", b"hunter2"));
        assert!(!f.verify("carol", b"s3cret"));
        // Salted: the same password hashes differently.
        assert_ne!(hash_password("x").unwrap(), hash_password("x").unwrap());
        assert!(PasswordFile::parse("alice:notahash").is_err());
    }
}
