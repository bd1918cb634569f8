//! Sealing provider credentials at rest: AES-256-GCM with a fresh random 96-bit nonce per
//! seal and associated data that binds each ciphertext to its row (`user_id || provider || id`),
//! so a ciphertext copied onto another row, user or provider fails to open.
//!
//! Every sealed row records the `key_version` of the master key that sealed it: a short
//! fingerprint of the key itself, so `crypto.old_keys` needs no numbering and `key rotate`
//! knows which rows still need re-sealing.

use crate::secret::Secret;
use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};
use std::fmt;
use std::path::Path;
use uuid::Uuid;
use zeroize::Zeroize;

/// Length of an AES-GCM nonce in bytes (96 bits).
pub const NONCE_LEN: usize = 12;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "the master key must be base64 of exactly 32 bytes, but it decodes to {0} bytes; \
         generate one with `openssl rand -base64 32`"
    )]
    WrongKeyLength(usize),
    #[error("the master key is not valid base64; generate one with `openssl rand -base64 32`")]
    NotBase64,
    #[error(
        "no configured master key has version {0}; add the key that sealed it to crypto.old_keys"
    )]
    UnknownKeyVersion(u32),
    #[error("the credential could not be decrypted: it was not sealed for this row with this key")]
    OpenFailed,
    #[error("the stored nonce is {0} bytes, expected 12")]
    BadNonce(usize),
    #[error("sealing failed")]
    SealFailed,
    #[error("master key file {path}: {message}")]
    KeyFile { path: String, message: String },
}

/// A 256-bit master key and its version fingerprint.
#[derive(Clone)]
pub struct MasterKey {
    key: Secret<[u8; 32]>,
    version: u32,
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MasterKey")
            .field("version", &self.version)
            .field("key", &"[redacted]")
            .finish()
    }
}

impl MasterKey {
    pub fn from_bytes(bytes: &[u8]) -> Result<MasterKey, Error> {
        let key: [u8; 32] = bytes
            .try_into()
            .map_err(|_| Error::WrongKeyLength(bytes.len()))?;
        Ok(MasterKey::from_array(key))
    }

    fn from_array(key: [u8; 32]) -> MasterKey {
        let digest = Sha256::new()
            .chain_update(b"byok-proxy master key version v1")
            .chain_update(key)
            .finalize();
        let version =
            u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]) & 0x7fff_ffff;
        MasterKey {
            key: Secret::new(key),
            version,
        }
    }

    /// Parses base64 (standard or URL-safe, padded or not) of exactly 32 bytes.
    ///
    /// # Errors
    /// Not base64, or not 32 bytes once decoded. The error never contains the input.
    pub fn from_base64(text: &str) -> Result<MasterKey, Error> {
        let text = text.trim();
        let engines = [
            &base64::engine::general_purpose::STANDARD,
            &base64::engine::general_purpose::STANDARD_NO_PAD,
            &base64::engine::general_purpose::URL_SAFE,
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        ];
        let bytes = engines
            .iter()
            .find_map(|e| e.decode(text).ok())
            .map(Secret::new)
            .ok_or(Error::NotBase64)?;
        MasterKey::from_bytes(bytes.expose())
    }

    /// A fresh random key.
    pub fn generate() -> MasterKey {
        let mut raw = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut raw);
        let key = MasterKey::from_array(raw);
        raw.zeroize();
        key
    }

    /// The key as base64, for `BYOK_MASTER_KEY`. Only the key-generation CLI prints it.
    pub fn to_base64(&self) -> Secret<String> {
        Secret::new(base64::engine::general_purpose::STANDARD.encode(self.key.expose()))
    }

    pub fn version(&self) -> u32 {
        self.version
    }

    /// Reads the development key file, creating it (32 random bytes, mode 0600) if missing.
    /// Returns the key and whether it was just created.
    ///
    /// # Errors
    /// The file cannot be created or read, or does not hold exactly 32 bytes.
    pub fn load_or_create_file(path: &Path) -> Result<(MasterKey, bool), Error> {
        let err = |message: String| Error::KeyFile {
            path: path.display().to_string(),
            message,
        };
        if let Some(dir) = path.parent() {
            if !dir.as_os_str().is_empty() {
                std::fs::create_dir_all(dir).map_err(|e| err(e.to_string()))?;
            }
        }
        let key = MasterKey::generate();
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        match opts.open(path) {
            Ok(mut f) => {
                use std::io::Write;
                f.write_all(key.key.expose())
                    .and_then(|_| f.sync_all())
                    .map_err(|e| err(e.to_string()))?;
                Ok((key, true))
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let bytes = Secret::new(std::fs::read(path).map_err(|e| err(e.to_string()))?);
                let key = MasterKey::from_bytes(bytes.expose()).map_err(|_| {
                    err(format!(
                        "holds {} bytes, expected exactly 32 raw bytes",
                        bytes.expose().len()
                    ))
                })?;
                Ok((key, false))
            }
            Err(e) => Err(err(e.to_string())),
        }
    }
}

/// A sealed credential as stored: ciphertext (with tag), nonce and the sealing key's version.
#[derive(Clone, PartialEq, Eq)]
pub struct Sealed {
    pub ciphertext: Vec<u8>,
    pub nonce: Vec<u8>,
    pub key_version: u32,
}

impl fmt::Debug for Sealed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sealed")
            .field("ciphertext_len", &self.ciphertext.len())
            .field("key_version", &self.key_version)
            .finish()
    }
}

/// The associated data binding a ciphertext to its row. UUIDs are fixed-size, so the
/// concatenation is unambiguous.
pub fn aad(user_id: Uuid, provider: &str, key_id: Uuid) -> Vec<u8> {
    let mut v = Vec::with_capacity(32 + provider.len());
    v.extend_from_slice(user_id.as_bytes());
    v.extend_from_slice(provider.as_bytes());
    v.extend_from_slice(key_id.as_bytes());
    v
}

/// The current master key plus older ones still accepted for opening.
#[derive(Clone, Debug)]
pub struct Vault {
    current: MasterKey,
    old: Vec<MasterKey>,
}

impl Vault {
    pub fn new(current: MasterKey, old: Vec<MasterKey>) -> Vault {
        let old = old
            .into_iter()
            .filter(|k| k.version != current.version)
            .collect();
        Vault { current, old }
    }

    pub fn current_version(&self) -> u32 {
        self.current.version
    }

    fn key(&self, version: u32) -> Result<&MasterKey, Error> {
        if self.current.version == version {
            return Ok(&self.current);
        }
        self.old
            .iter()
            .find(|k| k.version == version)
            .ok_or(Error::UnknownKeyVersion(version))
    }

    /// Seals `plaintext` under the current key with a fresh random nonce.
    ///
    /// # Errors
    /// Only if the cipher itself fails.
    pub fn seal(&self, plaintext: &[u8], aad: &[u8]) -> Result<Sealed, Error> {
        let cipher = Aes256Gcm::new(self.current.key.expose().into());
        let mut nonce = [0u8; NONCE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let ciphertext = cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad,
                },
            )
            .map_err(|_| Error::SealFailed)?;
        Ok(Sealed {
            ciphertext,
            nonce: nonce.to_vec(),
            key_version: self.current.version,
        })
    }

    /// Opens a sealed credential; the plaintext is zeroized when dropped.
    ///
    /// # Errors
    /// Unknown key version, a malformed nonce, or a ciphertext that does not authenticate
    /// against this row's associated data.
    pub fn open(&self, sealed: &Sealed, aad: &[u8]) -> Result<Secret<Vec<u8>>, Error> {
        if sealed.nonce.len() != NONCE_LEN {
            return Err(Error::BadNonce(sealed.nonce.len()));
        }
        let key = self.key(sealed.key_version)?;
        let cipher = Aes256Gcm::new(key.key.expose().into());
        cipher
            .decrypt(
                Nonce::from_slice(&sealed.nonce),
                Payload {
                    msg: &sealed.ciphertext,
                    aad,
                },
            )
            .map(Secret::new)
            .map_err(|_| Error::OpenFailed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_roundtrip_and_aad_binding() {
        let v = Vault::new(MasterKey::generate(), vec![]);
        let (u, k) = (Uuid::new_v4(), Uuid::new_v4());
        let s = v
            .seal(b"{\"apiKey\":\"sk-1\"}", &aad(u, "openai", k))
            .unwrap();
        assert_eq!(
            v.open(&s, &aad(u, "openai", k)).unwrap().expose(),
            b"{\"apiKey\":\"sk-1\"}"
        );
        assert!(matches!(
            v.open(&s, &aad(Uuid::new_v4(), "openai", k)),
            Err(Error::OpenFailed)
        ));
        assert!(matches!(
            v.open(&s, &aad(u, "anthropic", k)),
            Err(Error::OpenFailed)
        ));
        assert!(matches!(
            v.open(&s, &aad(u, "openai", Uuid::new_v4())),
            Err(Error::OpenFailed)
        ));
    }

    #[test]
    fn nonces_are_fresh() {
        let v = Vault::new(MasterKey::generate(), vec![]);
        let a = v.seal(b"x", b"a").unwrap();
        let b = v.seal(b"x", b"a").unwrap();
        assert_ne!(a.nonce, b.nonce);
        assert_ne!(a.ciphertext, b.ciphertext);
    }

    #[test]
    fn old_keys_open_and_unknown_versions_fail() {
        let old = MasterKey::generate();
        let new = MasterKey::generate();
        let s = Vault::new(old.clone(), vec![]).seal(b"x", b"a").unwrap();
        assert!(Vault::new(new.clone(), vec![old]).open(&s, b"a").is_ok());
        assert!(matches!(
            Vault::new(new, vec![]).open(&s, b"a"),
            Err(Error::UnknownKeyVersion(_))
        ));
    }

    #[test]
    fn key_length_is_enforced() {
        assert!(matches!(
            MasterKey::from_base64("c2hvcnQ="),
            Err(Error::WrongKeyLength(5))
        ));
        assert!(matches!(
            MasterKey::from_base64("!!!"),
            Err(Error::NotBase64)
        ));
        let k = MasterKey::generate();
        assert_eq!(
            MasterKey::from_base64(k.to_base64().expose())
                .unwrap()
                .version(),
            k.version()
        );
        assert!(!format!("{k:?}").contains(k.to_base64().expose().as_str()));
    }

    #[test]
    fn key_file_is_created_0600_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data/master.key");
        let (a, created) = MasterKey::load_or_create_file(&path).unwrap();
        assert!(created);
        let (b, created) = MasterKey::load_or_create_file(&path).unwrap();
        assert!(!created);
        assert_eq!(a.version(), b.version());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
