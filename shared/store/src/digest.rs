//! `sha256:<64 lowercase hex>` content digests.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest as _, Sha256};
use std::fmt;
use std::str::FromStr;

use crate::StoreError;

/// A content digest, `sha256:<64 lowercase hex>` (the only algorithm berth accepts).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Digest {
    hex: String,
}

impl Digest {
    pub const SHA256: &'static str = "sha256";

    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Digest {
        Digest::from_sha256(Sha256::digest(bytes).as_slice())
    }

    /// A digest from the 32 raw bytes of a SHA-256 hash.
    pub fn from_sha256(raw: &[u8]) -> Digest {
        Digest {
            hex: hex::encode(raw),
        }
    }

    /// A digest from 64 lowercase hex characters (without the `sha256:` prefix).
    pub fn from_hex(hex: &str) -> Result<Digest, StoreError> {
        check_hex(hex).map_err(|reason| StoreError::InvalidDigest {
            input: hex.to_string(),
            reason,
        })?;
        Ok(Digest {
            hex: hex.to_string(),
        })
    }

    pub fn algorithm(&self) -> &str {
        Self::SHA256
    }

    pub fn hex(&self) -> &str {
        &self.hex
    }

    /// The first 12 hex characters, as people are shown ids.
    pub fn short(&self) -> &str {
        &self.hex[..12]
    }
}

fn check_hex(hex: &str) -> Result<(), String> {
    if hex.len() != 64 {
        return Err(format!(
            "a sha256 digest has 64 hex characters, this one has {}",
            hex.len()
        ));
    }
    if let Some(c) = hex.chars().find(|c| !matches!(c, '0'..='9' | 'a'..='f')) {
        return Err(format!("{c:?} is not a lowercase hex character"));
    }
    Ok(())
}

impl FromStr for Digest {
    type Err = StoreError;

    fn from_str(s: &str) -> Result<Digest, StoreError> {
        let bad = |reason: String| StoreError::InvalidDigest {
            input: s.to_string(),
            reason,
        };
        let (alg, hex) = s
            .split_once(':')
            .ok_or_else(|| bad("expected <algorithm>:<hex>, e.g. sha256:<64 hex>".into()))?;
        if alg != Self::SHA256 {
            return Err(bad(format!(
                "algorithm {alg:?} is not supported (only sha256)"
            )));
        }
        check_hex(hex).map_err(bad)?;
        Ok(Digest {
            hex: hex.to_string(),
        })
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex)
    }
}

impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Digest, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn parses_and_prints() {
        let d: Digest = EMPTY.parse().unwrap();
        assert_eq!(d.to_string(), EMPTY);
        assert_eq!(d.algorithm(), "sha256");
        assert_eq!(d.hex(), &EMPTY[7..]);
        assert_eq!(d.short(), "e3b0c44298fc");
        assert_eq!(Digest::of(b""), d);
    }

    #[test]
    fn serde_as_string() {
        let d: Digest = EMPTY.parse().unwrap();
        let j = serde_json::to_string(&d).unwrap();
        assert_eq!(j, format!("\"{EMPTY}\""));
        let back: Digest = serde_json::from_str(&j).unwrap();
        assert_eq!(back, d);
        let e = serde_json::from_str::<Digest>("\"sha256:abc\"").unwrap_err();
        assert!(e.to_string().contains("sha256:abc"), "{e}");
    }

    #[test]
    fn bad_digests_name_the_input_and_the_fault() {
        for (input, want) in [
            (
                "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
                "<algorithm>:<hex>",
            ),
            ("sha512:e3b0", "only sha256"),
            ("sha256:e3b0", "has 4"),
            (
                "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
                "lowercase",
            ),
            (
                "sha256:g3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
                "'g'",
            ),
        ] {
            let e = input.parse::<Digest>().unwrap_err().to_string();
            assert!(e.contains(input), "{e}");
            assert!(e.contains(want), "{e}");
        }
        assert!(Digest::from_hex("xyz").is_err());
    }
}
